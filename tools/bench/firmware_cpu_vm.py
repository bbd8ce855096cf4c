# Firmware CPU cost inside the MicroPython VM (tools/bench/bench_firmware.py runs it; not part of any image).
#
# The firmware is driven by a recording of every value it read from its board on a CPython replay of
# the same trace (tools/bench/bench_firmware.record_io: clock, GNSS UART, I2C, power, and the main loop's
# power_on / step / power_off), served back by trivial peers that copy bytes out of one buffer, so
# the harness's own models (UART wire model, LIS3DH register model, trace playback) never run here.
# The recording is exact: every peer call checks it is the call the recording has next, and the run's
# summary must equal the CPython one (the host checks), so the firmware did the same work.
#
# Time is process CPU time (time.clock(): user + system of this process, 1 ms steps) summed over the
# main-loop passes (boot and shutdown excluded: a few segments, so the 1 ms steps cost <= ~0.1 %).
# The peers' share of that time is measured by a second pass over the same recording that makes the
# same peer calls with no firmware, minus a third that only walks the recording: it is subtracted.
#
#   micropython -X heapsize=... -c "import tools.bench.firmware_cpu_vm as c; c.main(REC, FS_ROOT)"
#   (one JSON line); c.profile(REC, FS_ROOT): exclusive process CPU per subsystem under
#   instrumentation; c.alloc(REC, FS_ROOT): the bytes the passes allocate
import gc
import json
import sys
import time

from firmware.config import Config
from firmware.runner import Board, Runner


class Diverged(Exception):
    """The firmware asked its board for something the recording does not have next."""


class Rec:
    """The recording: one bytes blob of (kind byte, payload) entries, read with a cursor."""

    def __init__(self, path):
        f = open(path, "rb")
        self.b = f.read()
        f.close()
        self.mv = memoryview(self.b)
        self.p = 0
        self.n = 0  # entries consumed (for the error message)

    def take(self, kind):
        b = self.b
        p = self.p
        if p >= len(b) or b[p] != kind:
            raise Diverged("call #%d: firmware asked for %r, the recording has %r at byte %d"
                           % (self.n, chr(kind), chr(b[p]) if p < len(b) else "end", p))
        self.n += 1
        self.p = p + 1
        return p + 1

    def u16(self, p):
        b = self.b
        return b[p] | (b[p + 1] << 8)

    def u32(self, p):
        b = self.b
        return b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)


class Clock:
    def __init__(self, rec):
        self.r = rec

    def ticks_ms(self):
        r = self.r
        p = r.take(0x63)  # 'c'
        r.p = p + 4
        return r.u32(p)


class UART:
    def __init__(self, rec):
        self.r = rec
        self.baudrate = 0

    def any(self):
        r = self.r
        p = r.take(0x61)  # 'a'
        r.p = p + 2
        return r.u16(p)

    def readinto(self, buf, n=-1):
        r = self.r
        p = r.take(0x72)  # 'r'
        k = r.u16(p)
        if k == 0xFFFF:
            r.p = p + 2
            return None
        buf[0:k] = r.mv[p + 2:p + 2 + k]
        r.p = p + 2 + k
        return k

    def read(self, n=-1):
        r = self.r
        p = r.take(0x52)  # 'R'
        k = r.u16(p)
        r.p = p + 2 + (0 if k == 0xFFFF else k)
        return None if k == 0xFFFF else bytes(r.mv[p + 2:p + 2 + k])

    def write(self, b):
        return len(b)

    def init(self, baudrate=None, **kw):
        if baudrate:
            self.baudrate = baudrate


class I2C:
    def __init__(self, rec):
        self.r = rec

    def readfrom_mem_into(self, addr, memaddr, buf):
        r = self.r
        p = r.take(0x69)  # 'i'
        k = r.u16(p + 2)
        if r.b[p] != addr or r.b[p + 1] != memaddr or k != len(buf):
            raise Diverged("call #%d: I2C read 0x%02x/0x%02x of %d bytes, recorded 0x%02x/0x%02x of %d"
                           % (r.n, addr, memaddr, len(buf), r.b[p], r.b[p + 1], k))
        buf[0:k] = r.mv[p + 4:p + 4 + k]
        r.p = p + 4 + k

    def readfrom_mem(self, addr, memaddr, n):
        buf = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        r = self.r
        p = r.take(0x77)  # 'w'
        k = r.u16(p + 2)
        r.p = p + 4 + k


class Power:
    def __init__(self, rec):
        self.r = rec

    def ignition(self):
        r = self.r
        p = r.take(0x67)  # 'g'
        r.p = p + 1
        return r.b[p]

    def supply_mv(self):
        r = self.r
        p = r.take(0x76)  # 'v'
        r.p = p + 4
        return r.u32(p)


_SKIP = {0x63: 4, 0x61: 2, 0x67: 1, 0x76: 4}


def _header(rec):
    """The recording's first entry: 'H' + JSON (power inputs present, GNSS baud, box ms)."""
    p = rec.take(0x48)
    k = rec.u16(p)
    rec.p = p + 2 + k
    return json.loads(bytes(rec.mv[p + 2:p + 2 + k]))


def _board(rec, hdr, fs_root):
    return Board(Clock(rec), UART(rec), I2C(rec), Power(rec) if hdr["power"] else None, fs_root,
                 name="cpu-bench")


def _loop(rec, runner, on_step=None):
    """Main loop as recorded: 'O' power_on, 'S' one pass, 'F' power_off. Returns (CPU s of the
    passes, passes)."""
    clock = time.clock
    b = rec.b
    cpu = 0.0
    steps = 0
    c0 = None
    while rec.p < len(b):
        k = b[rec.p]
        if k == 0x53:  # 'S'
            rec.p += 1
            if c0 is None:
                c0 = clock()
            runner.step()
            steps += 1
            if on_step is not None:
                on_step()
            continue
        if c0 is not None:
            cpu += clock() - c0
            c0 = None
        rec.p += 1
        if k == 0x4F:  # 'O'
            runner.power_on()
        elif k == 0x46:  # 'F'
            runner.power_off()
        else:
            raise Diverged("byte %d: loop event %r where power_on/step/power_off was expected"
                           % (rec.p - 1, chr(k)))
    if c0 is not None:
        cpu += clock() - c0
    return cpu, steps


def _peer_pass(path, calls):
    """CPU s of the peers alone: the same peer calls, in order, with no firmware (calls=True), or
    only the walk over the recording (calls=False), over the main-loop passes."""
    rec = Rec(path)
    _header(rec)  # consumes the recording header
    clock, uart, i2c, power = Clock(rec), UART(rec), I2C(rec), Power(rec)
    bufs = {}
    b = rec.b
    n = len(b)
    ubuf = bytearray(512)
    cpu = 0.0
    c0 = None
    inside = False
    while rec.p < n:
        p = rec.p
        k = b[p]
        if k == 0x53:
            inside = True
            if c0 is None:
                c0 = time.clock()
            rec.p = p + 1
            continue
        if k == 0x4F or k == 0x46:
            if c0 is not None:
                cpu += time.clock() - c0
                c0 = None
            inside = False
            rec.p = p + 1
            continue
        if not inside or not calls:
            # boot / shutdown calls, or the walk alone: skip the entry
            if k in _SKIP:
                rec.p = p + 1 + _SKIP[k]
            elif k == 0x72 or k == 0x52:
                m = rec.u16(p + 1)
                rec.p = p + 3 + (0 if m == 0xFFFF else m)
            else:  # 'i' 'w'
                rec.p = p + 5 + rec.u16(p + 3)
            rec.n += 1
            continue
        if k == 0x63:
            clock.ticks_ms()
        elif k == 0x61:
            uart.any()
        elif k == 0x72:
            uart.readinto(ubuf)
        elif k == 0x52:
            uart.read()
        elif k == 0x67:
            power.ignition()
        elif k == 0x76:
            power.supply_mv()
        elif k == 0x69:
            m = rec.u16(p + 3)
            buf = bufs.get(m)
            if buf is None:
                buf = bufs[m] = bytearray(m)
            i2c.readfrom_mem_into(b[p + 1], b[p + 2], buf)
        else:
            i2c.writeto_mem(b[p + 1], b[p + 2], b"")
    if c0 is not None:
        cpu += time.clock() - c0
    return cpu


def run(path, fs_root, on_step=None):
    rec = Rec(path)
    hdr = _header(rec)
    runner = Runner(_board(rec, hdr, fs_root), Config(None), overrides={"gnss_baud": hdr["gnss_baud"]})
    cpu, steps = _loop(rec, runner, on_step)
    from firmware.replay_main import merge

    return hdr, cpu, steps, merge(runner.summaries, runner.power_ons - 1)


def main(path, fs_root):
    out = {}
    hdr, cpu, steps, summary = run(path, fs_root)
    out["box_ms"] = hdr["box_ms"]
    out["steps"] = steps
    out["cpu_s"] = cpu
    out["summary"] = summary
    gc.collect()
    out["peers_cpu_s"] = _peer_pass(path, True) - _peer_pass(path, False)
    print(json.dumps(out))


# ------------------------------------------------------------------ profile (instrumented)
_OVER = [0]  # wrapper cost outside the child's window, 0.01 us (calibrated by _overhead)


def _wrap(obj, name, label, acc, stack):
    """obj.name timed: its exclusive wall time (minus the instrumented calls it made, and the
    wrappers' own cost outside them, calibrated by _overhead) added to acc[label], 0.01 us units."""
    f = getattr(obj, name)
    if label not in acc:
        acc[label] = [0, 0]
    a = acc[label]
    now = time.ticks_us
    diff = time.ticks_diff
    over = _OVER

    def w(*args):
        t0 = now()
        stack.append(0)
        r = f(*args)
        dt = diff(now(), t0) * 100
        a[0] += dt - stack.pop()
        a[1] += 1
        stack[-1] += dt + over[0]
        return r

    setattr(obj, name, w)


class _Nop:
    def f(self, x):
        return x


def _overhead(n=50000):
    """(out, in): wall time (0.01 us) a wrapper adds per call outside the child's window (its
    caller is charged that much less) and inside it (taken off the wrapped function), calibrated on
    a no-op method; best of 5."""
    best = None
    _OVER[0] = 0
    diff = time.ticks_diff
    now = time.ticks_us
    for _ in range(5):
        o = _Nop()
        t0 = now()
        for i in range(n):
            o.f(i)
        raw = diff(now(), t0) * 100
        acc = {}
        st = [0]
        _wrap(o, "f", "x", acc, st)
        t0 = now()
        for i in range(n):
            o.f(i)
        wr = diff(now(), t0) * 100
        # per call: raw = loop + call + body; wr = loop + call + outside + window; the window
        # (st[0]) = inside + call + body. The caller is charged `outside` too much, the wrapped
        # function `inside + call` (the call is its caller's cost when not instrumented)
        v = ((wr - st[0] - raw) // n, st[0] // n)
        if best is None or v[0] + v[1] < best[0] + best[1]:
            best = v
    return best


def _instrument(box, acc, stack):
    W = _wrap
    W(box.parser, "feed", "nmea: bytes into lines (feed)", acc, stack)
    W(box.parser, "_end_line", "nmea: checksum, decode, epoch", acc, stack)
    W(box.parser, "on_fix", "box: per fix (_on_fix)", acc, stack)
    W(box.accel, "read_fifo", "accel: FIFO read + mg conversion", acc, stack)
    if box.motion is not None:
        m = box.motion
        W(m, "feed", "motion: feed (per sample)", acc, stack)
        W(m, "poll", "motion: poll, on_fix, calib update", acc, stack)
        W(m, "on_fix", "motion: poll, on_fix, calib update", acc, stack)
        W(m._lc, "solve", "calib: solve (lag bank fits)", acc, stack)
        W(m._lc, "pair", "calib: pair (lagged means, sums)", acc, stack)
    W(box.odo, "on_fix", "odometer", acc, stack)
    for n in ("on_fix", "tick", "on_power"):
        W(box.trip, n, "trip", acc, stack)
    W(box, "_emit", "records: emit (seq, odometer)", acc, stack)
    W(box, "_save_state", "state save (json, flash)", acc, stack)
    W(box.store, "append", "store: append (flash)", acc, stack)
    new_block = box._new_block

    def nb(*args):
        new_block(*args)
        if not hasattr(box.enc, "_pw"):
            box.enc._pw = 1
            W(box.enc, "add", "codec: encode record", acc, stack)
            W(box.enc, "finish", "codec: encode record", acc, stack)

    box._new_block = nb
    W(box, "step", "box: step (the rest)", acc, stack)


def profile(path, fs_root):
    """Exclusive wall time per subsystem (the time inside it minus the instrumented calls it made;
    the wrappers' own cost, calibrated on a no-op, taken off). Wall, not process CPU: the CPU clock
    is a system call of ~8 us here, more than most calls it would time; a preemption lands in
    whatever runs, so the shares hold and bench_firmware scales them to the CPU figure. Peers are
    the recording's (no harness models). One JSON line (us)."""
    over, over_in = _overhead()
    _OVER[0] = over
    acc = {}
    stack = [0]
    rec = Rec(path)
    hdr = _header(rec)
    runner = Runner(_board(rec, hdr, fs_root), Config(None), overrides={"gnss_baud": hdr["gnss_baud"]})
    done = []

    def on_step():
        if runner.box is not None and runner.box not in done:
            done.append(runner.box)
            _instrument(runner.box, acc, stack)

    # the first pass is not instrumented (the Box is instrumented after it)
    cpu, steps = _loop(rec, runner, on_step)
    calls = {k: v[1] for k, v in acc.items()}
    print(json.dumps({"box_ms": hdr["box_ms"], "steps": steps,
                      "wrapper_us_per_call": (over + over_in) / 100.0,
                      "us": {k: (v[0] - v[1] * over_in) / 100.0 for k, v in acc.items()}, "calls": calls}))


def alloc(path, fs_root):
    """Bytes the passes allocate (gc.mem_alloc before and after each pass, not instrumented;
    passes with a collection are left out and the rest scaled up). One JSON line."""
    rec = Rec(path)
    hdr = _header(rec)
    runner = Runner(_board(rec, hdr, fs_root), Config(None), overrides={"gnss_baud": hdr["gnss_baud"]})
    al = [0, 0, -1]  # bytes allocated in passes without a collection, those passes, last mem_alloc

    def on_step():
        m = gc.mem_alloc()
        if al[2] >= 0 and m >= al[2]:
            al[0] += m - al[2]
            al[1] += 1
        al[2] = gc.mem_alloc()

    cpu, steps = _loop(rec, runner, on_step)
    print(json.dumps({"box_ms": hdr["box_ms"], "steps": steps, "alloc_bytes": al[0] * steps // max(1, al[1]),
                      "alloc_steps": al[1]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
