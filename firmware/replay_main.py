# Replays a recorded trace through the real firmware (Box) in accelerated time.
# The same code runs under CPython (imported by tools/trace/replay.py) and inside the MicroPython VM
# (`micropython -c "import firmware.replay_main as r; r.main(trace, root)"`), so both runtimes give the
# same result; it prints one JSON line of ints and strings.
import json

from hw.replay import ReplaySession

# the firmware (firmware.runner, firmware.config) is imported by the functions that run it, so that
# importing this module alone costs only the harness's heap (`paydbox replay --board-heap`)

_STEP_MS = 100          # main-loop period in box time
_POWER_OFF_MV = 6000    # below this the box is unpowered (unplugged or cut)


def replay_board(sess, fs_root, link_uart=None, console=None):
    """The Board of a replayed box: the trace's clock, GNSS UART, I2C accelerometer and power."""
    from firmware.runner import Board

    return Board(sess.clock, sess.gnss_uart, sess.i2c, sess.power if "power" in sess.header else None, fs_root,
                 link_uart=link_uart, console=console, name="replay")


def supply_step(runner, sess):
    """Power as the trace has it: the supply falling below 6 V is a power cut (the Box commits and is
    gone; an unpowered MCU's UART receives nothing), its return a boot. Returns 1 when powered."""
    if runner.board.power is not None and sess.power.supply_mv() < _POWER_OFF_MV:
        runner.power_off()
        discard_rx(sess.gnss_uart)
        return 0
    if runner.box is None:
        runner.power_on()
    return 1


def run(trace_path, fs_root, config=None, step_ms=_STEP_MS, on_step=None):
    """config: settings on top of the schema defaults (installer keys and tunables)."""
    # the harness's own buffers (trace reader, UART ring, LIS3DH model) first, in the heap as the
    # harness-alone run of `--board-heap` measured them, then the firmware's modules
    sess = ReplaySession(trace_path)
    from firmware.config import Config
    from firmware.runner import Runner

    over = {"gnss_baud": sess.gnss_uart.baudrate}  # the box as installed where the trace was recorded
    if config:
        over.update(config)
    runner = Runner(replay_board(sess, fs_root), Config(None), overrides=over)
    runner.power_on()
    t = 0
    while not sess.done:
        t += step_ms
        sess.advance(t)
        if supply_step(runner, sess):
            runner.step()
        if on_step is not None:
            on_step()
    runner.power_off()
    return merge(runner.summaries, runner.power_ons - 1)


def discard_rx(uart):
    while uart.any():
        uart.read(uart.any())


def merge(summaries, reboots):
    last = summaries[-1]
    out = dict(last)
    trips = []
    counts = {"count": 0, "bytes": 0, "pos": 0, "blocks": 0}
    gnss = {}
    odo = {}
    tamper = []
    events = []
    faults = {}
    for s in summaries:
        tamper.extend(s["tamper"])
        events.extend(s.get("events", ()))
        trips.extend(s["trips"])
        for k in counts:
            counts[k] += s["records"][k]
        for k, v in s["gnss"].items():
            gnss[k] = gnss.get(k, 0) + v
        for k, v in s["odometer"].items():
            odo[k] = odo.get(k, 0) + v
        for k, v in s.get("faults", {}).items():
            faults[k] = faults.get(k, 0) + v
    out["trips"] = trips
    out["records"] = counts
    out["gnss"] = gnss
    out["odometer"] = odo
    out["reboots"] = reboots
    out["tamper"] = tamper
    out["events"] = events
    out["faults"] = faults
    return out


def main(trace_path, fs_root, config_json=None):
    cfg = json.loads(config_json) if config_json else None
    print(json.dumps(run(trace_path, fs_root, cfg)))


def heap_main(trace_path, fs_root, config_json=None):
    """`paydbox replay --board-heap`: the replay with the live GC heap measured after every pass
    (MicroPython only). Prints the usual JSON line with "heap_live_peak" added.
    The peak is the largest live heap (gc.collect() then gc.mem_alloc()) after any pass; a pass whose
    allocated bytes (live + garbage) stay at or below the peak so far cannot raise it, so the heap is
    collected only when they exceed it (the same peak, without a collection every pass)."""
    import gc

    cfg = json.loads(config_json) if config_json else None
    peak = [0]

    def sample():
        if gc.mem_alloc() > peak[0]:
            gc.collect()
            a = gc.mem_alloc()
            if a > peak[0]:
                peak[0] = a

    out = run(trace_path, fs_root, cfg, on_step=sample)
    out["heap_live_peak"] = peak[0]
    print(json.dumps(out))


class _TimedUART:
    """The replay UART, with the time spent inside it (the harness's wire model) added up."""

    def __init__(self, uart, acc):
        self.u = uart
        self.acc = acc

    def any(self):
        t0 = _ticks_us()
        n = self.u.any()
        self.acc[0] += _ticks_diff(_ticks_us(), t0)
        return n

    def readinto(self, buf, n=-1):
        t0 = _ticks_us()
        k = self.u.readinto(buf, n)
        self.acc[0] += _ticks_diff(_ticks_us(), t0)
        return k

    def read(self, n=-1):
        t0 = _ticks_us()
        d = self.u.read(n)
        self.acc[0] += _ticks_diff(_ticks_us(), t0)
        return d

    def write(self, b):
        return self.u.write(b)

    def init(self, baudrate=None, **kw):
        self.u.init(baudrate=baudrate)


class _TimedI2C:
    """The LIS3DH model, with the time spent inside it (the harness's chip model) added up."""

    def __init__(self, bus, acc):
        self.b = bus
        self.acc = acc

    def readfrom_mem_into(self, addr, memaddr, buf):
        t0 = _ticks_us()
        try:
            return self.b.readfrom_mem_into(addr, memaddr, buf)
        finally:
            self.acc[0] += _ticks_diff(_ticks_us(), t0)

    def readfrom_mem(self, addr, memaddr, n):
        buf = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        t0 = _ticks_us()
        try:
            return self.b.writeto_mem(addr, memaddr, buf)
        finally:
            self.acc[0] += _ticks_diff(_ticks_us(), t0)


def _ticks_us():
    import time

    return time.ticks_us()


def _ticks_diff(a, b):
    import time

    return time.ticks_diff(a, b)


def cpu_main(trace_path, fs_root):
    """Firmware CPU cost (MicroPython): wall us inside Runner.step() (the main-loop pass: Box and
    console), minus the us the pass spent inside the harness's UART and LIS3DH models; the trace
    playback (advance) is never timed. Also the loop's process CPU and wall ms, so the host can turn
    the wall share into CPU time on a loaded machine. Prints one JSON line."""
    import time

    from firmware.config import Config
    from firmware.runner import Runner

    sess = ReplaySession(trace_path)
    acc = [0]
    board = replay_board(sess, fs_root)
    board.gnss_uart = _TimedUART(sess.gnss_uart, acc)
    board.i2c = _TimedI2C(sess.i2c, acc)
    runner = Runner(board, Config(None), overrides={"gnss_baud": sess.gnss_uart.baudrate})
    runner.power_on()
    t = 0
    step_us = 0
    steps = 0
    cpu0 = _proc_cpu_ms()
    w0 = time.ticks_ms()
    while not sess.done:
        t += _STEP_MS
        sess.advance(t)
        if supply_step(runner, sess):
            t0 = time.ticks_us()
            runner.step()
            step_us += time.ticks_diff(time.ticks_us(), t0)
            steps += 1
    loop_cpu_ms = _proc_cpu_ms() - cpu0
    loop_wall_ms = time.ticks_diff(time.ticks_ms(), w0)
    runner.power_off()
    print(json.dumps({"box_ms": t, "step_us": step_us, "harness_us": acc[0], "steps": steps,
                      "loop_cpu_ms": loop_cpu_ms, "loop_wall_ms": loop_wall_ms}))


def _proc_cpu_ms():
    """This process's CPU time (user + system, ms) from /proc/self/stat (Linux; 10 ms ticks)."""
    f = open("/proc/self/stat")
    parts = f.read().rsplit(")", 1)[1].split()
    f.close()
    return (int(parts[11]) + int(parts[12])) * 10
