"""The board-facing firmware type-checks against the real MicroPython board API (micropython-esp32-stubs,
installed by the Makefile into .venv/stubs/esp32), so a wrong `machine` call is caught before a box is
flashed."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUBS = os.path.join(os.path.dirname(sys.executable), "..", "stubs", "esp32")
BOARD_FILES = ["firmware/main.py", "firmware/app.py", "firmware/trip.py", "hw/compat.py"]


def mypy(files, cwd):
    if not os.path.isdir(STUBS):
        pytest.fail("micropython-esp32-stubs not installed in .venv/stubs/esp32: `make setup` installs them")
    env = dict(os.environ, MYPYPATH=os.path.abspath(STUBS))
    # --check-untyped-defs: the firmware has no annotations, and without it mypy checks no call inside a
    # function body (a wrong `machine.WDTT()` in run() passed). What stays on: every call and attribute
    # of the board API (attr-defined, call-arg, arg-type, name-defined ...). What is off: the noise of an
    # unannotated dynamic style (dicts that start as None, mixed-type config dicts), which says nothing
    # about the board API: index, union-attr, operator.
    p = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                        "--no-site-packages", "--no-error-summary", "--check-untyped-defs",
                        "--disable-error-code=misc", "--disable-error-code=index",
                        "--disable-error-code=union-attr", "--disable-error-code=operator"] + files,
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    # the stubs themselves have a few errors of their own: keep only ours
    return [l for l in p.stdout.splitlines() if ": error:" in l and "stubs/esp32" not in l]


def test_firmware_typechecks_against_board_stubs():
    errors = mypy(BOARD_FILES, ROOT)
    assert errors == [], "\n".join(errors)


def test_stub_check_catches_a_wrong_machine_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import machine\npin = machine.Pin(34, machine.Pin.IN)\npin.valu()\n")
    errors = mypy([str(bad)], str(tmp_path))
    assert any("valu" in e for e in errors), errors


def test_stub_check_sees_calls_inside_functions(tmp_path):
    """The real entry point with one wrong board call inside run(): the check must name it."""
    for rel in BOARD_FILES + ["firmware/__init__.py", "hw/__init__.py"]:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(open(os.path.join(ROOT, rel)).read())
    main = tmp_path / "firmware" / "main.py"
    src = main.read_text()
    assert "machine.WDT(" in src
    main.write_text(src.replace("machine.WDT(", "machine.WDTT(", 1))
    errors = mypy(["firmware/main.py"], str(tmp_path))
    assert any("WDTT" in e and "firmware/main.py" in e for e in errors), errors
