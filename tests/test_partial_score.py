"""End to end through the real firmware: a trip the box cannot calibrate for (commit level out of reach) gets
its harsh acceleration and braking from the GNSS speed (GNSS-only), its harsh bend as `unclassified`, and a
partial score with the reason - never a clean 100. Truth: the simulator's labels."""
from tools.sim.engine import Sim
from tools.sim.route import Piece as P
from tools.trace.replay import replay_trace

QUARTER = 1.5707963267948966


def test_uncalibrated_trip_is_partially_scored(tmp_path):
    path = str(tmp_path / "s.jsonl")
    sim = Sim(path, "short", 5)
    sim.run([("park", 10), ("start",), ("idle", 5),
             ("drive", [P(70, 0, 60, a=3.6, jerk=9.0), P(30 * QUARTER, 30, 60, alat=4.5),
                        P(40, 0, 60, b=4.5, jerk=9.0, stop=5)], "aggressive"),
             ("off",), ("park", 240)])
    clear = sorted(e["type"] for e in sim.events if not e.get("marginal"))
    assert clear == ["harsh_accel", "harsh_brake", "harsh_corner_left"], sim.events
    rep = replay_trace(path, config={"calib_min_quality": 101})   # a box that never commits
    assert rep["calibration"]["calib_state"] != "calibrated"
    (t,) = rep["trips"]
    assert sorted(e["type"] for e in t["events"]) == ["harsh_accel", "harsh_brake", "unclassified"]
    assert t["counts"]["gnss_only"] == 2 and t["counts"]["unclassified"] == 1
    assert t["score_note"] == "partial_unclassified+gnss_only"
    assert t["score"] < 100
    assert any("could not be classified" in c for c in t["coach"])
    # the same drive on a box that may calibrate: classified by the accelerometer, a complete score
    full = replay_trace(path)["trips"][0]
    assert sorted(e["type"] for e in full["events"]) == clear and full["score_note"] == ""
