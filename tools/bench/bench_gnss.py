"""GNSS benchmarks: NMEA parser throughput (CPython and the MicroPython VM), bytes allocated per
sentence under MicroPython, odometer accuracy on synthetic drives with noise.
Run: python -m tools.bench.bench_gnss [--quick]"""
import glob
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(os.path.dirname(ROOT), "shared", "data", "nmea")

SYNTH = (b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230326,003.1,W*60\r\n"
         b"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48\r\n"
         b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")

MP_SCRIPT = r"""
import sys, time, gc
sys.path.insert(0, ROOT)
from firmware.nmea import NMEAParser
data = open(PATH, 'rb').read()
p = NMEAParser(lambda f: None)
buf = bytearray(64)
mv = memoryview(data)
p.feed(data[:2000])
n0 = p.counters['sentences']
gc.collect(); gc.disable()
a0 = gc.mem_alloc()
t0 = time.ticks_us()
i = 0
L = len(data)
while i < L:
    k = min(64, L - i)
    buf[:k] = mv[i:i + k]
    p.feed(buf, k, 0)
    i += k
t1 = time.ticks_us()
a1 = gc.mem_alloc()
gc.collect()
a2 = gc.mem_alloc()
i = 0
while i < L:  # same loop without the parser: the harness's own allocations (memoryview slices)
    k = min(64, L - i)
    buf[:k] = mv[i:i + k]
    i += k
a3 = gc.mem_alloc()
gc.enable()
print(p.counters['sentences'] - n0, L, time.ticks_diff(t1, t0), (a1 - a0) - (a3 - a2))
"""


def _stream():
    logs = sorted(glob.glob(os.path.join(CORPUS, "*", "*.log")))
    if logs:
        return b"".join(open(p, "rb").read() for p in logs), "corpus"
    return SYNTH * 2000, "synthetic"


def parser_figures(quick=False):
    from firmware.nmea import NMEAParser

    data, src = _stream()
    if quick:
        data = data[:200000]
    out = {}
    p = NMEAParser(lambda f: None)
    t0 = time.perf_counter()
    for i in range(0, len(data), 64):
        p.feed(data[i : i + 64])
    dt = time.perf_counter() - t0
    out["cpython_sentences_per_s"] = int(p.counters["sentences"] / dt)
    out["cpython_bytes_per_s"] = int(len(data) / dt)
    from tools.mpvm import micropython_binary

    exe = micropython_binary()
    if exe:
        for name, blob in (("corpus", data), ("synthetic", SYNTH * (300 if quick else 3000))):
            with tempfile.NamedTemporaryFile(suffix=".nmea", delete=False) as fh:
                fh.write(blob)
                path = fh.name
            script = MP_SCRIPT.replace("ROOT", repr(ROOT)).replace("PATH", repr(path))
            r = subprocess.run([exe, "-X", "heapsize=8M", "-c", script], capture_output=True, text=True,
                               timeout=600)
            os.unlink(path)
            if r.returncode != 0:
                raise RuntimeError("micropython bench failed: " + r.stderr.strip().splitlines()[-1])
            n, nbytes, us, alloc = (int(x) for x in r.stdout.split())
            if name == "corpus":
                out["mpy_sentences_per_s"] = int(n * 1e6 / us)
                out["mpy_bytes_per_s"] = int(nbytes * 1e6 / us)
            out["mpy_alloc_bytes_per_sentence_" + name] = round(alloc / max(1, n), 2)
    out["parser_input"] = src
    return out


def odometer_figures(quick=False):
    sys.path.insert(0, os.path.join(ROOT, "tests", "mp"))
    import mp_odometer as sim  # deterministic fix-level drive simulator shared with the tests

    out = {}
    dur = 600 if quick else 1800
    worst = 0.0
    for hz in (1, 5, 10):
        for sigma, label in ((2.0, "open"), (6.0, "urban")):
            odo, truth = sim.run(sim.drive(hz, dur, sim.Rng(hz * 7 + int(sigma)), pos_sigma_m=sigma,
                                           spd_sigma=0.15 if label == "open" else 0.4))
            e = abs(odo.total_mm / 1000.0 - truth) * 100.0 / truth
            out["dist_err_pct_%dhz_%s" % (hz, label)] = round(e, 3)
            worst = max(worst, e)
    odo, truth = sim.run(sim.drive(1, dur, sim.Rng(99), stops=False, outage=(300.0, 360.0)))
    out["dist_err_pct_tunnel_60s"] = round(abs(odo.total_mm / 1000.0 - truth) * 100.0 / truth, 3)
    out["bridged_m_tunnel_60s"] = odo.bridged_mm // 1000
    out["dist_err_pct_worst"] = round(worst, 3)
    # a straight 64 s tunnel at 20 m/s with a 1.5 m/s slower middle (end speeds over-state the path)
    odo, truth = sim._gap_drive(sim.tunnel_speed_dip, lambda t: 0.3, (100, 164))
    out["dist_err_m_straight_tunnel_speed_dip"] = (odo.total_mm - int(truth * 1000)) / 1000.0
    # sudden stops (crash: 14 m/s -> 0 in 0.1 s) and late hard stops, exact fixes: error of the drive
    for hz in (1, 5, 10):
        odo, truth = sim._stop_drive(hz, 14.0, 30.0 + 0.1 / hz, 0.1)
        out["dist_err_m_crash_stop_%dhz" % hz] = (odo.total_mm - int(truth * 1000)) / 1000.0
    odo, truth = sim._stop_drive(1, 11.0, 30.6, 0.3)
    out["dist_err_m_late_hard_stop_1hz"] = (odo.total_mm - int(truth * 1000)) / 1000.0
    for sigma, spd in ((3.0, 0.1), (8.0, 0.3), (15.0, 0.6)):
        odo, _ = sim.run(sim.drive(1, 3600, sim.Rng(int(sigma * 10)), pos_sigma_m=sigma, spd_sigma=spd,
                                   parked=True))
        out["parked_drift_m_per_h_sigma%dm" % sigma] = odo.total_mm / 1000.0
    # towed with the ignition off (accelerometer 'still' throughout, tow at 4 then 7 m/s)
    odo, truth = sim._tow_drive(sim.Rng(21))
    out["dist_err_pct_towed_accel_still"] = round((odo.total_mm / 1000.0 - truth) * 100.0 / truth, 3)
    clean, _ = sim.run(sim.drive(1, dur, sim.Rng(3)))
    k = {"i": 0}

    def inject(f):
        k["i"] += 1
        if k["i"] % 40 == 0:
            f.lat_e7 = f.lon_e7 = 0
        elif k["i"] % 40 == 20:
            f.lat_e7 += 900000  # 10 km jump
    dirty, _ = sim.run(sim.drive(1, dur, sim.Rng(3)), mutate=inject)
    out["glitch_added_m"] = max(0, dirty.total_mm - clean.total_mm) / 1000.0
    out["glitch_removed_m"] = max(0, clean.total_mm - dirty.total_mm) / 1000.0
    out["glitches_injected"] = k["i"] // 20
    return out


def run(quick=False):
    out = parser_figures(quick)
    out.update(odometer_figures(quick))
    return out


def main():
    quick = "--quick" in sys.argv
    for k, v in run(quick).items():
        print("%-45s %s" % (k, v))


if __name__ == "__main__":
    main()
