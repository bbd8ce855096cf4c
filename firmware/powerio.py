# The supervisor's side of power management (docs/power.md): firmware/power.py's PowerManager decides,
# this applies it to the Box (records, flush, state, accelerometer, link) and to the board's switches.
# Loaded only on a board that can sleep and reads its power inputs (Box.pmio), so a box without power
# management (and the replay of a trace without sleep) holds none of it in RAM. Its functions are the
# Box's own supervisor code: they use the Box's attributes as firmware/app.py does.
from firmware.power import PowerManager


class PowerIO:
    """The decisions (core: PowerManager), the board's switches, what was last applied, and how long
    the runner is to sleep (sleep_ms > 0)."""

    def __init__(self, cfg, now, agent_rail, gnss_power):
        self.core = PowerManager(cfg, now)
        self.agent_rail = agent_rail
        self.gnss_power = gnss_power
        self.applied = None
        self.fix_seen = -1
        self.backlog = 1
        self.backlog_t = -1000
        self.sleep_ms = 0

    def step(self, box, now, ign, mv):
        """One main-loop pass of the Box; returns the ignition as believed (a stuck line is not)."""
        pm = self.core
        tr = box.trip
        lf = tr.last_fix
        if lf is not None and lf[0] != self.fix_seen:
            self.fix_seen = lf[0]
            pm.position(now, lf[2], lf[3])
        if pm.state == 1 and now - self.backlog_t >= 1000:
            # parked: unsent records (open block, RAM queue, store) hold the agent; looked at once a second
            self.backlog_t = now
            self.backlog = (box.enc is not None and box.enc.count) or len(box._unstored) or \
                box.store.stats()["blocks"]
        ign = pm.update(now, ign, mv, 1 if tr._was_moving else 0, tr.state, self.backlog)
        self.out(box, now)
        link = box.link
        if link is not None:
            if pm.ask:
                link.request("shutdown")
                if link.answered is not None:
                    pm.agent_acked(now)
            elif link.req is not None:
                link.request(None)
        self.rails()
        if not pm.gnss:
            box._last_gnss_ms = now  # receiver off on purpose: not a gnss_missing
        if pm.sleep_ms:
            self.go_sleep(box, now)
        return ign

    def out(self, box, now):
        out = self.core.out
        if out:
            for reason, value in out:
                box._tamper(now, reason, value)
            del out[:]
            box.flush()  # alarms (tow, geofence, cut-off) are committed at once: priority 3 in the store

    def rails(self):
        pm = self.core
        k = (pm.rail, pm.gnss)
        if k != self.applied:
            self.applied = k
            if self.agent_rail is not None:
                self.agent_rail(pm.rail)
            if self.gnss_power is not None:
                self.gnss_power(pm.gnss)

    def go_sleep(self, box, now):
        """Everything durable, the accelerometer on its activity interrupt (or off in cut-off)."""
        box.flush()
        box._save_state(now)
        self.sleep_ms = self.core.sleep_ms
        if box.accel is not None:
            try:
                if self.core.wake_accel:
                    box.accel.sleep_mode(box.cfg["wake_mg"], box.cfg.get("wake_ms", 0))
                else:
                    box.accel.power_down()
            except OSError:
                box.faults["i2c_errors"] += 1

    def wake(self, box, why):
        """The board woke from sleep (why: "ign", "accel", "timer")."""
        now = box.clock.ticks_ms()
        pm = self.core
        pm.wake(now, why, box.power.ignition(), box.power.supply_mv())
        self.out(box, now)
        self.rails()
        acc = box.accel
        if pm.sleep_ms:
            self.sleep_ms = pm.sleep_ms
            if acc is not None and why == "accel":
                try:
                    acc.int1_source()  # clears the latched INT1
                except OSError:
                    box.faults["i2c_errors"] += 1
            if not pm.wake_accel:
                self.go_sleep(box, now)
            return
        self.sleep_ms = 0
        box._last_gnss_ms = now
        box._last_step_ms = now
        if acc is not None:
            try:
                acc.int1_source()
                acc.setup()  # FIFO stream mode at the driving rate again
            except OSError:
                box.faults["i2c_errors"] += 1
        if pm.cause == 3:  # heartbeat: a status record for the agent to forward
            box._emit_status(now)
