"""Replay speed: a synthetic 1-hour trace (100 Hz accelerometer + 1 Hz GNSS at 9600 baud) through
ReplaySession + the LIS3DH driver reading the FIFO every 100 ms and the GNSS UART drained every step,
under CPython (in process) and under the MicroPython VM (subprocess). Figures are trace seconds per
wall second (and per CPU second, which is stable on a loaded machine).
`python -m tools.bench.bench_replay [--quick]`."""
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_LOOP = """
import sys
sys.path.insert(0, %(root)r)
import time
from hw.replay import ReplaySession
from hw.lis3dh import LIS3DH
t0 = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)
s = ReplaySession(%(path)r)
d = LIS3DH(s.i2c)
buf = bytearray(512)
t = 0
n = 0
nb = 0
while not s.done:
    t += 100
    s.advance(t)
    n += d.read_fifo()
    while True:
        k = s.gnss_uart.readinto(buf)
        if not k:
            break
        nb += k
t1 = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)
print(t, n, nb, d.overruns, (t1 - t0) if hasattr(time, "ticks_ms") else t1 - t0)
"""


def make_trace(path, duration_s=3600):
    from tools.trace.cli import TraceWriter

    hdr = {"device": {"id": "bench", "source": "simulate"}, "gnss": {"baud": 9600, "rate_hz": 1},
           "accel": {"chip": "lis3dh", "rate_hz": 100, "unit": "mg"}, "power": {"nominal_mv": 12600}}
    with TraceWriter(path, hdr) as w:
        w.power(0.0, 12600, 1)
        for sec in range(duration_s):
            w.accel(float(sec), 100,
                    [[int(300 * math.sin((sec * 100 + i) / 50.0)), int(100 * math.cos(i / 7.0)), 1000]
                     for i in range(100)])
            hh, mm, ss = sec // 3600 + 8, sec // 60 % 60, sec % 60
            w.gnss(sec + 0.05, (b"$GPRMC,%02d%02d%02d.00,A,4807.038,N,01131.000,E,022.4,084.4,231126,,*00\r\n"
                                b"$GPGGA,%02d%02d%02d.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00\r\n"
                                % (hh, mm, ss, hh, mm, ss)))
    return path


def _run_cpython(path):
    ns = {}
    code = _LOOP % {"root": ROOT, "path": path}
    import contextlib
    import io

    out = io.StringIO()
    t0 = time.perf_counter()
    c0 = time.process_time()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "bench_replay", "exec"), ns)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    t, n, nb, ovr, _ = map(int, out.getvalue().split())
    return t, n, nb, ovr, wall, cpu


def _run_micropython(path):
    from tools.mpvm import micropython_binary

    exe = micropython_binary()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_LOOP % {"root": ROOT, "path": path})
        script = f.name
    try:
        import resource

        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run([exe, "-X", "heapsize=4M", script], capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    finally:
        os.remove(script)
    if p.returncode != 0:
        raise RuntimeError("micropython replay failed: %s" % (p.stderr or p.stdout).strip().splitlines()[-1])
    t, n, nb, ovr, _ = map(int, p.stdout.split())
    return t, n, nb, ovr, wall, cpu


def run(quick=False):
    dur = 300 if quick else 3600
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("trace.jsonl", "trace.jsonl.gz"):
            path = make_trace(os.path.join(d, name), dur)
            tag = "gz" if name.endswith(".gz") else "plain"
            res["trace_%s_bytes" % tag] = os.path.getsize(path)
            for rt, fn in (("cpython", _run_cpython), ("micropython", _run_micropython)):
                r = fn(path)
                if r is None:
                    continue
                t, n, nb, ovr, wall, cpu = r
                if n != dur * 100 - 1 or ovr:
                    raise RuntimeError("%s: %d samples, %d overruns (expected %d, 0)"
                                       % (rt, n, ovr, dur * 100 - 1))
                res["replay_%s_%s_trace_s_per_wall_s" % (rt, tag)] = round(dur / wall, 1)
                res["replay_%s_%s_wall_s" % (rt, tag)] = round(wall, 2)
                # CPU time: the honest figure on a shared machine (the micropython one includes VM start-up)
                res["replay_%s_%s_trace_s_per_cpu_s" % (rt, tag)] = round(dur / max(cpu, 1e-3), 1)
    res["trace_duration_s"] = dur
    res.update(firmware_replay(quick))
    return res


def firmware_replay(quick=False):
    """The whole firmware (paydbox replay) on a simulated 1-hour 100 Hz + 1 Hz GNSS trace (parked: the
    simulator's drives are minutes long) and on the bundled drive, under both runtimes; the JSON of
    both runtimes must be identical."""
    import json
    import time

    from tools.trace.replay import replay_trace

    res = {}
    dur = 300 if quick else 3600
    with tempfile.TemporaryDirectory() as d:
        hour = os.path.join(d, "parked.jsonl.gz")
        import subprocess

        subprocess.run([sys.executable, "-m", "tools.cli", "simulate", "--scenario", "parked_overnight",
                        "--seed", "3", "--duration-s", str(dur), "-o", hour], check=True, capture_output=True)
        bundled = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "tests", "traces", "commute.jsonl.gz")
        for tag, path, tdur in (("parked_%ds" % dur, hour, dur), ("drive_bundled", bundled, 457.8)):
            out = {}
            for rt in ("cpython", "micropython"):
                t0 = time.perf_counter()
                out[rt] = replay_trace(path, rt, heap="512K")
                wall = time.perf_counter() - t0
                res["firmware_%s_%s_trace_s_per_wall_s" % (tag, rt)] = round(tdur / wall, 1)
            res["firmware_%s_identical_json" % tag] = (json.dumps(out["cpython"], sort_keys=True)
                                                       == json.dumps(out["micropython"], sort_keys=True))
    return res


if __name__ == "__main__":
    for k, v in run(quick="--quick" in sys.argv).items():
        print("%s: %s" % (k, v))
