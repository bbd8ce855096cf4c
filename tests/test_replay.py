"""paydbox replay: the real firmware against the bundled trace, under CPython and inside the MicroPython
VM."""
import json
import os
import subprocess
import sys

import pytest

from tools.trace.replay import ReplayError, replay_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")


def truth(path):
    import gzip

    trips, events = [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            d = json.loads(line)
            if d.get("s") == "truth" and d.get("kind") == "trip":
                trips.append(d)
            elif d.get("s") == "truth" and d.get("kind") == "event":
                events.append(d)
    return trips, events


@pytest.fixture(scope="module")
def cpython_report():
    return replay_trace(TRACE, "cpython")


def test_same_json_under_cpython_and_micropython(cpython_report):
    mp = replay_trace(TRACE, "micropython", heap="2M")
    assert json.dumps(mp, sort_keys=True) == json.dumps(cpython_report, sort_keys=True)


def test_bundled_drive_distance_and_events_match_the_truth(cpython_report):
    true_trips, true_events = truth(TRACE)
    rep = cpython_report
    assert len(rep["trips"]) == len(true_trips) == 1
    trip = rep["trips"][0]
    true_m = true_trips[0]["dist_m"]
    assert abs(trip["distance_m"] - true_m) / true_m < 0.005, (trip["distance_m"], true_m)
    assert abs(rep["odometer_m"] - true_m) / true_m < 0.005
    got = sorted((e["type"], e["t"]) for e in trip["events"])
    assert [g[0] for g in got] == sorted(e["type"] for e in true_events)
    for e in true_events:  # each detected within its true interval (+-2 s)
        assert any(t == e["type"] and e["start"] - 2 <= s <= e["end"] + 2 for t, s in got), e
    assert 0 <= trip["score"] <= 100 and trip["coach"] and trip["coach_fr"]
    assert rep["records"]["count"] > rep["records"]["fixes"] > 300
    assert rep["calibration"]["calib_state"] == "calibrated"


def test_cli_json_and_errors(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "paydbox")
    p = subprocess.run([exe, "replay", TRACE, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    for key in ("trips", "odometer_m", "records", "gnss"):
        assert key in rep
    assert {"start_t", "end_t", "distance_m", "duration_s", "events", "score",
            "coach"} <= set(rep["trips"][0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something-else", "version": 1}\n')
    p = subprocess.run([exe, "replay", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr.startswith("paydbox: error:") and len(p.stderr.strip().splitlines()) == 1
    assert "format" in p.stderr
    with pytest.raises(ReplayError):
        replay_trace(str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize("privacy", ["no_positions", "rounded"])
def test_privacy_modes_keep_billing_and_drop_or_coarsen_positions(cpython_report, privacy, tmp_path):
    """The odometer and trips are the same whatever the privacy mode; what is stored is not."""

    from firmware import decoder
    from tools.trace import replay as rp

    raw_dir = tmp_path / "flash"
    rep = replay_trace(TRACE, "cpython", config={"privacy": privacy})
    assert rep["odometer_m"] == cpython_report["odometer_m"]
    assert [t["distance_m"] for t in rep["trips"]] == [t["distance_m"] for t in cpython_report["trips"]]
    if privacy == "no_positions":
        assert rep["records"]["bytes"] < cpython_report["records"]["bytes"] / 2
    # decode what the box stored: run the firmware on a flash directory we keep
    raw_dir.mkdir()
    from firmware import replay_main

    replay_main.run(rp._plain_trace(TRACE, str(tmp_path)), str(raw_dir), {"privacy": privacy})
    from firmware.store import Store

    st = Store(str(raw_dir / "store"), 1 << 20, 32 * 1024)
    recs = [r for b in st.peek(10000) for r in decoder.decode_block(b[3])[1]]
    pos = [r for r in recs if r["type"] == "pos"]
    if privacy == "no_positions":
        assert pos == []
        assert all(r.get("lat_e7", 0) == 0 for r in recs)
    else:
        assert pos and all(r["lat_e7"] % 100000 == 0 and r["lon_e7"] % 100000 == 0 for r in pos)
    assert any(r["type"] == "trip_end" for r in recs)
    # dropped positions give their seq back: what is stored is contiguous, so a consumer's gap is a real loss
    seqs = sorted(r["seq"] for r in recs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_speed_course_steps_shrink_records_and_keep_positions(cpython_report, tmp_path):
    """pos_speed_step_mmps / pos_course_step_cdeg: speed and course stored in steps, positions and time
    untouched (same as the lossless run), billing unchanged, fewer bytes."""
    from firmware import decoder, replay_main
    from firmware.store import Store
    from tools.trace import replay as rp

    cfg = {"pos_speed_step_mmps": 100, "pos_course_step_cdeg": 100}
    rep = replay_trace(TRACE, "cpython", config=cfg)
    assert rep["odometer_m"] == cpython_report["odometer_m"]
    assert rep["records"]["bytes"] < cpython_report["records"]["bytes"] * 0.85

    def stored(config, name):
        d = tmp_path / name
        d.mkdir()
        replay_main.run(rp._plain_trace(TRACE, str(tmp_path)), str(d), config)
        st = Store(str(d / "store"), 1 << 20, 32 * 1024)
        return [r for b in st.peek(10000) for r in decoder.decode_block(b[3])[1] if r["type"] == "pos"]

    exact = stored(None, "exact")
    stepped = stored(cfg, "stepped")
    assert len(exact) == len(stepped) > 100
    for a, b in zip(exact, stepped):
        assert (a["lat_e7"], a["lon_e7"], a["t_ms"], a["utc_s"]) == (b["lat_e7"], b["lon_e7"], b["t_ms"],
                                                                     b["utc_s"])
        assert b["speed_mmps"] % 100 == 0 and abs(b["speed_mmps"] - a["speed_mmps"]) <= 50
        assert b["course_cdeg"] % 100 == 0
        assert min(abs(b["course_cdeg"] - a["course_cdeg"]),
                   36000 - abs(b["course_cdeg"] - a["course_cdeg"])) <= 50
