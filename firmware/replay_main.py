# Replays a recorded trace through the real firmware (Box) in accelerated time.
# The same code runs under CPython (imported by tools/trace/replay.py) and inside the MicroPython VM
# (`micropython -c "import firmware.replay_main as r; r.main(trace, root)"`), so both runtimes give the
# same result; it prints one JSON line of ints and strings.
import json

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(heap_free_at_start=0, heap_harness=0, heap_live_peak=0)

try:  # not hw.compat: under --board-heap it would load before the firmware and count as harness
    from micropython import const
except ImportError:
    from hw.compat import const

# the harness (hw.replay) and the firmware (firmware.runner, firmware.config) are imported by the
# functions that run them: `paydbox replay --board-heap` (pipe_main) runs the harness on the host and
# loads only the firmware here

_STEP_MS = const(100)          # main-loop period in box time
_POWER_OFF_MV = const(6000)    # below this the box is unpowered (unplugged or cut)


def replay_board(sess, fs_root, link_uart=None, console=None, agent_rail=None):
    """The Board of a replayed box: the trace's clock, GNSS UART, I2C accelerometer and power. A trace
    that models sleep (header "sleep", docs/trace-format.md) gives the board its sleep primitive (the
    clock jumps to the next wake-up) and the GNSS receiver's power switch."""
    from firmware.runner import Board

    sleeps = "sleep" in sess.header and "power" in sess.header
    power = sess.power if "power" in sess.header else None
    return Board(sess.clock, sess.gnss_uart, sess.i2c, power, fs_root, link_uart=link_uart, console=console,
                 name="replay", sleep=sess.sleep if sleeps else None, agent_rail=agent_rail,
                 gnss_power=sess.gnss_power if sleeps else None)


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


def run(trace_path, fs_root, config=None, step_ms=_STEP_MS, on_step=None, agent=None):
    """config: settings on top of the schema defaults (installer keys and tunables). agent: a
    simulated edge agent on the link (host only: .uart the box's end, .rail(on), .step(t_ms))."""
    # the harness's own buffers (trace reader, UART ring, LIS3DH model) first, in the heap as the
    # harness-alone run of `--board-heap` measured them, then the firmware's modules
    from hw.replay import ReplaySession

    sess = ReplaySession(trace_path)
    from firmware.config import Config
    from firmware.runner import Runner

    over = {"gnss_baud": sess.gnss_uart.baudrate}  # the box as installed where the trace was recorded
    if config:
        over.update(config)
    board = replay_board(sess, fs_root, link_uart=agent.uart if agent else None,
                         agent_rail=agent.rail if agent else None)
    if agent is not None:
        agent.clock = sess.clock
    runner = Runner(board, Config(None), overrides=over)
    runner.power_on()
    t = 0
    while not sess.done:
        t = sess.clock.now + step_ms  # a sleep jumped the clock
        sess.advance(t)
        if agent is not None:
            agent.step(t)
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


# ---- `paydbox replay --board-heap`: the firmware alone in the VM, the harness on the host ----------
# The host (tools/trace/replay.py run_board_heap) plays the trace with the real harness (hw/replay.py
# under CPython: trace reader, UART wire model, LIS3DH register model, power) and drives this loop
# over the VM's stdin/stdout. Every board call of the firmware is one request to the host, answered
# from the host's models; the peers below hold fixed buffers made before the firmware loads and
# allocate nothing per call (answers are read into the firmware's own buffers), so the harness
# neither grows nor fragments the firmware's heap.
#   VM -> host: 8 bytes kind, a, b, c, n (u32 LE), then n payload bytes for the writes:
#     a any()   r readinto(n) / R read(n)   w write(n bytes)   b init(baudrate=n)
#     i readfrom_mem_into(addr a, memaddr b, n)   W writeto_mem(addr a, memaddr b, n bytes)
#     s sleep(ms n, ign a, accel b)   p gnss_power(a)   k the pass (or the boot) is done
#   host -> VM: 12 bytes kind, c, d, 0, x (u32 LE), y (u32 LE), then the bytes read:
#     S a pass at box time x, supply y mV, ignition c (the first: the boot)   E the end of the trace
#     = the answer (any: x; reads: x = bytes that follow, 0xFFFFFFFF none; I2C: c = errno, 0 ok)
#     Z sleep's answer: c 0 timer / 1 ign / 2 accel, box time x, supply y mV, ignition d
_NONE = 0xFFFFFFFF


class HostGone(Exception):
    """The host end of the pipe closed (not an OSError: no firmware guard may take it for a bus fault)."""


_WHY = ("timer", "ign", "accel")


class _Pipe:
    def __init__(self):
        import sys

        self.i = sys.stdin.buffer
        self.o = sys.stdout.buffer
        self.req = bytearray(8)
        self.rep = bytearray(12)
        self.now = 0  # box ms (the clock)
        self.mv = 0
        self.ign = 1

    def call(self, kind, a=0, b=0, c=0, n=0):
        r = self.req
        r[0] = kind
        r[1] = a
        r[2] = b
        r[3] = c
        r[4] = n & 0xFF
        r[5] = (n >> 8) & 0xFF
        r[6] = (n >> 16) & 0xFF
        r[7] = (n >> 24) & 0xFF
        self.o.write(r)

    def fill(self, buf, n):
        """n bytes from the host into buf[0:n] (a MicroPython stream's readinto(buf, n) reads all n
        unless the stream ends, and allocates nothing)."""
        if n and self.i.readinto(buf, n) != n:
            raise HostGone()

    def answer(self):
        """The host's next 12-byte message: its kind (self.rep holds it)."""
        if self.i.readinto(self.rep) != 12:
            raise HostGone()
        return self.rep[0]

    def x(self):
        r = self.rep
        return r[4] | (r[5] << 8) | (r[6] << 16) | (r[7] << 24)

    def y(self):
        r = self.rep
        return r[8] | (r[9] << 8) | (r[10] << 16) | (r[11] << 24)

    # ---- the clock and the power inputs: set by each pass's message
    def ticks_ms(self):
        return self.now

    def ignition(self):
        return self.ign

    def supply_mv(self):
        return self.mv

    def sleep(self, ms, ign=1, accel=1):
        self.call(0x73, 1 if ign else 0, 1 if accel else 0, 0, ms)  # 's'
        self.answer()
        self.now = self.x()
        self.mv = self.y()
        self.ign = self.rep[2]
        return _WHY[self.rep[1]]

    def gnss_power(self, on):
        self.call(0x70, 1 if on else 0)  # 'p'


class _PipeUART:
    def __init__(self, pipe, baudrate):
        self.p = pipe
        self.baudrate = baudrate

    def any(self):
        p = self.p
        p.call(0x61)  # 'a'
        p.answer()
        return p.x()

    def readinto(self, buf, n=-1):
        p = self.p
        k = len(buf) if n < 0 or n > len(buf) else n
        p.call(0x72, 0, 0, 0, k)  # 'r'
        p.answer()
        k = p.x()
        if k == _NONE:
            return None
        p.fill(buf, k)
        return k

    def read(self, n=-1):
        p = self.p
        p.call(0x52, 0, 0, 0, _NONE if n < 0 else n)  # 'R'
        p.answer()
        k = p.x()
        if k == _NONE:
            return None
        b = bytearray(k)
        p.fill(b, k)
        return bytes(b)

    def write(self, b):
        p = self.p
        p.call(0x77, 0, 0, 0, len(b))  # 'w'
        p.o.write(b)
        return len(b)

    def init(self, baudrate=None, **_kw):
        if baudrate is not None:
            self.p.call(0x62, 0, 0, 0, baudrate)  # 'b'


class _PipeI2C:
    def __init__(self, pipe):
        self.p = pipe

    def readfrom_mem_into(self, addr, memaddr, buf):
        p = self.p
        p.call(0x69, addr, memaddr, 0, len(buf))  # 'i'
        p.answer()
        if p.rep[1]:
            raise OSError(p.rep[1])
        p.fill(buf, len(buf))

    def readfrom_mem(self, addr, memaddr, nbytes):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        p = self.p
        p.call(0x57, addr, memaddr, 0, len(buf))  # 'W'
        p.o.write(buf)
        p.answer()
        if p.rep[1]:
            raise OSError(p.rep[1])


class _PipeSession:
    """What supply_step needs of a session: the power inputs and the GNSS UART."""

    def __init__(self, pipe, uart):
        self.power = pipe
        self.gnss_uart = uart


def pipe_main(fs_root, limit, gnss_baud, power, sleeps, config_json=None):
    """The VM's side of `paydbox replay --board-heap` (the protocol above). The peers are made, the
    heap is collected and what is then free beyond `limit` bytes is held by one block: the firmware
    loads into exactly `limit` free bytes. Prints the summary JSON with "heap_live_peak" (the
    largest live heap after any pass, minus the harness's and that block's), "heap_harness" and
    "heap_free_at_start" (what the firmware was given)."""
    import gc

    pipe = _Pipe()
    uart = _PipeUART(pipe, gnss_baud)
    i2c = _PipeI2C(pipe)
    sess = _PipeSession(pipe, uart)
    cfg = json.loads(config_json) if config_json else None
    gc.collect()
    harness = gc.mem_alloc()
    pad = gc.mem_free() - limit
    if pad < 0:
        raise MemoryError("the VM heap leaves %d bytes, less than --board-heap" % (limit + pad))
    hold = bytearray(pad - 32 if pad > 64 else 0)  # its own header block: 32 bytes on top
    gc.collect()
    base = gc.mem_alloc()
    free0 = gc.mem_free()
    peak = [0]

    from firmware.config import Config
    from firmware.runner import Board, Runner

    over = {"gnss_baud": gnss_baud}  # the box as installed where the trace was recorded
    if cfg:
        over.update(cfg)
    board = Board(pipe, uart, i2c, pipe if power else None, fs_root, name="replay",
                  sleep=pipe.sleep if sleeps else None, gnss_power=pipe.gnss_power if sleeps else None)
    runner = Runner(board, Config(None), overrides=over)

    def sample():
        if gc.mem_alloc() > peak[0]:
            gc.collect()
            a = gc.mem_alloc()
            if a > peak[0]:
                peak[0] = a

    boot = 1  # the first message is the board's state at boot (the trace's time 0)
    while pipe.answer() == 0x53:  # 'S'
        pipe.now = pipe.x()
        pipe.mv = pipe.y()
        pipe.ign = pipe.rep[1]
        if boot:
            runner.power_on()
            boot = 0
        elif supply_step(runner, sess):
            runner.step()
        sample()
        pipe.call(0x6B)  # 'k'
    runner.power_off()
    out = merge(runner.summaries, runner.power_ons - 1)
    out["heap_live_peak"] = peak[0] - base
    out["heap_harness"] = harness
    out["heap_free_at_start"] = free0
    hold = None  # noqa: F841
    print(json.dumps(out))
