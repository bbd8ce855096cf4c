"""Benchmark of firmware/motion.py.

Figures:
- processing speed under the MicroPython VM (samples/s, calibrated and calibrating modes, timed
  with the heap locked: 1 = feed() allocated nothing) and heap used by one Motion object;
- calibration error (degrees, worst of the forward and up axes) vs time since trip start, on
  simulated drives at random mountings (tools/sim: uniform over SO(3));
- event precision/recall per type against the simulator's ground truth, and false events per
  100 km on the calm scenario; at 1 Hz and (prefixed gnss10hz_) 10 Hz GNSS.

The simulated traces are fed straight to Motion: accelerometer samples in 32-sample chunks, GNSS
bytes through firmware/nmea.py, interleaved in time order (samples up to a GNSS line first).

    python -m tools.bench.bench_motion [--quick] [--gnss-hz=1,5,10]    (default 1,10)
"""
import math
import os
import subprocess
import sys
import tempfile
from array import array

from hw.trace_format import iter_trace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARSH = ("harsh_accel", "harsh_brake", "harsh_corner_left", "harsh_corner_right")
TYPES = HARSH + ("crash",)


def _axis_err(m, R):
    worst = 0.0
    for row in (0, 2):
        est = [m._R[3 * row + j] / 16384.0 for j in range(3)]
        n = math.sqrt(sum(c * c for c in est))
        if n == 0:
            return 180.0
        c = sum(est[j] * R[row][j] for j in range(3)) / n
        worst = max(worst, math.degrees(math.acos(max(-1.0, min(1.0, c)))))
    return worst


def run_trace(path, cfg=None):
    """Feed one trace to Motion. Returns events, truth, calibration series (t_s, err_deg, state, q)."""
    from firmware.motion import Motion
    from firmware.nmea import NMEAParser

    it = iter_trace(path)
    header = next(it)
    if header.get("format") != "paydbox-trace":
        raise ValueError("%s: format: not a paydbox trace" % path)
    rate = int(header.get("accel", {}).get("rate_hz", 100))
    events = []
    m = Motion(rate, cfg, on_event=events.append)
    parser = NMEAParser(on_fix=m.on_fix)
    buf = array("i", [0] * 96)
    pend = []           # pending samples [(t_ms, x, y, z)]
    truth = []
    trips = []
    mounts = []
    series = []
    dist_m = 0.0
    next_probe = 0.0

    def feed_until(t_ms):
        nonlocal pend
        k = 0
        while k < len(pend) and pend[k][0] < t_ms:
            n = 0
            t0 = pend[k][0]
            while n < 32 and k < len(pend) and pend[k][0] < t_ms:
                s = pend[k]
                buf[3 * n] = s[1]
                buf[3 * n + 1] = s[2]
                buf[3 * n + 2] = s[3]
                n += 1
                k += 1
            m.feed(t0, buf, n)
            m.poll()
        pend = pend[k:]

    for rec in it:
        t = rec["t"]
        s = rec["s"]
        t_ms = int(round(t * 1000))
        if s == "accel":
            r = rec.get("rate", rate)
            for i, xyz in enumerate(rec["mg"]):
                pend.append((t_ms + i * 1000 // r, xyz[0], xyz[1], xyz[2]))
            if len(pend) > 400:
                feed_until(pend[-1][0] - 200)
        elif s == "gnss":
            feed_until(t_ms)
            if "d" in rec:
                data = rec["d"].encode()
            else:
                import base64
                data = base64.b64decode(rec["b64"])
            parser.feed(data, -1, t_ms)
        elif s == "truth":
            kind = rec.get("kind")
            if kind == "event":
                truth.append(rec)
            elif kind == "trip":
                trips.append(rec)
            elif kind == "mount":
                mounts.append((t, rec["R"]))
            elif kind == "pos":
                dist_m = rec.get("dist_m", dist_m)
        if mounts and t >= next_probe:
            feed_until(t_ms)
            R = mounts[-1][1]
            series.append((t, _axis_err(m, R) if m.calib_state == "calibrated" else -1.0,
                           m.calib_state, m.calib_quality))
            next_probe = t + 1.0
    feed_until(1 << 60)
    m.flush()
    return {"events": events, "truth": truth, "trips": trips, "mounts": mounts, "series": series,
            "dist_m": dist_m, "counters": dict(m.counters)}


def match(events, truth, tol_s=1.5):
    """Per type: tp, fp, fn. A detection matches an unmatched truth event of the same type whose
    [start - tol, end + tol] overlaps the detection's [t, t + dur]."""
    out = {k: [0, 0, 0] for k in TYPES}
    used = set()
    for e in events:
        k = e["type"]
        if k not in out:
            continue
        a = e["t_ms"] / 1000.0
        b = a + e.get("dur_ms", 0) / 1000.0
        hit = None
        for i, tr in enumerate(truth):
            if i in used or tr["type"] != k:
                continue
            if a <= tr["end"] + tol_s and b >= tr["start"] - tol_s:
                hit = i
                break
        if hit is None:
            out[k][1] += 1
        else:
            used.add(hit)
            out[k][0] += 1
    for i, tr in enumerate(truth):
        if tr["type"] in out and i not in used:
            out[tr["type"]][2] += 1
    return out


MP_SCRIPT = r"""
import gc, time
from array import array
from firmware.motion import Motion
gc.collect()
a0 = gc.mem_alloc()
R = [0, 0, 16384, 0, 16384, 0, -16384, 0, 0]     # box z forward, x down
m = Motion(100, None, None, {"calib_state": "calibrated", "quality": 90, "R": R})
gc.collect()
a1 = gc.mem_alloc()
m2 = Motion(100)
buf = array("i", [0] * 96)
seed = 1
for i in range(32):
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    buf[3 * i] = -1000 + (seed >> 20) - 1024
    buf[3 * i + 1] = ((seed >> 10) & 255) - 128
    buf[3 * i + 2] = 150 + ((seed >> 4) & 63)
def bench(mm, chunks):
    t = 0
    t0 = time.ticks_us()
    for c in range(chunks):
        mm.feed(t, buf, 32)
        t += 320
    return time.ticks_diff(time.ticks_us(), t0)
bench(m2, 40)          # gravity estimate -> calibrating mode
m2.poll()
m.feed(0, buf, 32)
m.poll()
CH = %d
import micropython
gc.collect()
locked_ok = 1
micropython.heap_lock()
try:
    us_cal = bench(m, CH)
    us_calib = bench(m2, CH)
except MemoryError:
    locked_ok = 0
    us_cal = us_calib = 1
finally:
    micropython.heap_unlock()
print("@@", CH * 32, us_cal, us_calib, a1 - a0, locked_ok, m2._mode, m._mode)
"""


def mp_speed(chunks=400):
    from tools.mpvm import micropython_binary

    exe = micropython_binary()
    env = dict(os.environ, MICROPYPATH=ROOT)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(MP_SCRIPT % chunks)
        script = f.name
    try:
        p = subprocess.run([exe, "-X", "heapsize=2M", script], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    finally:
        os.unlink(script)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
    if not line:
        raise RuntimeError("micropython speed run failed: " + (p.stderr or p.stdout)[-500:])
    f = line[0].split()
    n, us_cal, us_calib, heap_obj, locked_ok = [int(x) for x in f[1:6]]
    return {
        "mp_samples_per_s_calibrated": int(n * 1e6 / max(us_cal, 1)),
        "mp_samples_per_s_calibrating": int(n * 1e6 / max(us_calib, 1)),
        "mp_heap_motion_bytes": heap_obj,
        "mp_feed_runs_under_heap_lock": locked_ok,   # 1: feed() allocated nothing (both modes)
    }


def scenario_list(quick):
    if quick:
        return [("aggressive", 1), ("aggressive", 2), ("commute", 3), ("calm", 4), ("crash", 5),
                ("remount", 6)]
    out = [("aggressive", s) for s in range(1, 9)]
    out += [("commute", s) for s in range(11, 15)]
    out += [("calm", s) for s in range(21, 25)]
    out += [("crash", s) for s in range(31, 34)]
    out += [("remount", s) for s in range(41, 44)]
    out += [("highway", 51), ("urban_canyon", 52)]
    return out


def _one(args):
    name, seed, tmpdir, gnss_hz = args
    from tools.sim.engine import simulate

    path = os.path.join(tmpdir, "%s-%d-%dhz.jsonl" % (name, seed, gnss_hz))
    simulate(path, name, seed=seed, gnss_hz=gnss_hz)
    r = run_trace(path)
    os.unlink(path)
    r["scenario"] = name
    r["seed"] = seed
    return r


def sim_figures(quick, gnss_hz=1):
    try:
        import tools.sim.engine  # noqa: F401
    except ImportError:
        return {}
    import multiprocessing

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(n, s, tmp, gnss_hz) for n, s in scenario_list(quick)]
        with multiprocessing.Pool(2) as pool:
            results = pool.map(_one, jobs)
    tot = {k: [0, 0, 0] for k in TYPES}
    calm_fp = 0
    calm_km = 0.0
    probes = (15, 30, 60, 120, 300)
    errs = {p: [] for p in probes}
    t_cal = []
    for r in results:
        mt = match(r["events"], r["truth"])
        for k in TYPES:
            for i in range(3):
                tot[k][i] += mt[k][i]
        if r["scenario"] == "calm":
            calm_fp += sum(mt[k][1] for k in HARSH)
            calm_km += r["dist_m"] / 1000.0
        if r["scenario"] != "remount" and r["trips"]:
            t0 = r["trips"][0]["start"]
            first = None
            for t, err, st, q in r["series"]:
                if st == "calibrated" and first is None:
                    first = t - t0
                for p in probes:
                    if abs(t - t0 - p) < 0.5:
                        errs[p].append(err)
            if first is not None:
                t_cal.append(first)
    out = {"sim_drives": len(results)}
    for k in TYPES:
        tp, fp, fn = tot[k]
        out["%s_precision" % k] = round(tp / (tp + fp), 3) if tp + fp else 1.0
        out["%s_recall" % k] = round(tp / (tp + fn), 3) if tp + fn else 1.0
        out["%s_truth_n" % k] = tp + fn
    out["calm_false_events_per_100km"] = round(100.0 * calm_fp / calm_km, 2) if calm_km else 0.0
    if t_cal:
        t_cal.sort()
        out["calib_time_to_calibrated_median_s"] = round(t_cal[len(t_cal) // 2], 1)
        out["calib_drives_calibrated_share"] = round(len(t_cal) / max(1, sum(
            1 for r in results if r["scenario"] != "remount" and r["trips"])), 3)
    for p in probes:
        v = sorted(errs[p])
        cal = [e for e in v if e >= 0]
        out["calib_calibrated_share_at_%ds" % p] = round(len(cal) / len(v), 3) if v else 0.0
        if cal:
            out["calib_err_deg_median_at_%ds" % p] = round(cal[len(cal) // 2], 2)
            out["calib_err_deg_max_at_%ds" % p] = round(cal[-1], 2)
    return out


MP_CALIB = """
import time, gc, math
from firmware.calib import LagCalib
gc.collect()
a0 = gc.mem_free()
lc = LagCalib(2500, 600)
gc.collect()
a1 = gc.mem_free()
t = 0
for k in range(400):
    t += 250
    lc.window(t, int(2500 * math.sin(t / 3000.0)), int(1250 * math.cos(t / 5000.0)), 25000, 25)
    if k > 30 and k % 4 == 0:
        lc.pair(t - 1000, t, 100 * math.sin(t / 3000.0), 50 * math.cos(t / 5000.0))
t0 = time.ticks_us()
for i in range(20):
    lc.pair(t - 1000, t, 10.0, 5.0)
t1 = time.ticks_us()
for i in range(20):
    lc.solve([0.0, 0.0, 1.0])
t2 = time.ticks_us()
print("@@", a0 - a1, (t1 - t0) // 20, (t2 - t1) // 20)
"""


def mp_calib_cost():
    """Heap of the lag bank (default 2.5 s range: 21 lags) and the time of one fix pair and one solve
    (the per-fix work, ~1 Hz) under the MicroPython unix VM."""
    from tools.mpvm import micropython_binary

    exe = micropython_binary()
    env = dict(os.environ, MICROPYPATH=ROOT)
    p = subprocess.run([exe, "-X", "heapsize=2M", "-c", MP_CALIB], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
    if not line:
        raise RuntimeError("micropython calib run failed: " + (p.stderr or p.stdout)[-500:])
    heap, pair_us, solve_us = [int(x) for x in line[0].split()[1:4]]
    return {"mp_heap_lag_bank_bytes": heap, "mp_fix_pair_us": pair_us, "mp_calib_solve_us": solve_us}


def lag_matrix(quick=False):
    """Harsh precision / recall, time to calibrate and worst axis error at commit through the real
    firmware (paydbox evaluate) for each simulated GNSS lag and accelerometer class."""
    from tools.trace import evaluate as E

    scen = ["brake_corner"] if quick else ["aggressive", "commute", "brake_corner", "calm"]
    out = {}
    for lag, sensor, ev in E.evaluate_matrix(scen, (0.0, 1.0, 2.0), ("lis3dh", "10hz", "phone"), jobs=2):
        t = ev["totals"]
        k = "lag%ds_%s_" % (int(lag), sensor)
        out[k + "harsh_precision"] = t["harsh_precision"]
        out[k + "harsh_recall"] = t["harsh_recall"]
        out[k + "calib_s_max"] = t["calibration_time_s_max"]
        out[k + "axis_err_at_commit_deg_max"] = t["calibration_axis_err_at_commit_deg_max"]
        out[k + "calib_err_end_deg_max"] = t["calibration_error_deg_max"]
    return out


def run(quick=False, gnss_hz=(1, 10)):
    """Figures; the simulated-drive ones for each GNSS rate in gnss_hz (1 Hz unprefixed, others
    prefixed `gnss<N>hz_`); the real drives (../shared/data/imu, when present) at 20 mountings;
    the GNSS-lag x sensor-class matrix."""
    out = {}
    out.update(mp_speed(150 if quick else 600))
    out.update(mp_calib_cost())
    out.update(real_figures(5 if quick else 20))
    out.update(lag_matrix(quick))
    for hz in gnss_hz:
        figs = sim_figures(quick, hz)
        if hz == 1:
            out.update(figs)
        else:
            for k, v in figs.items():
                out["gnss%dhz_%s" % (hz, k)] = v
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rates = (1, 10)
    for a in argv:
        if a.startswith("--gnss-hz="):
            try:
                rates = tuple(int(x) for x in a.split("=", 1)[1].split(","))
            except ValueError:
                raise ValueError("--gnss-hz: expected comma-separated ints, got %r" % a)
            for r in rates:
                if r not in (1, 5, 10):
                    raise ValueError("--gnss-hz: rates must be 1, 5 or 10, got %d" % r)
    res = run(quick="--quick" in argv, gnss_hz=rates)
    for k, v in res.items():
        print("%-48s %s" % (k, v))
    return 0



# ------------------------------------------------------------------------------------------ real drives
SHARED_IMU = os.path.join(os.path.dirname(ROOT), "shared", "data", "imu")
REAL_DRIVES = {
    "genivi": ("genivi-rpi-regensburg/20160209_RPi_GENIVI_Regensburg.log", "load_genivi"),
    "comma2k19": ("comma2k19-example1", "load_comma2k19"),
}


def load_real(name, root=SHARED_IMU):
    """A real drive of ../shared/data/imu (tools/trace/imu_logs.py), or None when the directory is absent."""
    from tools.trace import imu_logs

    rel, fn = REAL_DRIVES[name]
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        return None
    return getattr(imu_logs, fn)(path)


class _Fix:
    __slots__ = ("t_ms", "valid", "speed_mmps", "course_cdeg", "lat_e7", "lon_e7", "alt_dm")


def rotate(Q, v):
    return [Q[i][0] * v[0] + Q[i][1] * v[1] + Q[i][2] * v[2] for i in range(3)]


def run_real(drive, Q, box_hz=100, until_s=None, cfg=None, chunk=10, extra_lag_s=0.0):
    """Feed a real drive (tools/trace/imu_logs.py dict) to Motion as the box would see it: the sensor's
    samples rotated by Q (a mounting: box = Q . sensor), held at the box's rate (`box_hz`, as the
    replayed LIS3DH repeats or drops samples), read in `chunk`-sample FIFO reads; the GNSS fixes at
    their log times (+ extra_lag_s). Returns (motion, commit) where commit is None or
    {"t_s", "quality", "sigma_deg", "lag_ms", "R"} at the moment the calibration first committed."""
    from firmware.motion import Motion

    acc = drive["accel"]
    fixes = drive["fixes"]
    events = []
    m = Motion(box_hz, cfg, on_event=events.append)
    buf = array("i", [0] * (3 * chunk))
    ai = fi = n = k = 0
    t0 = 0
    cur = None
    commit = None
    end = acc[-1][0] if until_s is None else min(acc[-1][0], until_s)
    while True:
        t = k / float(box_hz)
        if t > end:
            break
        while ai < len(acc) and acc[ai][0] <= t:
            cur = rotate(Q, acc[ai][1:4])
            ai += 1
        while fi < len(fixes) and fixes[fi][0] + extra_lag_s <= t:
            f = fixes[fi]
            fi += 1
            if n:
                m.feed(t0, buf, n)
                m.poll()
                n = 0
            x = _Fix()
            x.t_ms = int(round((f[0] + extra_lag_s) * 1000))
            x.valid = 1 if f[1] else 0
            x.speed_mmps = int(round(f[4] * 1000)) if f[1] else -1
            x.course_cdeg = int(round(f[5] * 100)) % 36000 if (f[1] and f[5] is not None) else -1
            x.lat_e7 = int(round(f[2] * 1e7))
            x.lon_e7 = int(round(f[3] * 1e7))
            m.on_fix(x)
            if commit is None and m.calib_state == "calibrated":
                commit = {"t_s": x.t_ms / 1000.0, "quality": m.calib_quality, "sigma_deg": m.calib_err_deg,
                          "lag_ms": m.calib_lag_ms, "R": [m._R[i] / 16384.0 for i in range(9)]}
        if cur is not None:
            if n == 0:
                t0 = int(round(t * 1000))
            buf[3 * n] = int(round(cur[0]))
            buf[3 * n + 1] = int(round(cur[1]))
            buf[3 * n + 2] = int(round(cur[2]))
            n += 1
            if n == chunk:
                m.feed(t0, buf, n)
                m.poll()
                n = 0
        k += 1
    m.events = events
    return m, commit


def axis_errors_deg(Rflat, fwd_box, up_box):
    """(forward error, up error) in degrees of a Q14-derived rotation (rows x, y, z in box axes)."""
    out = []
    for row, tv in ((0, fwd_box), (2, up_box)):
        est = Rflat[3 * row:3 * row + 3]
        n = math.sqrt(sum(c * c for c in est)) or 1.0
        c = sum(est[j] * tv[j] for j in range(3)) / n
        out.append(math.degrees(math.acos(max(-1.0, min(1.0, c)))))
    return out


def drive_start_s(drive, v_mps=2.0, run=3):
    """Trace time of the first of `run` consecutive valid fixes at >= v_mps (a lone fast fix at
    GNSS start-up is noise): where 'driving' starts for the time-to-calibrate figure."""
    fx = drive["fixes"]
    for i in range(len(fx) - run + 1):
        if all(f[1] and f[4] >= v_mps for f in fx[i:i + run]):
            return fx[i][0]
    return None


def real_figures(mounts=20, seed=1):
    """Time to calibrate (s of driving) and worst axis error at commit on the real drives at `mounts`
    seeded random mountings. Reference axes: comma2k19's pose; GENIVI: the drive's own parked
    gravity and whole-drive fit (tests/test_motion_real.py). {} when ../shared/data/imu is absent."""
    import random

    from tools.sim.engine import random_rotation

    out = {}
    for name in ("comma2k19", "genivi"):
        d = load_real(name)
        if d is None:
            continue
        if name == "genivi":
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from test_motion_real import _genivi_reference
            ref = _genivi_reference(d)
        else:
            ref = d["ref"]
        start = drive_start_s(d)
        rng = random.Random(seed)
        times, errs, lags = [], [], []
        fails = 0
        for _ in range(mounts):
            Q = random_rotation(rng)
            m, c = run_real(d, Q, until_s=start + 120.0)
            if c is None:
                fails += 1
                continue
            times.append(c["t_s"] - start)
            errs.append(max(axis_errors_deg(c["R"], rotate(Q, ref["fwd"]), rotate(Q, ref["up"]))))
            lags.append(c["lag_ms"])
        out["real_%s_mounts" % name] = mounts
        out["real_%s_not_calibrated_in_120s" % name] = fails
        if times:
            out["real_%s_calib_driving_s_max" % name] = round(max(times), 1)
            out["real_%s_calib_driving_s_median" % name] = round(sorted(times)[len(times) // 2], 1)
            out["real_%s_axis_err_at_commit_deg_max" % name] = round(max(errs), 2)
            out["real_%s_axis_err_at_commit_deg_median" % name] = round(sorted(errs)[len(errs) // 2], 2)
            out["real_%s_lag_ms_at_commit" % name] = sorted(set(lags))
    return out


if __name__ == "__main__":
    sys.exit(main())
