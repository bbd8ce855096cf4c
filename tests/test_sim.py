"""The drive simulator: determinism, NMEA validity, truth consistency, accelerometer physics."""
import math
import os
import random

import pynmea2
import pytest

from hw.trace_format import read_trace
from tools.sim import nmea_gen
from tools.sim.engine import Sim, random_rotation, simulate
from tools.sim.route import Frame


def _trace(tmp_path, scenario, seed=3, **kw):
    path = str(tmp_path / ("%s-%d.jsonl.gz" % (scenario, seed)))
    summary = simulate(path, scenario, seed=seed, **kw)
    header, lines = read_trace(path)
    return path, summary, header, lines


def _sentences(lines):
    for ln in lines:
        if ln["s"] == "gnss":
            for s in ln["d"].split("\r\n"):
                if s:
                    yield ln["t"], s


def test_deterministic_for_a_seed(tmp_path):
    a = str(tmp_path / "a.jsonl.gz")
    b = str(tmp_path / "b.jsonl.gz")
    c = str(tmp_path / "c.jsonl.gz")
    simulate(a, "commute", seed=11, duration_s=90)
    simulate(b, "commute", seed=11, duration_s=90)
    simulate(c, "commute", seed=12, duration_s=90)
    with open(a, "rb") as f1, open(b, "rb") as f2, open(c, "rb") as f3:
        da, db, dc = f1.read(), f2.read(), f3.read()
    assert da == db
    assert da != dc


def test_header_and_order(tmp_path):
    _, summary, header, lines = _trace(tmp_path, "crash")
    assert header["format"] == "paydbox-trace" and header["version"] == 1
    assert header["truth"] is True and header["accel"]["rate_hz"] == 100
    assert header["duration_s"] == pytest.approx(summary["duration_s"])
    ts = [ln["t"] for ln in lines]
    assert ts == sorted(ts)
    assert {ln["s"] for ln in lines} >= {"gnss", "accel", "power", "truth"}
    crash = [e for e in summary["events"] if e["type"] == "crash"]
    assert len(crash) == 1
    assert 20 * 9.81 <= crash[0]["peak_mps2"] <= 40 * 9.81
    assert 0.06 <= crash[0]["end"] - crash[0]["start"] <= 0.13


def test_nmea_checksums_valid_and_parse(tmp_path):
    # tunnel: fixes and no-fix epochs with empty fields
    _, summary, header, lines = _trace(tmp_path, "tunnel", seed=5, duration_s=200)
    n = 0
    kinds = set()
    nofix = 0
    for t, s in _sentences(lines):
        assert s.startswith("$") and s[-3] == "*"
        assert int(s[-2:], 16) == nmea_gen.checksum(s[1:-3])
        msg = pynmea2.parse(s, check=True)
        kinds.add(msg.sentence_type)
        if msg.sentence_type == "RMC" and msg.status == "V":
            nofix += 1
            assert msg.latitude == 0.0 or msg.lat == ""
        n += 1
    assert kinds == {"RMC", "GGA", "GSA", "VTG"}
    assert n > 700
    assert nofix > 30   # the 1.2 km tunnel
    assert any(o["reason"] == "tunnel" for o in summary["outages"])


def test_gnss_position_error_is_realistic(tmp_path):
    _, _, header, lines = _trace(tmp_path, "commute", seed=4, duration_s=200)
    fr = Frame(45.76, 4.84)
    truth = {int(round(ln["t"])): ln for ln in lines if ln["s"] == "truth" and ln.get("kind") == "pos"}
    errs = []
    for t, s in _sentences(lines):
        m = pynmea2.parse(s)
        if m.sentence_type == "GGA" and m.gps_qual and m.latitude != 0.0:
            tr = truth.get(int(round(t - 0.05)))
            e1, n1 = fr.to_en(m.latitude, m.longitude)
            e0, n0 = fr.to_en(tr["lat"], tr["lon"])
            errs.append(math.hypot(e1 - e0, n1 - n0))
            assert 0.6 <= float(m.horizontal_dil) <= 9.9
            assert 4 <= int(m.num_sats) <= 14
    errs.sort()
    assert len(errs) > 150
    assert 0.3 < errs[len(errs) // 2] < 6.0    # median of a few metres, not zero, not wild


def test_truth_distance_matches_positions(tmp_path):
    _, summary, _, lines = _trace(tmp_path, "commute", seed=2)
    fr = Frame(45.76, 4.84)
    pos = [ln for ln in lines if ln["s"] == "truth" and ln.get("kind") == "pos"]
    chord = 0.0
    for a, b in zip(pos, pos[1:]):
        ea, na = fr.to_en(a["lat"], a["lon"])
        eb, nb = fr.to_en(b["lat"], b["lon"])
        chord += math.hypot(eb - ea, nb - na)
    total = pos[-1]["dist_m"]
    assert total > 2000
    # 1 Hz chords are slightly shorter than the arcs, never longer
    assert total * 0.995 <= chord <= total * 1.0001
    assert summary["trips"][0]["dist_m"] == pytest.approx(total, rel=1e-3)
    kinds = sorted(e["type"] for e in summary["events"] if not e.get("marginal"))
    assert kinds == ["harsh_accel", "harsh_brake", "harsh_corner_left"]
    thr = {"harsh_accel": 2.5, "harsh_brake": 2.7, "harsh_corner_left": 3.4}
    for e in summary["events"]:
        if not e.get("marginal"):
            assert e["end"] - e["start"] >= 0.7
            assert abs(e["peak_mps2"]) >= 1.1 * thr[e["type"]]


def test_harsh_labels_follow_the_true_motion():
    """Truth labels come from the vehicle's true acceleration: a hard launch is labelled, normal driving
    is not, and borderline cases are flagged marginal."""
    from tools.sim.route import Piece as P
    sim = Sim(None, "t", 1)
    sim.run([("start",), ("drive", [P(400, 0, 60, stop=5)], "normal"),
             ("drive", [P(400, 0, 60, a=3.6, jerk=8.0), P(300, 0, 60, b=4.0, jerk=9.0)], "normal")])
    clear = [e["type"] for e in sim.events if not e.get("marginal")]
    assert clear == ["harsh_accel", "harsh_brake"]
    assert sim.events[0]["start"] > 400 / 16.7          # during the second drive, not the first
    sim = Sim(None, "t", 1)
    sim.run([("start",), ("drive", [P(400, 0, 60, a=2.6, jerk=8.0)], "normal")])   # just above 2.5 briefly
    assert all(e.get("marginal") for e in sim.events)


def test_rotation_is_proper_and_uniform():
    rng = random.Random(5)
    mean = [[0.0] * 3 for _ in range(3)]
    n = 3000
    for _ in range(n):
        R = random_rotation(rng)
        for i in range(3):
            for j in range(3):
                dot = sum(R[i][k] * R[j][k] for k in range(3))
                assert abs(dot - (1.0 if i == j else 0.0)) < 1e-9
                mean[i][j] += R[i][j] / n
        det = (R[0][0] * (R[1][1] * R[2][2] - R[1][2] * R[2][1])
               - R[0][1] * (R[1][0] * R[2][2] - R[1][2] * R[2][0])
               + R[0][2] * (R[1][0] * R[2][1] - R[1][1] * R[2][0]))
        assert abs(det - 1.0) < 1e-9
    # uniform over SO(3): E[R] = 0 (an upright-only mount would give mean[2][2] near 1)
    assert max(abs(c) for row in mean for c in row) < 0.05


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_accel_is_one_g_when_still_in_any_rotation(seed):
    sim = Sim(None, "parked_overnight", seed)
    sim.run([("park", 20.0)])
    assert sim.n == 2000
    # rerun and collect samples through a tiny writer stub
    got = []

    class W:
        def add(self, t, s, **f):
            if s == "accel":
                got.extend(f["mg"])

        def gnss(self, t, d):
            pass

        def close(self, header_update=None):
            pass

    sim = Sim(None, "parked_overnight", seed)
    sim.w = W()
    sim.run([("park", 20.0)])
    mx = sum(s[0] for s in got) / len(got)
    my = sum(s[1] for s in got) / len(got)
    mz = sum(s[2] for s in got) / len(got)
    assert abs(math.sqrt(mx * mx + my * my + mz * mz) - 1000.0) < 75.0   # bias is within +-40 mg per axis
    # exactly gravity rotated into the box frame plus the bias
    R = sim.R
    for i, m in enumerate((mx, my, mz)):
        assert abs(m - (R[2][i] * 1000.0 + sim.bias[i])) < 2.0
    # noise ~5 mg rms
    sd = math.sqrt(sum((s[0] - mx) ** 2 for s in got) / len(got))
    assert 3.0 < sd < 8.0


def test_power_crank_and_unplug(tmp_path):
    _, summary, _, lines = _trace(tmp_path, "unplugged", seed=2)
    pw = [ln for ln in lines if ln["s"] == "power"]
    assert any(p["ign"] == 1 and p["mv"] < 10000 and p["mv"] > 8000 for p in pw)     # crank dip
    assert any(14000 <= p["mv"] <= 14400 for p in pw)
    assert any(12200 <= p["mv"] <= 12600 and p["ign"] == 0 for p in pw)
    cuts = [p["t"] for p in pw if p["mv"] == 0]
    assert cuts
    out = [o for o in summary["outages"] if o["reason"] == "unplugged"][0]
    back = min(p["t"] for p in pw if p["t"] > cuts[0] and p["mv"] > 0)
    assert back - cuts[0] > 30
    silent = [ln for ln in lines if ln["s"] in ("gnss", "accel") and cuts[0] + 0.05 < ln["t"] < back - 0.05]
    assert silent == []
    assert out["start"] <= cuts[0] + 0.01 and out["end"] > back


def test_cold_start_no_fix_then_poor(tmp_path):
    _, summary, _, lines = _trace(tmp_path, "cold_start", seed=3)
    out = [o for o in summary["outages"] if o["reason"] == "cold_start"][0]
    assert out["start"] == 0.0 and 30 <= out["end"] <= 61
    first_fix = None
    for t, s in _sentences(lines):
        m = pynmea2.parse(s)
        if m.sentence_type == "GGA" and m.gps_qual:
            first_fix = (t, float(m.horizontal_dil))
            break
    assert first_fix[0] >= 30
    assert first_fix[1] > 2.5   # poor first fix


def test_remount_changes_rotation(tmp_path):
    _, summary, _, lines = _trace(tmp_path, "remount", seed=1)
    mounts = [ln for ln in lines if ln["s"] == "truth" and ln.get("kind") == "mount"]
    assert len(mounts) == 2 and mounts[0]["R"] != mounts[1]["R"]
    assert mounts[1]["t"] > 60


def test_unknown_scenario_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="scenario: unknown"):
        simulate(str(tmp_path / "x.jsonl"), "nope", seed=1)
    with pytest.raises(ValueError, match="gnss_hz"):
        Sim(None, "commute", 1, gnss_hz=3)


def test_committed_demo_trace_matches_the_documented_command(tmp_path):
    committed = os.path.join(os.path.dirname(__file__), "traces", "commute.jsonl.gz")
    assert os.path.exists(committed), "the bundled demo trace is missing"
    fresh = str(tmp_path / "commute.jsonl.gz")
    simulate(fresh, "commute", seed=1)
    import gzip
    with gzip.open(committed, "rb") as f1, gzip.open(fresh, "rb") as f2:
        assert f1.read() == f2.read(), ("regenerate: paydbox simulate --scenario commute --seed 1 -o "
                                        "tests/traces/commute.jsonl.gz")


EXPECT = {
    # scenario: (check on the truth summary)
    "commute": lambda r: _clear(r) == {"harsh_accel": 1, "harsh_brake": 1, "harsh_corner_left": 1},
    "highway": lambda r: _clear(r) == {"overspeed": 1} and r["dist_m"] > 7000,
    "urban_canyon": lambda r: _clear(r) == {} and r["dist_m"] > 1500,
    "tunnel": lambda r: [o["reason"] for o in r["outages"]] == ["tunnel", "tunnel"],
    "parked_overnight": lambda r: r["dist_m"] == 0.0 and r["trips"] == [] and r["duration_s"] >= 1800,
    "aggressive": lambda r: sum(_clear(r).values()) >= 20 and _clear(r).get("harsh_brake", 0) >= 5,
    "calm": lambda r: _clear(r) == {"idle": 1} and r["dist_m"] > 4000,
    "crash": lambda r: _clear(r) == {"crash": 1} and len(r["trips"]) == 1,
    "crash_slow": lambda r: _clear(r) == {"crash": 1} and len(r["trips"]) == 1,
    "crash_tunnel": lambda r: _clear(r) == {"crash": 1} and [o["reason"] for o in r["outages"]] == ["tunnel"],
    "shocks": lambda r: _clear(r) == {"shock": 5} and all(e["peak_mps2"] >= 3 * 9.80665 for e in r["events"]),
    "towing": lambda r: _clear(r) == {"towing": 1} and r["trips"] == [] and r["dist_m"] > 2000,
    "unplugged": lambda r: [o["reason"] for o in r["outages"]] == ["unplugged"],
    "cold_start": lambda r: [o["reason"] for o in r["outages"]] == ["cold_start"],
    "remount": lambda r: _clear(r).get("harsh_brake", 0) >= 2,
    "brake_corner": lambda r: _overlapping(r, "harsh_brake", "harsh_corner") >= 3
    and _overlapping(r, "harsh_accel", "harsh_corner") >= 1,
    # a braked bend within 30 s of the start of the trip: before any calibration commits
    "brake_corner_early": lambda r: _overlapping(r, "harsh_brake", "harsh_corner",
                                                 r["trips"][0]["start"] + 30) >= 1
    and _overlapping(r, "harsh_brake", "harsh_corner") >= 2
    and _overlapping(r, "harsh_accel", "harsh_corner") >= 2,
}


def _overlapping(r, a, b, before=None):
    """Clear truth events of type a that overlap in time a (clear or marginal) event whose type starts with
    b (and start before `before`, trace seconds)."""
    n = 0
    for e in r["events"]:
        if e["type"] == a and not e.get("marginal") and (before is None or e["start"] < before):
            if any(f["type"].startswith(b) and f["start"] < e["end"] and e["start"] < f["end"]
                   for f in r["events"]):
                n += 1
    return n


def _clear(r):
    c = {}
    for e in r["events"]:
        if not e.get("marginal"):
            c[e["type"]] = c.get(e["type"], 0) + 1
    return c


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_every_scenario_has_its_truth(name):
    from tools.sim.scenarios import SCENARIOS
    assert set(EXPECT) == set(SCENARIOS)
    r = simulate(None, name, seed=9)
    assert EXPECT[name](r), (name, _clear(r), r["outages"], r["trips"])
    if name != "parked_overnight":
        assert 120 < r["duration_s"] < 1020     # CI-sized (<= 17 min)


def test_gnss_lag_shifts_only_the_gnss_lines(tmp_path):
    # same seed: the truth and the samples are identical, every GNSS line is exactly 2 s later
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    simulate(a, "commute", seed=4, duration_s=60)
    simulate(b, "commute", seed=4, duration_s=60, gnss_lag_s=2.0)
    ha, la = read_trace(a)
    hb, lb = read_trace(b)
    assert hb["sim"]["gnss_lag_s"] == 2.0 and "gnss_lag_s" not in ha["sim"]
    ga = [(ln["t"], ln["d"]) for ln in la if ln["s"] == "gnss"]
    gb = [(ln["t"], ln["d"]) for ln in lb if ln["s"] == "gnss"]
    assert len(gb) == len(ga) - 2 or len(gb) == len(ga)   # the last 2 s of epochs may fall past the end
    for (ta, da), (tb, db) in zip(ga, gb):
        assert abs(tb - ta - 2.0) < 1e-6 and da == db
    others = lambda ls: [ln for ln in ls if ln["s"] in ("accel", "truth")]
    assert others(la) == others(lb)


@pytest.mark.parametrize("sensor", ["10hz", "phone"])
def test_sensor_classes(sensor, tmp_path):
    from tools.sim.engine import SENSORS
    p = str(tmp_path / "s.jsonl")
    simulate(p, "commute", seed=6, duration_s=120, sensor=sensor)
    h, lines = read_trace(p)
    acc = [ln for ln in lines if ln["s"] == "accel"]
    want_hz = 10 if sensor == "10hz" else 100
    assert h["accel"]["rate_hz"] == want_hz and all(ln["rate"] == want_hz for ln in acc)
    samples = [s for ln in acc for s in ln["mg"]]
    assert abs(len(samples) - 120 * want_hz) <= want_hz
    if sensor == "phone":
        # interpolated from 10 Hz: within each 100 ms the second differences vanish (straight segments)
        x = [s[0] for s in samples[:2000]]
        kinks = sum(1 for i in range(1, len(x) - 1) if abs(x[i + 1] - 2 * x[i] + x[i - 1]) > 2)
        assert kinks <= len(x) // 10 + 5
    # bias drift: parked for 10 minutes, the mean reading moves (lis3dh: it does not)
    means = {}
    for cls in ("lis3dh", sensor):
        q = str(tmp_path / ("p-%s.jsonl" % cls))
        simulate(q, "parked_overnight", seed=6, duration_s=600, sensor=cls)
        smp = [s for ln in read_trace(q)[1] if ln["s"] == "accel" for s in ln["mg"]]
        n = len(smp) // 10
        first = [sum(s[i] for s in smp[:n]) / n for i in range(3)]
        last = [sum(s[i] for s in smp[-n:]) / n for i in range(3)]
        means[cls] = max(abs(a - b) for a, b in zip(first, last))
    assert (means["lis3dh"] < 1.0
            and means[sensor] > 0.8 * SENSORS[sensor]["drift_mg_per_min"] * 0.5 * 9), means


def test_cli_simulate(tmp_path, capsys):
    from tools.cli import main
    out = str(tmp_path / "t.jsonl")
    assert main(["simulate", "--scenario", "towing", "--seed", "4", "-o", out, "--gnss-hz", "5",
                 "--duration-s", "40"]) == 0
    header, lines = read_trace(out)
    assert header["gnss"] == {"baud": 38400, "rate_hz": 5, "receiver": "u-blox M8 (simulated)"}
    assert header["duration_s"] == pytest.approx(40.0, abs=0.02)
    epochs = [ln for ln in lines if ln["s"] == "gnss"]
    assert 195 <= len(epochs) <= 201
    assert "towing" in capsys.readouterr().out
    assert main(["simulate", "--scenario", "nope", "-o", out]) == 2
    assert "scenario: unknown 'nope'" in capsys.readouterr().err
