# Replays a recorded trace through the real firmware (Box) in accelerated time.
# The same code runs under CPython (imported by tools/replay.py) and inside the MicroPython VM
# (`micropython -c "import firmware.replay_main as r; r.main(trace, root)"`), so both runtimes give the
# same result; it prints one JSON line of ints and strings.
import json

from firmware.app import Box
from hw.replay import ReplaySession

_STEP_MS = 100          # main-loop period in box time
_POWER_OFF_MV = 6000    # below this the box is unpowered (unplugged or cut)


def run(trace_path, fs_root, config=None, step_ms=_STEP_MS):
    sess = ReplaySession(trace_path)
    has_power = "power" in sess.header
    box = Box(sess.clock, sess.gnss_uart, sess.i2c, sess.power if has_power else None, fs_root, config)
    finished = []   # summaries of boxes that lost power (each reboot is a new Box on the same flash)
    reboots = 0
    t = 0
    while not sess.done:
        t += step_ms
        sess.advance(t)
        if has_power and sess.power.supply_mv() < _POWER_OFF_MV:
            if box is not None:
                box.shutdown()
                finished.append(box.summary())
                box = None
            discard_rx(sess.gnss_uart)  # an unpowered MCU's UART receives nothing
            continue
        if box is None:
            reboots += 1
            box = Box(sess.clock, sess.gnss_uart, sess.i2c, sess.power, fs_root, config)
        box.step()
    if box is not None:
        box.shutdown()
        finished.append(box.summary())
    return merge(finished, reboots)


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
    out["trips"] = trips
    out["records"] = counts
    out["gnss"] = gnss
    out["odometer"] = odo
    out["reboots"] = reboots
    out["tamper"] = tamper
    out["events"] = events
    return out


def main(trace_path, fs_root, config_json=None):
    cfg = json.loads(config_json) if config_json else None
    print(json.dumps(run(trace_path, fs_root, cfg)))
