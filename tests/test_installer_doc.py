"""docs/installer.md's settings table is generated from the config schema (tools/installer/settings_doc.py,
firmware/schema.py SCHEMA): the doc must be what the generator writes today, and the table must follow the
schema (a key, a default, a range or a comment changed there changes the doc)."""
import os

import pytest

from firmware import schema
from tools.installer import settings_doc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_installer_settings_table_is_up_to_date():
    with open(os.path.join(ROOT, "docs", "installer.md"), encoding="utf-8") as f:
        text = f.read()
    assert settings_doc.render(text) == text, \
        "docs/installer.md: run `python -m tools.installer.settings_doc`"


def test_table_has_every_key_with_the_schema_default(monkeypatch):
    rows = [r for r in settings_doc.table().splitlines()[2:]]
    assert [r.split("|")[1].strip().strip("`") for r in rows] == sorted(schema.SCHEMA)
    row = {r.split("|")[1].strip().strip("`"): [c.strip() for c in r.split("|")[2:5]] for r in rows}
    assert row["crash_g"] == ["3.00", "1.50..16.00", "crash detection threshold, g"]
    assert row["accel_rate_hz"][:2] == ["100", "50, 100, 200, 400"]
    assert row["fleet_id"][0] == "(empty)" and row["installer_pin"][0] == "unset"
    # a default changed in the schema changes the doc
    monkeypatch.setitem(schema.SCHEMA, "trip_end_s", ("int", 240, (30, 3600)))
    assert "| `trip_end_s` | 240 | 30..3600 |" in settings_doc.table()
    # a key without its comment in the schema is an error, not a blank cell
    monkeypatch.setitem(schema.SCHEMA, "new_key_s", ("int", 1, (0, 9)))
    with pytest.raises(ValueError, match="new_key_s"):
        settings_doc.table()
