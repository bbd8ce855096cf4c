"""The firmware as a microcontroller would run it: CPU cost and heap, in the MicroPython VM.

CPU: the bundled drive (100 Hz accelerometer, 1 Hz GNSS) through firmware/replay_main.cpu_main: the
time inside the main-loop passes (Runner.step: Box and console) minus the time those passes spent in
the harness's UART and LIS3DH models; trace playback is never timed. box seconds per firmware CPU
second (wall share of the loop scaled by the loop's process CPU from /proc), best of 3 runs.
Heap: `paydbox replay --board-heap` (firmware from its ROMFS image, the harness measured apart):
image bytes, the firmware's live heap peak, and the smallest --board-heap (KiB, 4 KiB steps) with
which the drive completes with the CPython report; then the same on a synthetic 3-hour 1 Hz drive
and a 20-minute drive with the 100 Hz accelerometer. `python -m tools.bench.bench_firmware [--quick]`
(`--heap-only`: the heap figures alone)."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")


def _nmea(body):
    c = 0
    for ch in body.encode():
        c ^= ch
    return "$%s*%02X\r\n" % (body, c)


def _ddmm(deg, width):
    d = int(deg)
    return "%0*d%08.5f" % (width, d, (deg - d) * 60)


def long_drive(path, seconds=3 * 3600, accel_hz=0):
    """A drive of `seconds` at 1 Hz GNSS (GGA + RMC, 9600 baud) north-east at 72 km/h with the
    ignition on, optionally an accelerometer at accel_hz (still, 1 g down): the long-drive heap case."""
    import gzip

    hdr = {"format": "paydbox-trace", "version": 1, "device": {"id": "bench-long", "source": "simulate"},
           "start_utc": "2026-11-23T06:00:00Z", "duration_s": float(seconds),
           "gnss": {"baud": 9600, "rate_hz": 1}, "power": {"nominal_mv": 13800}}
    if accel_hz:
        hdr["accel"] = {"chip": "lis3dh", "rate_hz": accel_hz, "unit": "mg"}
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(hdr) + "\n")
        f.write(json.dumps({"t": 0.0, "s": "power", "mv": 13800, "ign": 1}) + "\n")
        for i in range(seconds):
            lat = 45.0 + i * 20.0 * 0.7071 / 111320.0
            lon = 4.0 + i * 20.0 * 0.7071 / (111320.0 * 0.7071)
            s_ = 6 * 3600 + i
            t = "%02d%02d%02d.00" % (s_ // 3600 % 24, s_ // 60 % 60, s_ % 60)
            gga = _nmea("GPGGA,%s,%s,N,%s,E,1,09,0.8,210.0,M,47.0,M,," % (t, _ddmm(lat, 2), _ddmm(lon, 3)))
            rmc = _nmea("GPRMC,%s,A,%s,N,%s,E,38.88,45.0,%s,,,A" % (t, _ddmm(lat, 2), _ddmm(lon, 3),
                                                                     "%02d1126" % (23 + s_ // 86400)))
            f.write(json.dumps({"t": float(i), "s": "gnss", "d": gga + rmc}) + "\n")
            if accel_hz:
                f.write(json.dumps({"t": float(i), "s": "accel", "rate": accel_hz, "mg": [[0, 0, 1000]] * accel_hz}) + "\n")
    return path


def cpu_factor(trace, runs=3):
    from tools.trace.replay import _plain_trace, micropython_binary

    best = None
    with tempfile.TemporaryDirectory(prefix="paydbox-cpu-") as tmp:
        plain = _plain_trace(trace, tmp)
        for i in range(runs):
            root = os.path.join(tmp, "flash%d" % i)
            os.mkdir(root)
            code = "import firmware.replay_main as r; r.cpu_main(%r, %r)" % (plain, root)
            p = subprocess.run([micropython_binary(), "-X", "heapsize=2M", "-c", code], cwd=ROOT,
                               env=dict(os.environ, MICROPYPATH=ROOT), capture_output=True, text=True, check=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            fw_wall_us = r["step_us"] - r["harness_us"]
            cpu_share = min(1.0, r["loop_cpu_ms"] / max(1, r["loop_wall_ms"]))
            fw_cpu_s = fw_wall_us * cpu_share / 1e6
            if best is None or fw_cpu_s < best[0]:
                best = (fw_cpu_s, r)
    fw_cpu_s, r = best
    return {"firmware_cpu_factor_box_s_per_cpu_s": round(r["box_ms"] / 1000 / fw_cpu_s, 1),
            "firmware_cpu_s_bundled_drive": round(fw_cpu_s, 3),
            "firmware_cpu_us_per_pass": round(fw_cpu_s * 1e6 / r["steps"], 1),
            "harness_in_pass_share_pct": round(100.0 * r["harness_us"] / r["step_us"], 1),
            "bundled_drive_box_s": r["box_ms"] / 1000}


def heap(trace, quick=False):
    from tools.trace.replay import ReplayError, replay_trace

    ref = replay_trace(trace, "cpython")
    rep = replay_trace(trace, "micropython", board_heap="512K")
    rep_heap = rep.pop("heap")
    out = {"image_bytes": rep_heap["image_bytes"], "firmware_heap_peak_bytes": rep_heap["peak_bytes"],
           "harness_heap_bytes": rep_heap["harness_bytes"],
           "board_heap_512k_same_json_as_cpython": json.dumps(rep, sort_keys=True) == json.dumps(ref, sort_keys=True)}
    for k in (96, 64):
        try:
            r = replay_trace(trace, "micropython", board_heap="%dK" % k)
            r.pop("heap")
            out["board_heap_%dk_same_json_as_cpython" % k] = json.dumps(r, sort_keys=True) == json.dumps(ref, sort_keys=True)
        except ReplayError as e:
            out["board_heap_%dk_same_json_as_cpython" % k] = False
            out["board_heap_%dk_error" % k] = str(e).splitlines()[0][-90:]
    if not quick:  # smallest heap that completes with the CPython report, between the live peak and 256 KiB
        out["board_heap_min_kib"] = _smallest_heap_kib(trace, json.dumps(ref, sort_keys=True),
                                                       rep_heap["peak_bytes"] // 1024)
    return out


def _smallest_heap_kib(path, ref, lo_kib, hi_kib=256, step=4):
    """Smallest --board-heap (KiB, `step` bisection) between lo and hi with which the drive completes
    with the CPython report (ref: its JSON). Where objects land in the heap moves the edge by a few
    KiB with any change, and a size just above it may still fail: the CI tests keep 8 KiB above it."""
    from tools.trace.replay import ReplayError, replay_trace

    lo, hi = lo_kib, hi_kib
    while hi - lo > step:
        mid = (lo + hi) // 2
        try:
            r = replay_trace(path, "micropython", board_heap="%dK" % mid)
            r.pop("heap")
            ok = json.dumps(r, sort_keys=True) == ref
        except ReplayError:
            ok = False
        if ok:
            hi = mid
        else:
            lo = mid
    return hi


def long_heap(seconds, accel_hz, tag, quick=False):
    """Firmware heap peak on a long synthetic drive, whether --board-heap 512K and 96K give the
    CPython report, and the smallest heap that does."""
    from tools.trace.replay import ReplayError, replay_trace

    out = {}
    with tempfile.TemporaryDirectory(prefix="paydbox-long-") as d:
        path = long_drive(os.path.join(d, tag + ".jsonl.gz"), seconds, accel_hz)
        ref = json.dumps(replay_trace(path, "cpython"), sort_keys=True)
        rep = replay_trace(path, "micropython", board_heap="512K")
        h = rep.pop("heap")
        out[tag + "_firmware_heap_peak_bytes"] = h["peak_bytes"]
        out[tag + "_board_heap_512k_same_json_as_cpython"] = json.dumps(rep, sort_keys=True) == ref
        try:
            rep = replay_trace(path, "micropython", board_heap="96K")
            rep.pop("heap")
            out[tag + "_board_heap_96k_same_json_as_cpython"] = json.dumps(rep, sort_keys=True) == ref
        except ReplayError:
            out[tag + "_board_heap_96k_same_json_as_cpython"] = False
        if not quick:
            out[tag + "_board_heap_min_kib"] = _smallest_heap_kib(path, ref, h["peak_bytes"] // 1024)
    return out


def run(quick=False, heap_only=False):
    res = {} if heap_only else cpu_factor(BUNDLED, runs=1 if quick else 3)
    res.update(heap(BUNDLED, quick))
    if not quick:
        res.update(long_heap(3 * 3600, 0, "drive_3h_1hz"))
        res.update(long_heap(1200, 100, "drive_20min_100hz"))
    return res


if __name__ == "__main__":
    for k, v in run(quick="--quick" in sys.argv, heap_only="--heap-only" in sys.argv).items():
        print("%s: %s" % (k, v))
