"""Mount calibration on two real drives (../shared/data/imu, see its README), at 20 seeded random
mountings each: the calibration must commit within 60 s of driving, and the worst of its forward and up
axes must then be within 5 degrees of a reference that does not come from firmware/motion.py:
- comma2k19: comma's offline-optimised pose (vehicle velocity and local vertical in the device frame);
- GENIVI: gravity while parked before the drive, and forward from a batch least-squares fit over the
  whole 9-minute drive (fine lag search, written here, independent of firmware/calib.py).
Skipped, saying why, when the shared data is absent."""
import math
import os
import random

import pytest

from tools.bench import bench_motion as bm
from tools.sim.engine import random_rotation

N_MOUNTS = 20
MAX_DRIVING_S = 60.0     # issue 19's target (goal 30 s), on both drives
MAX_AXIS_DEG = 5.0


def _drive(name):
    if not os.path.isdir(bm.SHARED_IMU):
        pytest.skip("real IMU drives not available: %s is absent" % bm.SHARED_IMU)
    d = bm.load_real(name)
    if d is None:
        pytest.skip("real IMU drive %s not available under %s" % (name, bm.SHARED_IMU))
    return d


def _unit(v):
    n = math.sqrt(sum(c * c for c in v))
    return [c / n for c in v]


def _genivi_reference(d):
    """Up from the parked start, forward from a whole-drive batch fit (independent implementation)."""
    acc = d["accel"]
    fx = d["fixes"]
    start = bm.drive_start_s(d)
    still = [a for a in acc if 5.0 < a[0] < start - 2.0]
    up = _unit([sum(a[i] for a in still) for i in (1, 2, 3)])
    # horizontal basis
    e1 = _unit([1 - up[0] * up[0], -up[0] * up[1], -up[0] * up[2]])
    e2 = [up[1] * e1[2] - up[2] * e1[1], up[2] * e1[0] - up[0] * e1[2], up[0] * e1[1] - up[1] * e1[0]]
    ts = [a[0] for a in acc]
    cum = [[0.0, 0.0]]
    for a in acc:
        h = (sum(a[1 + j] * e1[j] for j in range(3)), sum(a[1 + j] * e2[j] for j in range(3)))
        cum.append([cum[-1][0] + h[0], cum[-1][1] + h[1]])
    import bisect

    def hmean(t0, t1):
        i0 = bisect.bisect_right(ts, t0)
        i1 = bisect.bisect_right(ts, t1)
        if i1 <= i0:
            return None
        return [(cum[i1][k] - cum[i0][k]) / (i1 - i0) for k in (0, 1)]

    pairs = []
    for f0, f1 in zip(fx, fx[1:]):
        if not (f0[1] and f1[1]) or f0[4] < 2 or f1[4] < 2 or f0[5] is None or f1[5] is None:
            continue
        dt = f1[0] - f0[0]
        if not 0.5 < dt < 2.5:
            continue
        dc = (f1[5] - f0[5] + 180.0) % 360.0 - 180.0
        if abs(dc) > 45:
            continue
        g = 1000.0 / 9.80665
        pairs.append((f0[0], f1[0], (f1[4] - f0[4]) / dt * g,
                      -math.radians(dc) / dt * (f0[4] + f1[4]) / 2 * g))
    best = None
    for lag10 in range(0, 21):
        lag = lag10 / 10.0
        rows = []
        for t0, t1, a, l in pairs:
            h = hmean(t0 - lag, t1 - lag)
            if h is not None:
                rows.append((a, l, h))
        n = len(rows)
        ma = sum(r[0] for r in rows) / n
        ml = sum(r[1] for r in rows) / n
        mh = [sum(r[2][k] for r in rows) / n for k in (0, 1)]
        saa = sum((r[0] - ma) ** 2 for r in rows)
        sll = sum((r[1] - ml) ** 2 for r in rows)
        sal = sum((r[0] - ma) * (r[1] - ml) for r in rows)
        det = saa * sll - sal * sal
        cols = []
        rss = 0.0
        for k in (0, 1):
            sah = sum((r[0] - ma) * (r[2][k] - mh[k]) for r in rows)
            slh = sum((r[1] - ml) * (r[2][k] - mh[k]) for r in rows)
            bx = (sll * sah - sal * slh) / det
            by = (saa * slh - sal * sah) / det
            cols.append((bx, by))
            rss += sum((r[2][k] - mh[k] - bx * (r[0] - ma) - by * (r[1] - ml)) ** 2 for r in rows)
        if best is None or rss < best[0]:
            best = (rss, lag, cols)
    _, lag, cols = best
    fa = math.atan2(cols[1][0], cols[0][0])                    # forward column
    fl = math.atan2(cols[1][1], cols[0][1]) - math.pi / 2      # left column rotated to forward
    d_ = (fl - fa + math.pi) % (2 * math.pi) - math.pi
    ang = fa + d_ / 2
    fwd = [math.cos(ang) * e1[j] + math.sin(ang) * e2[j] for j in range(3)]
    return {"fwd": fwd, "up": up, "lag_s": lag, "split_deg": abs(math.degrees(d_))}


def _calibrated_log(monkeypatch):
    """Records, at every change of the box's rotation or of its reported error while it is calibrated:
    (box s, R as 9 floats, calib_err_deg). The list is cleared by the caller between drives."""
    from firmware.motion import Motion

    log = []
    orig = Motion._update_calib

    def update(self):
        orig(self)
        if self.calib_state == "calibrated":
            R = [self._R[i] / 16384.0 for i in range(9)]
            if not log or log[-1][1] != R or log[-1][2] != self.calib_err_deg:
                log.append((self._t_feed / 1000.0, R, self.calib_err_deg))

    monkeypatch.setattr(Motion, "_update_calib", update)
    return log


def _check(name, d, ref, seed, log, max_driving_s=MAX_DRIVING_S):
    """20 mountings: the first commit within max_driving_s of driving, with both axes within 5 deg of the
    reference; from then on (the rotation keeps refining), every rotation the box uses is within 5 deg
    too, and the forward error it reports (calib_err_deg, 1 sigma) bounds the measured one: measured <=
    2 sigma + 1 deg (2 sigma is what a commit promises, 2.5 deg 1-sigma = 5 deg; 1 deg for the reference's
    own error). Returns the worst axis errors at commit."""
    rng = random.Random(seed)
    start = bm.drive_start_s(d)
    worst = []
    for k in range(N_MOUNTS):
        Q = random_rotation(rng)
        del log[:]
        m, c = bm.run_real(d, Q, until_s=start + max_driving_s + 5.0)
        assert c is not None, ("%s mount %d: not calibrated after %.0f s of driving (state %s, quality %d, "
                               "%s)") % (
            name, k, max_driving_s, m.calib_state, m.calib_quality, m._lc.info)
        t_drv = c["t_s"] - start
        fwd, up = bm.rotate(Q, ref["fwd"]), bm.rotate(Q, ref["up"])
        ef, eu = bm.axis_errors_deg(c["R"], fwd, up)
        worst.append(max(ef, eu))
        assert t_drv <= max_driving_s, "%s mount %d: calibrated after %.1f s of driving" % (name, k, t_drv)
        assert max(ef, eu) <= MAX_AXIS_DEG, "%s mount %d: axis error at commit forward %.2f up %.2f deg" % (
            name, k, ef, eu)
        assert log, "%s mount %d: the calibrated rotation was never recorded" % (name, k)
        for t, R, sigma in log:
            ef, eu = bm.axis_errors_deg(R, fwd, up)
            at = "%s mount %d at %.1f s of driving" % (name, k, t - start)
            assert max(ef, eu) <= MAX_AXIS_DEG, "%s: axis error forward %.2f up %.2f deg" % (at, ef, eu)
            assert 0 < sigma and ef <= 2 * sigma + 1.0, \
                "%s: forward error %.2f deg measured, %.2f deg (1 sigma) reported" % (at, ef, sigma)
    return worst


def test_comma2k19_calibrates_at_random_mountings(monkeypatch):
    d = _drive("comma2k19")
    assert d["ref"] is not None and d["ref"]["poses"] > 1000
    _check("comma2k19", d, d["ref"], 2019, _calibrated_log(monkeypatch))


def test_genivi_calibrates_at_random_mountings(monkeypatch):
    d = _drive("genivi")
    ref = _genivi_reference(d)
    # the reference's own longitudinal and lateral estimates agree (within 8 deg; it takes their bisector)
    assert ref["split_deg"] < 8.0, ref
    _check("genivi", d, ref, 2016, _calibrated_log(monkeypatch))


def test_trace_import_real_drives_replay_through_the_box(tmp_path):
    """`paydbox trace import --comma2k19/--genivi` writes traces the real firmware replays (NMEA through the
    parser, samples through the LIS3DH model at the box's 100 Hz): the box calibrates, and on the comma2k19
    trace at a random mounting its rotation matches the truth mount line (from comma's pose) within 5 deg."""
    import json

    from tools.cli import main as cli
    from tools.trace.cli import trace_info
    from tools.trace.evaluate import rotation_angle_deg
    from tools.trace.replay import replay_trace

    _drive("comma2k19")
    src = os.path.join(bm.SHARED_IMU, bm.REAL_DRIVES["comma2k19"][0])
    out = str(tmp_path / "c.jsonl")
    assert cli(["trace", "import", "--comma2k19", src, "--mount-seed", "5", "-o", out, "--json"]) == 0
    info = trace_info(out)
    assert (info["accel"]["rate_hz"] == 104 and info["accel"]["samples"] == 6256
            and info["truth"] == {"mount": 1})
    with open(out) as f:
        f.readline()
        truth_R = json.loads(f.readline())["R"]
    rep = replay_trace(out)
    cal = rep["calibration"]
    assert cal["calib_state"] == "calibrated", cal
    R = [[cal["R_q14"][3 * i + j] / 16384.0 for j in range(3)] for i in range(3)]
    for row in (0, 2):
        c = sum(R[row][j] * truth_R[row][j] for j in range(3))
        assert math.degrees(math.acos(max(-1.0, min(1.0, c)))) <= MAX_AXIS_DEG, (row, R, truth_R)
    assert rotation_angle_deg(R, truth_R) < 90   # sanity: not a swapped frame

    _drive("genivi")
    src = os.path.join(bm.SHARED_IMU, bm.REAL_DRIVES["genivi"][0])
    out = str(tmp_path / "g.jsonl.gz")
    assert cli(["trace", "import", "--genivi", src, "-o", out]) == 0
    info = trace_info(out)
    assert info["accel"]["rate_hz"] == 10 and info["accel"]["samples"] == 5489
    rep = replay_trace(out)
    assert rep["calibration"]["calib_state"] == "calibrated"
    assert len(rep["trips"]) == 1 and rep["trips"][0]["distance_m"] > 3000


def test_skips_saying_why_without_the_shared_data(monkeypatch, tmp_path):
    monkeypatch.setattr(bm, "SHARED_IMU", str(tmp_path / "absent"))
    with pytest.raises(pytest.skip.Exception, match="real IMU drives not available: .*absent is absent"):
        _drive("genivi")
