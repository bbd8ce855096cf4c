"""The firmware as a microcontroller would run it: CPU cost and heap, in the MicroPython VM.

CPU: the bundled drive (100 Hz accelerometer, 1 Hz GNSS). A CPython replay (the real harness,
hw/replay.py) records every value the firmware reads from its board, in call order (record_io);
the VM then runs the firmware alone on that recording (tools/bench/firmware_cpu_vm.py: peers that copy
bytes out of one buffer, each call checked against the recording, the summary checked against the
CPython one). Figure: box seconds per process CPU second (time.clock(): user + system) of the
main-loop passes, minus the CPU of the recording's peers (a pass making the same peer calls with no
firmware); median of 5 VM runs, min and max beside it. Profile: an instrumented run, exclusive wall
time per subsystem (wrapper cost calibrated out) as a share of the median CPU figure, and the bytes
the passes allocate (what the garbage collector has to reclaim).
Heap: `paydbox replay --board-heap` (firmware from its ROMFS image, alone in the VM with exactly SIZE
free bytes; the harness on the host answers its board calls over a pipe, tools/trace/replay.py):
image bytes, the firmware's live heap peak, and the smallest --board-heap (KiB, 1 KiB bisection steps)
with which the drive completes with the CPython report; then the same on a synthetic 3-hour 1 Hz drive,
a 20-minute drive with the 100 Hz accelerometer and the simulator's crash drive.
`python -m tools.bench.bench_firmware [--quick]` (`--heap-only`: the heap figures alone)."""
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")


def _nmea(body):
    from tools.sim.nmea_gen import sentence

    return sentence(body).decode()


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
                f.write(json.dumps({"t": float(i), "s": "accel", "rate": accel_hz,
                                    "mg": [[0, 0, 1000]] * accel_hz}) + "\n")
    return path


class _RecUART:
    """The replay UART, every answer the firmware got appended to the recording."""

    def __init__(self, u, out):
        self.u = u
        self.out = out
        self.baudrate = u.baudrate

    def any(self):
        n = self.u.any()
        self.out += b"a" + struct.pack("<H", n)
        return n

    def readinto(self, buf, n=-1):
        k = self.u.readinto(buf, n)
        self.out += b"r" + (struct.pack("<H", 0xFFFF) if k is None else struct.pack("<H", k) + bytes(buf[:k]))
        return k

    def read(self, n=-1):
        d = self.u.read(n)
        self.out += b"R" + (struct.pack("<H", 0xFFFF) if d is None else struct.pack("<H", len(d)) + bytes(d))
        return d

    def write(self, b):
        return self.u.write(b)

    def init(self, baudrate=None, **kw):
        self.u.init(baudrate=baudrate)
        self.baudrate = self.u.baudrate


class _RecI2C:
    def __init__(self, bus, out):
        self.b = bus
        self.out = out

    def readfrom_mem_into(self, addr, memaddr, buf):
        r = self.b.readfrom_mem_into(addr, memaddr, buf)
        self.out += b"i" + struct.pack("<BBH", addr, memaddr, len(buf)) + bytes(buf)
        return r

    def readfrom_mem(self, addr, memaddr, n):
        buf = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        r = self.b.writeto_mem(addr, memaddr, buf)
        self.out += b"w" + struct.pack("<BBH", addr, memaddr, len(buf)) + bytes(buf)
        return r


class _RecPower:
    def __init__(self, p, out):
        self.p = p
        self.out = out

    def ignition(self):
        v = self.p.ignition()
        self.out += b"g" + struct.pack("<B", v)
        return v

    def supply_mv(self):
        v = self.p.supply_mv()
        self.out += b"v" + struct.pack("<I", v)
        return v


class _RecClock:
    def __init__(self, c, out):
        self.c = c
        self.out = out

    def ticks_ms(self):
        v = self.c.ticks_ms()
        self.out += b"c" + struct.pack("<I", v)
        return v


def record_io(trace, out_path):
    """The firmware's side of a replay: the trace played under CPython by the real harness
    (hw/replay.py, firmware/replay_main.run's loop), every value the firmware read from its board
    (clock, GNSS UART, I2C, power) and the loop's power_on / step / power_off written in call order
    to out_path for tools/bench/firmware_cpu_vm.py. Returns the run's summary (the VM must give the same)."""
    from firmware import replay_main as R
    from firmware.config import Config
    from firmware.runner import Board, Runner
    from hw.replay import ReplaySession

    sess = ReplaySession(trace)
    out = bytearray()
    powered = "power" in sess.header
    board = Board(_RecClock(sess.clock, out), _RecUART(sess.gnss_uart, out), _RecI2C(sess.i2c, out),
                  _RecPower(sess.power, out) if powered else None,
                  os.path.join(os.path.dirname(out_path), "rec-flash"), name="replay")
    os.makedirs(board.fs_root)
    runner = Runner(board, Config(None), overrides={"gnss_baud": sess.gnss_uart.baudrate})
    out += b"O"
    runner.power_on()
    t = 0
    while not sess.done:
        t += R._STEP_MS
        sess.advance(t)
        # replay_main.supply_step, with the loop's events recorded
        if powered and sess.power.supply_mv() < R._POWER_OFF_MV:
            if runner.box is not None:
                out += b"F"
                runner.power_off()
            R.discard_rx(sess.gnss_uart)
            continue
        if runner.box is None:
            out += b"O"
            runner.power_on()
        out += b"S"
        runner.step()
    out += b"F"
    runner.power_off()
    hdr = json.dumps({"power": powered, "gnss_baud": sess.gnss_uart.baudrate, "box_ms": t}).encode()
    with open(out_path, "wb") as f:
        f.write(b"H" + struct.pack("<H", len(hdr)) + hdr + bytes(out))
    return json.loads(json.dumps(R.merge(runner.summaries, runner.power_ons - 1)))


def _vm(code, heap, timeout=600):
    from tools.trace.replay import micropython_binary

    p = subprocess.run([micropython_binary(), "-X", "heapsize=%d" % heap, "-c", code], cwd=ROOT,
                       env=dict(os.environ, MICROPYPATH=ROOT), capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode:
        tail = ((p.stdout + p.stderr).strip().splitlines() or ["?"])[-1]
        raise RuntimeError("firmware CPU run failed in the VM: %s" % tail)
    return json.loads(p.stdout.strip().splitlines()[-1])


_VM_HEAP = 2 * 1024 * 1024  # the VM heap beside the recording (what the old loop ran with)


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def cpu_factor(trace, runs=5, profile=True):
    """Box seconds per firmware CPU second in the VM (module docstring): median of `runs` VM runs,
    spread as min..max; the bytes allocated per box second and the exclusive time per subsystem
    (instrumented run)."""
    with tempfile.TemporaryDirectory(prefix="paydbox-cpu-") as tmp:
        rec = os.path.join(tmp, "io.rec")
        ref = record_io(trace, rec)
        heap = _VM_HEAP + os.path.getsize(rec)
        facs = []
        fw = []
        peers = []
        box_s = None
        for i in range(runs):
            root = os.path.join(tmp, "flash%d" % i)
            os.mkdir(root)
            r = _vm("import tools.bench.firmware_cpu_vm as c; c.main(%r, %r)" % (rec, root), heap)
            if r["summary"] != ref:
                raise RuntimeError("the firmware's summary in the VM differs from the CPython replay's")
            box_s = r["box_ms"] / 1000.0
            cpu = r["cpu_s"] - r["peers_cpu_s"]
            fw.append(cpu)
            peers.append(r["peers_cpu_s"])
            facs.append(box_s / cpu)
        cpu_med = _median(fw)
        out = {"firmware_cpu_factor_box_s_per_cpu_s": round(box_s / cpu_med, 1),
               "firmware_cpu_factor_min": round(min(facs), 1),
               "firmware_cpu_factor_max": round(max(facs), 1),
               "firmware_cpu_runs": runs,
               "firmware_cpu_us_per_box_s": round(cpu_med * 1e6 / box_s, 1),
               "firmware_cpu_us_per_pass": round(cpu_med * 1e6 / r["steps"], 1),
               "peers_cpu_us_per_box_s_subtracted": round(_median(peers) * 1e6 / box_s, 1),
               "bundled_drive_box_s": box_s}
        root = os.path.join(tmp, "flash-alloc")
        os.mkdir(root)
        al = _vm("import tools.bench.firmware_cpu_vm as c; c.alloc(%r, %r)" % (rec, root), heap)
        out["firmware_alloc_bytes_per_box_s"] = round(al["alloc_bytes"] / box_s)
        if profile:
            root = os.path.join(tmp, "flash-prof")
            os.mkdir(root)
            p = _vm("import tools.bench.firmware_cpu_vm as c; c.profile(%r, %r)" % (rec, root), heap)
            # shares of the instrumented firmware time, in us of the median (uninstrumented) CPU figure
            tot = float(sum(p["us"].values()))
            out["profile_instrumented_wall_us_per_box_s"] = round(tot / box_s)
            out["profile_wrapper_us_per_call"] = p["wrapper_us_per_call"]
            for k in sorted(p["us"], key=lambda k: -p["us"][k]):
                # (a residue the calibrated wrapper cost turns below 0 is shown as 0)
                sh = max(0.0, p["us"][k]) / tot
                out["profile: %s (us per box s, share)" % k] = "%.0f (%.1f %%)" % (
                    sh * cpu_med * 1e6 / box_s, 100.0 * sh)
    return out


def heap(trace, quick=False):
    from tools.trace.replay import ReplayError, replay_trace

    ref = replay_trace(trace, "cpython")
    rep = replay_trace(trace, "micropython", board_heap="512K")
    rep_heap = rep.pop("heap")
    out = {"image_bytes": rep_heap["image_bytes"], "firmware_heap_peak_bytes": rep_heap["peak_bytes"],
           "harness_heap_bytes": rep_heap["harness_bytes"],
           "board_heap_512k_same_json_as_cpython":
               json.dumps(rep, sort_keys=True) == json.dumps(ref, sort_keys=True)}
    for k in (96, 64):
        try:
            r = replay_trace(trace, "micropython", board_heap="%dK" % k)
            r.pop("heap")
            out["board_heap_%dk_same_json_as_cpython" % k] = (json.dumps(r, sort_keys=True)
                                                               == json.dumps(ref, sort_keys=True))
        except ReplayError as e:
            out["board_heap_%dk_same_json_as_cpython" % k] = False
            out["board_heap_%dk_error" % k] = str(e).splitlines()[0][-90:]
    if not quick:  # smallest heap that completes with the CPython report, between the live peak and 256 KiB
        out["board_heap_min_kib"] = _smallest_heap_kib(trace, json.dumps(ref, sort_keys=True),
                                                       rep_heap["peak_bytes"] // 1024)
    return out


def _smallest_heap_kib(path, ref, lo_kib, hi_kib=256, step=1):
    """Smallest --board-heap (KiB, `step` bisection) between lo and hi with which the drive completes
    with the CPython report (ref: its JSON). Where objects land in the heap moves the edge by a few
    KiB with any change, and a size just above it may still fail (tests/test_board_heap.py holds the
    CI limits a few KiB above it)."""
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


def crash_heap(tag="drive_sim_crash", quick=False):
    """The simulator's crash drive (seed 3, 198 s, 100 Hz accelerometer): the firmware's heap peak and
    smallest heap when a crash record (its trace copy, a block encoder sized for it) comes on top."""
    from tools.sim.engine import simulate
    from tools.trace.replay import replay_trace

    out = {}
    with tempfile.TemporaryDirectory(prefix="paydbox-crash-") as d:
        path = os.path.join(d, "crash-3.jsonl.gz")
        simulate(path, "crash", seed=3)
        ref = json.dumps(replay_trace(path, "cpython"), sort_keys=True)
        rep = replay_trace(path, "micropython", board_heap="512K")
        h = rep.pop("heap")
        out[tag + "_firmware_heap_peak_bytes"] = h["peak_bytes"]
        out[tag + "_board_heap_512k_same_json_as_cpython"] = json.dumps(rep, sort_keys=True) == ref
        if not quick:
            out[tag + "_board_heap_min_kib"] = _smallest_heap_kib(path, ref, h["peak_bytes"] // 1024)
    return out


def run(quick=False, heap_only=False):
    res = {} if heap_only else cpu_factor(BUNDLED, runs=1 if quick else 5, profile=not quick)
    res.update(heap(BUNDLED, quick))
    if not quick:
        res.update(long_heap(3 * 3600, 0, "drive_3h_1hz"))
        res.update(long_heap(1200, 100, "drive_20min_100hz"))
        res.update(crash_heap())
    return res


if __name__ == "__main__":
    for k, v in run(quick="--quick" in sys.argv, heap_only="--heap-only" in sys.argv).items():
        print("%s: %s" % (k, v))
