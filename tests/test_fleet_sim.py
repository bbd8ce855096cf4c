"""paydbox fleet-sim: a small fleet against a real Mosquitto with the real consumer processes."""
import json

from firmware import decoder
from mosquitto_fixture import Broker, mosquitto  # noqa: F401  (fixture imported by name)
from postgres_fixture import pg_url, postgres_server  # noqa: F401
from tools.cli import main as cli
from tools.consumer import db as consumer_db
from tools.consumer import fleet_sim


def test_synthetic_drive_is_realistic_and_encodes():
    recs = fleet_sim.synth_records(700, seed=4)
    assert 700 <= len(recs) <= 710
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    types = [r["type"] for r in recs]
    assert types[0] == "status" and types.count("trip_start") == types.count("trip_end") >= 1
    pos = [r for r in recs if r["type"] == "pos"]
    assert all(0 <= p["speed_mmps"] < 45000 for p in pos)  # < 162 km/h
    assert all(b["t_ms"] - a["t_ms"] == 1000 for a, b in zip(pos, pos[1:]) if b["seq"] == a["seq"] + 1)
    blocks = fleet_sim.encode_blocks("sim-1", 1, recs, 512)
    assert all(len(b) <= 512 for _, _, b in blocks)
    back = [r for _, _, b in blocks for r in decoder.decode_block(b)[1]]
    assert [r["seq"] for r in back] == [r["seq"] for r in recs]
    assert back[5]["lat_e7"] == recs[5]["lat_e7"]


def every_record_once(rc, capsys):
    """The fleet-sim report of 5 boxes x 300 records: every record published stored once, every injected
    duplicate dropped, nothing lost or damaged. Returns the report."""
    r = json.loads(capsys.readouterr().out)
    assert rc == 0, r
    assert r["boxes"] == 5 and r["records_published"] >= 1500
    assert r["records_stored"] == r["records_published"] and r["records_lost"] == 0
    assert r["duplicate_records_injected"] > 0
    # the consumer drops every injected duplicate, plus the copies of blocks a box published again
    # because its end-to-end ack came late (a loaded machine): nothing more, nothing less
    assert r["duplicate_records_injected"] <= r["duplicate_records_dropped"]
    assert r["duplicate_records_dropped"] <= r["duplicate_records_injected"] + r["records_resent"]
    assert r["damaged_blocks"] == 0 and r["agent_errors"] == []
    return r


def test_fleet_sim_five_boxes(mosquitto, capsys):
    url = "mqtt://%s:%d" % (mosquitto.host, mosquitto.port)
    rc = cli(["fleet-sim", "--broker", url, "--boxes", "5", "--records-per-box", "300", "--dup-every", "3",
              "--json"])
    r = every_record_once(rc, capsys)
    assert 0 < r["lag_p50_ms"] <= r["lag_p95_ms"] <= r["lag_max_ms"] < 30000
    assert r["ingest_records_per_s"] > 50
    assert len(r["per_consumer"]) == 1 and r["per_consumer"][0]["records"] == r["records_stored"]


def test_fleet_sim_two_consumers_split(mosquitto, capsys):
    url = "mqtt://%s:%d" % (mosquitto.host, mosquitto.port)
    rc = cli(["fleet-sim", "--broker", url, "--boxes", "4", "--records-per-box", "600", "--consumers", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "lost 0" in out and "p95" in out
    lines = [x for x in out.splitlines() if x.strip().startswith("consumer ")]
    assert len(lines) == 2 and all(" 0 records" not in x for x in lines), out


def test_a_consumer_killed_mid_run_loses_nothing_and_repeated_runs_agree(mosquitto, capsys):
    """A share-group member SIGKILLed while its share is queued: the boxes' end-to-end contract gets every
    record stored by the survivor; two runs in a row report the same figures."""
    url = "mqtt://%s:%d" % (mosquitto.host, mosquitto.port)
    rc = cli(["fleet-sim", "--broker", url, "--boxes", "6", "--records-per-box", "900", "--consumers", "2",
              "--duration", "4", "--kill-consumer-at", "1.5", "--e2e-timeout", "1", "--repeat", "2",
              "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["runs"] == 2 and out["runs_agree"] and out["lost_per_run"] == [0, 0]
    for r in out["results"]:
        assert r["consumers_killed"] == 1 and r["records_lost"] == 0 and r["blocks_without_e2e_ack"] == 0
        assert r["records_stored"] == r["records_published"] >= 5400


def test_fleet_sim_two_consumers_on_postgresql(mosquitto, pg_url, capsys):
    """The fleet load check against a real PostgreSQL: two consumers of one share group write one database;
    every record published is stored once, injected duplicates are dropped, nothing is lost."""
    url = "mqtt://%s:%d" % (mosquitto.host, mosquitto.port)
    rc = cli(["fleet-sim", "--broker", url, "--db", pg_url, "--boxes", "5", "--records-per-box", "300",
              "--dup-every", "3", "--consumers", "2", "--json"])
    r = every_record_once(rc, capsys)
    assert sum(c["records"] for c in r["per_consumer"]) == r["records_stored"]
    db = consumer_db.connect(pg_url, create=False)
    try:
        assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == r["records_published"]
        assert consumer_db.gaps(db) == []
    finally:
        db.close()
