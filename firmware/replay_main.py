# Replays a recorded trace through the real firmware (Box) in accelerated time.
# The same code runs under CPython (imported by tools/trace/replay.py) and inside the MicroPython VM
# (`micropython -c "import firmware.replay_main as r; r.main(trace, root)"`), so both runtimes give the
# same result; it prints one JSON line of ints and strings.
import json

from hw.compat import const
from hw.replay import ReplaySession

# the firmware (firmware.runner, firmware.config) is imported by the functions that run it, so that
# importing this module alone costs only the harness's heap (`paydbox replay --board-heap`)

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
