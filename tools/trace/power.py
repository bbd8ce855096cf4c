"""`paydbox power TRACE`: the box's power management replayed, and what it costs the car's battery.

The trace (e.g. `paydbox simulate --scenario parked_week`) runs through the real firmware under CPython
with its power management (firmware/power.py): the replay board sleeps by jumping the clock, and a
simulated edge agent sits on the link behind the agent's supply rail. The agent model boots
`boot_s` after its rail comes on, stores every DATA block in a real edge_agent Queue (SQLite) before
it acknowledges it, answers the box's shutdown command after Queue.sync() and halts `halt_s` later;
a rail cut before that is a power cut (whatever the queue committed stays). The time the box spent in
each state (and with GNSS / agent on) times the datasheet currents of POWER_BUDGET gives the parked
current at 12 V. records_lost: sequence numbers the box gave out that neither the agent's queue nor
the box's flash holds at the end.
"""
import json
import os
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATTERY_V = 12.0
HALF_60AH_MAH = 30000.0

# Current of each part in each of its modes, mA at its own rail (docs/power.md has the sources).
POWER_BUDGET = {
    "mcu_esp32": {"rail_v": 3.3, "active": 31.0, "light_sleep": 0.8, "deep_sleep": 0.01,
                  "src": "Espressif ESP32 datasheet v4.x, table 'Power consumption by power modes': "
                         "modem-sleep 80 MHz 20-31 mA, light-sleep 0.8 mA, deep-sleep RTC timer + RTC memory "
                         "10 uA"},
    "mcu_rp2040": {"rail_v": 3.3, "active": 25.0, "light_sleep": 1.3, "deep_sleep": 0.18,
                   "src": "ESTIMATES, not checked against the RP2040 / Pico W datasheets (their power "
                          "tables could not be read here): active ~25 mA at 125 MHz, SLEEP ~1.3 mA, DORMANT "
                          "~0.18 mA; the same order as MicroPython's own measurement on a Pico (commit "
                          "'rp2/modmachine: Implement lightsleep() with optional sleep period', D. George, "
                          "2022-06-30: ~1.5 mA in lightsleep(5000), ~0.9 mA in lightsleep() dormant, from "
                          "USB)"},
    "lis3dh": {"rail_v": 3.3, "active": 0.020, "low_power": 0.003, "power_down": 0.0005,
               "src": "ST LIS3DH datasheet DocID 17530, current consumption of operating modes: 100 Hz "
                      "normal/HR 20 uA, 10 Hz low-power 3 uA, power-down 0.5 uA"},
    "gnss_ublox_m8": {"rail_v": 3.3, "on": 23.0, "power_save": 9.0, "backup": 0.015,
                      "src": "u-blox NEO-M8 data sheet UBX-15031086 R11: continuous tracking ~23 mA at 3 V, "
                             "backup current I_BCKP 15 uA (hardware backup, V_BCKP); power save 1 Hz ~9 mA "
                             "(SparkFun u-blox library PR 56, measured on a ZOE-M8Q)"},
    "agent_pi_zero2w": {"rail_v": 5.0, "on": 120.0, "off": 0.0,
                        "src": "Raspberry Pi Zero 2 W idle, Raspberry Pi OS Bullseye: ~120 mA at 5 V (600 "
                               "mW), CNX Software measurement 2021-12-09; off: rail switched off (buck "
                               "disabled)"},
    "regulator": {"rail_v": BATTERY_V, "iq": 0.0045, "efficiency": 0.85,
                  "src": "TI TPS62175 28 V step-down, quiescent current 4.5 uA; 85 % efficiency assumed for "
                         "the 3.3 V and 5 V bucks at these loads"},
}

_WAKE_COST_MS = 3  # a supply-check wake: MCU active this long (light-sleep exit, ADC read, back)


def battery_ma(rail_mw):
    """mA drawn from the 12 V battery for rail_mw delivered through the bucks (+ their quiescent current)."""
    reg = POWER_BUDGET["regulator"]
    return rail_mw / reg["efficiency"] / BATTERY_V + reg["iq"]


def _mw(part, mode_ma):
    return POWER_BUDGET[part]["rail_v"] * mode_ma


def state_power_mw(state, gnss_on, agent_on, mcu="mcu_esp32"):
    """Rail power (mW) of the box + agent in a power state."""
    b = POWER_BUDGET
    if state in ("driving", "parked"):
        mw = _mw(mcu, b[mcu]["active"]) + _mw("lis3dh", b["lis3dh"]["active"])
    elif state == "sleep":
        mw = _mw(mcu, b[mcu]["light_sleep"]) + _mw("lis3dh", b["lis3dh"]["low_power"])
    else:  # cutoff
        mw = _mw(mcu, b[mcu]["deep_sleep"]) + _mw("lis3dh", b["lis3dh"]["power_down"])
    g = b["gnss_ublox_m8"]
    mw += _mw("gnss_ublox_m8", g["on"] if gnss_on else g["backup"])
    a = b["agent_pi_zero2w"]
    mw += _mw("agent_pi_zero2w", a["on"] if agent_on else a["off"])
    return mw


def energy_report(pw, mcu="mcu_esp32"):
    """From the box's power summary: time in each state, charge (mAh) at 12 V, average parked mA."""
    t = pw["time"]
    out = {"time_in_state_s": {}, "charge_mah": {}}
    parked_mah = 0.0
    parked_ms = 0
    for st, v in t.items():
        ms, g, a = v["ms"], v["gnss_ms"], v["agent_ms"]
        out["time_in_state_s"][st] = round(ms / 1000.0, 1)
        # split the state's time into (gnss, agent) on/off parts: GNSS and agent are independent enough
        # that their own on-times are added on top of the base (both off)
        base = battery_ma(state_power_mw(st, 0, 0, mcu))
        g_extra = battery_ma(state_power_mw(st, 1, 0, mcu)) - base
        a_extra = battery_ma(state_power_mw(st, 0, 1, mcu)) - base
        mah = (base * ms + g_extra * g + a_extra * a) / 3600000.0
        out["charge_mah"][st] = round(mah, 3)
        if st != "driving":
            parked_mah += mah
            parked_ms += ms
    b = POWER_BUDGET
    wake_extra = battery_ma(_mw(mcu, b[mcu]["active"] - b[mcu]["light_sleep"])) - b["regulator"]["iq"]
    wake_mah = wake_extra * pw["timer_wakes"] * _WAKE_COST_MS / 3600000.0
    parked_mah += wake_mah
    out["charge_mah"]["supply_checks"] = round(wake_mah, 3)
    avg = parked_mah / (parked_ms / 3600000.0) if parked_ms else 0.0
    out["avg_parked_ma"] = round(avg, 3)
    out["days_to_half_60ah"] = round(HALF_60AH_MAH / avg / 24.0, 1) if avg > 0 else None
    return out


class _BoxEnd:
    """The box's link UART (machine.UART subset), wired to the agent model."""

    def __init__(self, agent):
        self.a = agent
        self.rx = bytearray()

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n=-1):
        k = len(buf) if n < 0 else min(n, len(buf))
        k = min(k, len(self.rx))
        if not k:
            return None
        buf[:k] = self.rx[:k]
        del self.rx[:k]
        return k

    def read(self, n=-1):
        k = len(self.rx) if n < 0 else min(n, len(self.rx))
        d = bytes(self.rx[:k])
        del self.rx[:k]
        return d

    def write(self, b):
        if self.a.up:
            self.a.rx.extend(b)  # an agent that is off or booting hears nothing
        return len(b)

    def init(self, baudrate=None, **kw):
        pass


class SimAgent:
    """The edge agent behind its supply rail, in box time (see the module docstring)."""

    OFF, BOOTING, UP, HALTING = "off", "booting", "up", "halting"

    def __init__(self, qpath, boot_s=25, halt_s=8, keepalive_ms=2000, cut_at=None):
        self.qpath = qpath
        self.boot_ms = int(boot_s * 1000)
        self.halt_ms = int(halt_s * 1000)
        self.keepalive_ms = keepalive_ms
        self.cut_at = cut_at  # test hook: "asked" / "synced" cuts the agent at that point of the handshake
        self.uart = _BoxEnd(self)
        self.rx = bytearray()
        self.state = self.OFF
        self.up = False
        self.t = 0
        self.clock = None  # the replay's clock (bound by firmware.replay_main.run)
        self.at = 0
        self.queue = None
        self.link = None
        self.device = None
        self.counters = {"boots": 0, "power_cuts": 0, "clean_halts": 0, "blocks_stored": 0, "acks": 0,
                         "shutdown_cmds": 0}

    # the board's agent_rail(on)
    def rail(self, on):
        if self.clock is not None:
            self.t = self.clock.now
        if on and self.state == self.OFF:
            self.state = self.BOOTING
            self.at = self.t + self.boot_ms
            self.counters["boots"] += 1
        elif not on and self.state != self.OFF:
            if self.state != self.HALTING or self.t < self.at:
                self.counters["power_cuts"] += 1  # the rail went before the agent had halted
            else:
                self.counters["clean_halts"] += 1
            self._down()

    def _down(self):
        self.state = self.OFF
        self.up = False
        if self.queue is not None:
            self.queue.db.close()  # no checkpoint, no close handshake: what was committed stays
            self.queue = None
        self.link = None
        self.rx = bytearray()

    def step(self, t):
        self.t = t
        if self.state == self.BOOTING and t >= self.at:
            from edge_agent.link import AgentLink
            from edge_agent.queue import Queue

            self.queue = Queue(self.qpath)
            self.link = AgentLink(self)
            self.state = self.UP
            self.up = True
            self.last_ka = t
            self.link.send_hello(reply=False)
        if self.state == self.HALTING and t >= self.at:
            self.up = False  # halted: waits for its rail to go
        if not self.up:
            return
        if self.rx:
            data = bytes(self.rx)
            self.rx = bytearray()
            for kind, v in self.link.feed(data):
                self._frame(kind, v)
        if t - self.last_ka >= self.keepalive_ms:
            self.last_ka = t
            self.link.send_keepalive()

    def _frame(self, kind, v):
        from firmware import decoder

        ln = self.link
        if kind == "hello" and v.get("role") == "box":
            ln.box = v
            self.device = v["device"]
            ln.send_hello(reply=True)
        elif kind == "data" and ln.box is not None:
            fs, ls, prio, block = v
            boot = decoder.decode_header(block)[0]["boot"]
            ack, refused, stored, dropped = self.queue.add_batch(self.device, boot, [(fs, ls, prio, block)])
            self.counters["blocks_stored"] += len(stored)
            if ack:
                ln.send_ack(ack)
                self.counters["acks"] += len(ack)
        elif kind == "cmd" and v.get("cmd") == "shutdown":
            self.counters["shutdown_cmds"] += 1
            if self.cut_at == "asked":
                self.rail(0)
                return
            self.queue.sync()
            if self.cut_at == "synced":
                self.rail(0)
                return
            ln.send_result({"id": v["id"], "ok": True, "cmd": "shutdown", "pending": self.queue.rows})
            if self.state != self.HALTING:
                self.state = self.HALTING
                self.at = self.t + self.halt_ms

    # pyserial-like side for AgentLink
    @property
    def in_waiting(self):
        return 0

    def write(self, b):
        if self.up:
            self.uart.rx.extend(b)
        return len(b)


def agent_records(qpath):
    """{seq: record} of every record held in the agent's queue database (blocks decoded with
    firmware.codec)."""
    import sqlite3

    from firmware import decoder

    out = {}
    if not os.path.exists(qpath):
        return out
    db = sqlite3.connect(qpath)
    try:
        for (block,) in db.execute("SELECT block FROM q"):
            for r in decoder.decode_block(bytes(block))[1]:
                out[r["seq"]] = r
    finally:
        db.close()
    return out


def agent_seqs(qpath):
    """Every record seq held in the agent's queue database."""
    return set(agent_records(qpath))


def box_records(fs_root):
    """{seq: record} of the records still on the box's flash, unacknowledged (the store's live blocks)."""
    from firmware import decoder
    from firmware.store import Store

    st = Store(os.path.join(fs_root, "store"), 1024 * 1024, 32768)
    out = {}
    for entry in st.peek(1 << 20):
        for r in decoder.decode_block(bytes(entry[3]))[1]:
            out[r["seq"]] = r
    return out


def box_seqs(fs_root):
    """Seqs of the records still on the box's flash, unacknowledged."""
    return set(box_records(fs_root))


def events_outside_trips(records):
    """{kind: n} of the event and crash records written while no trip was open (by seq: after a trip_end,
    before the next trip_start), as the consumer (tools/consumer/db.py trip_events) and Traccar see them.
    A harsh-driving kind here would be charged to a driver who was not driving (a tow truck's winch)."""
    out = {}
    open_trip = False
    for q in sorted(records):
        r = records[q]
        if r["type"] == "trip_start":
            open_trip = True
        elif r["type"] == "trip_end":
            open_trip = False
        elif r["type"] in ("event", "crash") and not open_trip:
            k = r.get("kind", "crash")
            out[k] = out.get(k, 0) + 1
    return out


def run_power(trace, config=None, boot_s=25, halt_s=8, cut_at=None, mcu="mcu_esp32", keep=None):
    """Replay `trace` with power management and the agent model. Returns the figures (dict)."""
    import gzip
    import sys

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from firmware import replay_main

    if not os.path.exists(trace):
        raise OSError("trace not found: %s" % trace)
    tmp = tempfile.mkdtemp(prefix="paydbox-power-")
    try:
        plain = trace
        with open(trace, "rb") as f:
            if f.read(2) == b"\x1f\x8b":
                plain = os.path.join(tmp, "trace.jsonl")
                with gzip.open(trace, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        with open(plain) as f:
            hdr = json.loads(f.readline())
        if "sleep" not in hdr:
            raise ValueError("trace: header has no 'sleep' block: it does not model sleep "
                             "(paydbox simulate --scenario parked_week)")
        fs_root = os.path.join(tmp, "flash")
        os.mkdir(fs_root)
        qpath = os.path.join(tmp, "agent", "queue.db")
        agent = SimAgent(qpath, boot_s=boot_s, halt_s=halt_s, cut_at=cut_at)
        cfg = {"power_log": 4096}  # the power manager's log of rail switches and alarms (attribution)
        cfg.update(config or {})
        out = replay_main.run(plain, fs_root, cfg, agent=agent)
        pw = out["power"]
        box_recs = box_records(fs_root)
        held_box = set(box_recs)
        next_seq = out["store"]["next_seq"]  # as the box left it (a remount skips to the reservation)
        agent_recs = agent_records(qpath)
        held_agent = set(agent_recs)
        lost = sorted(set(range(next_seq)) - held_box - held_agent)
        rep = energy_report(pw, mcu)
        res = {
            "time_in_state_s": rep["time_in_state_s"],
            "agent_wakes": dict(pw["agent_wakes"]),
            "box_wakes": dict(pw["box_wakes"]),
            "rejected_wakes": pw["rejected_wakes"],
            "supply_checks": pw["timer_wakes"],
            "avg_parked_ma": rep["avg_parked_ma"],
            "days_to_half_60ah": rep["days_to_half_60ah"],
            "charge_mah": rep["charge_mah"],
            "towing_detected": 1 if any(tm["reason"] == "tow" for tm in out["tamper"]) else 0,
            "alarms": [{"reason": tm["reason"], "t_s": tm["t_ms"] // 1000, "value": tm["value"]}
                       for tm in out["tamper"] if tm["reason"] != "gnss_missing"],
            "records": next_seq,
            "records_lost": len(lost),
            "lost_seqs": lost[:20],
            "records_on_agent": len(held_agent),
            "records_on_box": len(held_box - held_agent),
            "shutdowns": {"acked": pw["shutdowns_acked"], "timed_out": pw["shutdowns_timed_out"]},
            "agent": dict(agent.counters),
            "trips": len(out["trips"]),
            "events_outside_trips": events_outside_trips({**box_recs, **agent_recs}),
            "log": pw["log"],
            "mcu": mcu,
            "_power": pw,
        }
        if keep:
            res["_flash"] = fs_root
        return res
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def attribute(res, trace):
    """agent_wakes by cause, with the causes the box cannot name (door_slam, wind, car_wash) from the
    trace's truth: an agent wake that was not the ignition's, inside a disturbance's window (+90 s)."""
    import gzip

    dist = []
    truth_tows = []
    with open(trace, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    with (gzip.open(trace, "rb") if gz else open(trace, "rb")) as f:
        for line in f:
            if b'"truth"' not in line:
                continue
            o = json.loads(line)
            if o.get("kind") == "disturbance":
                dist.append((o["type"], o["start"], o["end"] + 90.0))
            elif o.get("kind") == "event" and o.get("type") == "towing":
                truth_tows.append(("tow", o["start"], o["end"]))
    wakes = dict(res["agent_wakes"])
    for k in ("door_slam", "wind", "car_wash"):
        wakes.setdefault(k, 0)
    for t_ms, what in res["log"]:
        if not what.startswith("agent_on:") or what == "agent_on:ignition":
            continue
        t = t_ms / 1000.0
        for kind, a, b in dist:
            if a <= t <= b and kind in ("door_slam", "wind", "car_wash"):
                wakes[kind] += 1
    res["agent_wakes"] = wakes
    res["tows_in_truth"] = len(truth_tows)
    if truth_tows:
        a = truth_tows[0][1]
        hits = [t_ms / 1000.0 for t_ms, what in res["log"] if what == "tow" and t_ms / 1000.0 >= a]
        res["tow_alarm_after_s"] = round(hits[0] - a, 1) if hits else None
    return res


def targets(res):
    w = res["agent_wakes"]
    return {
        "avg_parked_ma<=2.0": res["avg_parked_ma"] <= 2.0,
        "avg_parked_ma<=1.0 (goal)": res["avg_parked_ma"] <= 1.0,
        "no agent wake from door slams or wind": w.get("door_slam", 0) == 0 and w.get("wind", 0) == 0,
        "tow caught": res["towing_detected"] == 1 and res.get("tows_in_truth", 1) >= 1,
        "nothing lost": res["records_lost"] == 0,
    }


def add_arguments(p):
    p.add_argument("trace", metavar="TRACE",
                   help="a trace that models sleep (paydbox simulate --scenario parked_week)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--mcu", default="esp32", choices=("esp32", "rp2040"),
                   help="the box's MCU in the power budget")
    p.add_argument("--agent-boot-s", type=float, default=25.0,
                   help="the agent's boot time after its rail comes on")


def run(args):
    res = run_power(args.trace, boot_s=args.agent_boot_s, mcu="mcu_" + args.mcu)
    attribute(res, args.trace)
    res["targets"] = targets(res)
    res.pop("log")
    res.pop("_power")
    if args.json:
        print(json.dumps(res, indent=1, sort_keys=True))
        return 0
    t = res["time_in_state_s"]
    print("time in state: " + ", ".join("%s %.1f h" % (k, v / 3600.0) for k, v in t.items()))
    print("agent wakes: " + ", ".join("%s %d" % kv for kv in sorted(res["agent_wakes"].items())))
    print("avg parked current %.2f mA at 12 V (%s): %.0f days to half a 60 Ah battery"
          % (res["avg_parked_ma"], args.mcu, res["days_to_half_60ah"] or 0))
    print("tow detected: %s; records lost: %d of %d" % ("yes" if res["towing_detected"] else "NO",
                                                        res["records_lost"], res["records"]))
    for k, ok in res["targets"].items():
        print("  %-42s %s" % (k, "met" if ok else "NOT met"))
    return 0
