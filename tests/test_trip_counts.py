"""trip_end counts and score agree with the trip's own event records, also when the trip ends while
motion still holds events (power cut right after a manoeuvre: Box.shutdown -> trip end -> motion
flush). Truth: the stored event records themselves (decoded from the box's flash), and the trace's
ground-truth events for where to cut."""
import gzip
import json
import os

import pytest

from firmware import decoder, records
from firmware.app import Box
from firmware.config import defaults
from firmware.score import score
from firmware.store import Store
from hw.replay import ReplaySession

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMUTE = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")
COUNT_FIELDS = [f for f, _ in records.fields("trip_end") if f.startswith("n_")]


def plain(path, tmp_path):
    out = tmp_path / "trace.jsonl"
    with gzip.open(path, "rb") as f:
        out.write_bytes(f.read())
    return str(out)


def truth_events(path):
    with gzip.open(path, "rt") as f:
        return [d for d in map(json.loads, f) if d.get("s") == "truth" and d.get("kind") == "event"]


def replay_until(trace, fs_root, cut_ms=None):
    """The replay loop of firmware/replay_main.py, with the power cut at cut_ms (Box.shutdown)."""
    sess = ReplaySession(trace)
    box = Box(sess.clock, sess.gnss_uart, sess.i2c, sess.power, fs_root, defaults())
    t = 0
    while not sess.done and (cut_ms is None or t < cut_ms):
        t += 100
        sess.advance(t)
        box.step()
    box.shutdown()
    return box


def stored_records(fs_root):
    st = Store(os.path.join(fs_root, "store"), 1024 * 1024, 32 * 1024)
    recs = []
    for _, _, _, blk in st.peek(1 << 20):
        recs.extend(decoder.decode_block(blk)[1])
    return sorted(recs, key=lambda r: r["seq"])


def check_trips(recs):
    """For every trip_end: its counts = its event records (seq between its trip_start and itself),
    its score = the score of those counts, and no event inside the trip's time lies outside it."""
    ends = [r for r in recs if r["type"] == "trip_end"]
    assert ends, "no trip ended"
    evs = [r for r in recs if r["type"] in ("event", "crash")]
    for te in ends:
        inside = [e for e in evs if te["trip"] < e["seq"] < te["seq"]]
        tally = {}
        for e in inside:
            kind = e["kind"] if e["type"] == "event" else "crash"
            if kind.endswith("_gnss"):   # GNSS-only harsh accel/brake: counted as such, and as GNSS-only
                tally["n_gnss_only"] = tally.get("n_gnss_only", 0) + 1
                kind = kind[:-5]
            k = "n_" + kind
            tally[k] = tally.get(k, 0) + 1
        for f in COUNT_FIELDS:
            # (optional trip_end fields are absent when 0: docs/record-format.md)
            assert te.get(f, 0) == tally.get(f, 0), "trip %d: %s = %d, its event records say %d" % (
                te["trip"], f, te.get(f, 0), tally.get(f, 0))
        summary = dict(te)
        summary.pop("events", None)
        assert te["score"] == score(summary)
        late = [e for e in evs if e["seq"] > te["seq"] and te["start_t_ms"] <= e["t_ms"] <= te["end_t_ms"]]
        assert late == [], "events of trip %d stored after its trip_end: %r" % (te["trip"], late)
    return ends


def test_whole_commute_counts_match_event_records(tmp_path):
    fs = tmp_path / "flash"
    fs.mkdir()
    replay_until(plain(COMMUTE, tmp_path), str(fs))
    ends = check_trips(stored_records(str(fs)))
    assert sum(te["n_harsh_accel"] + te["n_harsh_brake"] + te["n_harsh_corner_left"] for te in ends) == 3


@pytest.mark.parametrize("which", [0, 1, 2])
def test_power_cut_right_after_an_event_counts_it(tmp_path, which):
    """Cut 0.5 s after each ground-truth harsh event ends: the event is still in motion's queue (its
    speed check waits for the next fix) when the trip closes."""
    ev = truth_events(COMMUTE)[which]
    fs = tmp_path / "flash"
    fs.mkdir()
    replay_until(plain(COMMUTE, tmp_path), str(fs), cut_ms=int((ev["end"] + 0.5) * 1000))
    recs = stored_records(str(fs))
    ends = check_trips(recs)
    assert (ends[-1]["n_"
                     + ev["type"]] == 1), "the %s just before the cut is missing from trip_end" % ev["type"]


def test_replay_json_counts_next_to_events():
    from tools.trace.replay import replay_trace

    rep = replay_trace(COMMUTE)
    for t in rep["trips"]:
        assert set(t["counts"]) == {f[2:] for f in COUNT_FIELDS}
        for kind, n in t["counts"].items():
            assert n == len([e for e in t["events"] if e["type"] == kind]), (kind, t)
    assert rep["trips"][0]["counts"]["harsh_brake"] == 1


def test_trip_end_bridged_m_is_the_distance_driven_through_the_outages(tmp_path):
    """trip_end.bridged_m: the part of the trip's distance the odometer bridged over GNSS outages (it
    was always 0). Truth: the simulator's tunnels (gnss_outage) and its cumulative distance."""
    from tools.sim.engine import simulate
    from tools.trace.replay import replay_trace

    path = str(tmp_path / "tunnel.jsonl.gz")
    simulate(path, "tunnel", seed=1)
    pos, outages = [], []
    with gzip.open(path, "rt") as f:
        for d in map(json.loads, f):
            if d.get("s") == "truth" and d.get("kind") == "pos":
                pos.append((d["t"], d["dist_m"]))
            elif d.get("s") == "truth" and d.get("kind") == "gnss_outage":
                outages.append((d["start"], d["end"]))

    def dist_at(t):
        return [m for s, m in pos if s <= t + 1e-6][-1]

    # from the last fix before each outage (1 Hz) to the first after it
    truth_m = sum(dist_at(end) - dist_at(start - 1) for start, end in outages)
    assert len(outages) == 2 and truth_m > 1000
    (trip,) = replay_trace(path)["trips"]
    assert abs(trip["bridged_m"] - truth_m) < 0.02 * truth_m, (trip["bridged_m"], truth_m)
