# Box power states, wake causes and the edge agent's supply rail (docs/power.md).
#
# Pure core: fed box times (ms), the ignition line, the supply in mV, GNSS movement and position, the
# store's backlog and the agent's answer; it never reads a clock or a pin. The supervisor
# (firmware/app.py) applies what it decides: `rail` (agent supply GPIO), `gnss` (receiver main supply),
# `ask` (send the shutdown command over the link), `sleep_ms` (> 0: sleep now, at most this long), and
# emits the records queued in `out` as (reason, value) tamper records. Integers only.
#
#   driving  ignition on (and believed), or a trip in progress
#   parked   awake after a trip until the backlog is sent plus park_hold_s; or woken by the
#            accelerometer and waiting up to wake_confirm_s for the GNSS to confirm movement; or a
#            heartbeat / supply wake forwarding records
#   sleep    MCU asleep, GNSS off (backup), accelerometer low-power with its INT1 activity interrupt,
#            agent rail off; wakes: ignition pin, INT1, timer (supply check, heartbeat)
#   cutoff   supply below cutoff_mv for cutoff_s (ignition off): everything off, wakes on the
#            ignition pin, or a timer check that finds the supply >= cutoff_mv + cutoff_hyst_mv
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(agent_ack_s=0, agent_halt_s=0, cutoff_hyst_mv=0, geofence_exit=0, heartbeat_h=0, ign_stuck_s=0,
         ignition_ok=0, ignition_stuck=0, park_hold_s=0, rejected_wakes=0, shutdowns_acked=0,
         shutdowns_timed_out=0, supply_check_s=0, supply_invalid=0, supply_restored=0, wake_confirm_s=0)

DRIVING = const(0)
PARKED = const(1)
SLEEP = const(2)
CUTOFF = const(3)
STATES = ("driving", "parked", "sleep", "cutoff")

# agent rail states
AG_OFF = const(0)
AG_ON = const(1)
AG_ASKED = const(2)   # shutdown asked over the link, no answer yet
# the agent answered: it powers off through systemd; the rail goes off after agent_halt_s
AG_HALT = const(3)

# why the box is awake / why the agent was powered (indexes of the counters)
CAUSES = ("ignition", "supply", "activity", "heartbeat", "tow", "boot")
C_IGN = const(0)
C_SUPPLY = const(1)
C_ACTIVITY = const(2)
C_HEARTBEAT = const(3)
C_TOW = const(4)
C_BOOT = const(5)

_TOW_CONFIRM_MS = const(5000)   # GNSS movement with the ignition off this long: a tow (= trip start rule)
_IGN0_STUCK_MS = const(120000)  # ignition 0 while the alternator charges and the car moves: line stuck at 0
_BAD_READS = const(3)           # this many implausible supply readings in a row: supply_invalid

DEFAULTS = {
    "park_hold_s": 60,        # parked-awake: this long after the backlog is sent
    "park_max_s": 900,        # ... and never longer than this after the trip (the backlog stays on flash)
    "heartbeat_h": 24,        # the agent is woken this often to forward records (and a status is written)
    "cutoff_mv": 11800,       # supply below this ...
    "cutoff_s": 300,          # ... this long with the ignition off: cut-off
    "cutoff_hyst_mv": 400,    # cut-off ends at cutoff_mv + this (or ignition)
    "engine_mv": 13200,       # alternator charging: the engine runs
    "supply_check_s": 60,     # the sleeping box wakes this often to read the supply (cut-off: x10)
    "wake_confirm_s": 60,     # after an accelerometer wake, the GNSS has this long to see movement
    "agent_ack_s": 30,        # no answer to the shutdown command this long: the rail is cut anyway
    "agent_halt_s": 15,       # after the answer: time for the agent's systemd poweroff
    "ign_stuck_s": 1800,      # ignition 1, engine not charging, not moving this long: line stuck at 1
    "geofence_m": 300,        # parked: a fix this far from the parking spot, ignition off: geofence_exit
    "adc_min_mv": 4000,       # plausible supply readings (a stuck ADC reads 0 or full scale)
    "adc_max_mv": 18000,
    "power_log": 0,           # entries of `log` kept (replay reports; 0 on a box: no heap spent on it)
}


def dist_m(lat1_e7, lon1_e7, lat2_e7, lon2_e7):
    """Distance in m (equirectangular, integer; good to ~0.5 % below 100 km)."""
    from firmware.codec import isin

    dy = (lat2_e7 - lat1_e7) * 1113 // 100000           # 1e-7 deg of latitude = 0.01113 m
    c = isin(9000 - (lat1_e7 // 100000))                # cos(lat) * 2**14
    dx = (lon2_e7 - lon1_e7) * 1113 // 100000 * c >> 14
    if dx < 0:
        dx = -dx
    if dy < 0:
        dy = -dy
    # integer hypot (Newton)
    s = dx * dx + dy * dy
    if s == 0:
        return 0
    r = dx + dy
    while True:
        n = (r + s // r) >> 1
        if n >= r:
            return r
        r = n


class PowerManager:
    def __init__(self, cfg=None, now=0):
        c = dict(DEFAULTS)
        if cfg:
            for k in c:
                if k in cfg:
                    c[k] = cfg[k]
        self.c = c
        self.state = PARKED
        self.cause = C_BOOT
        self.since = now
        self.agent = AG_ON          # the agent boots with the box
        self.rail = 1
        self.gnss = 1
        self.ask = 0                # the supervisor sends the shutdown command while this is 1
        self.sleep_ms = 0
        self.wake_ign = 1           # sleep wake sources the board arms
        self.wake_accel = 1
        self.out = []               # (reason, value) records for the supervisor to emit
        self.ign = 0                # the ignition as believed
        self.ign_stuck = 0          # 1: stuck at 1 (not believed); 2: stuck at 0 reported
        self.mv_ok = 1
        self.acc = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]  # per state: ms, GNSS-on ms, rail-on ms
        self.agent_wakes = [0, 0, 0, 0, 0, 0]   # rail switched on, by cause
        self.box_wakes = [0, 0, 0, 0, 0, 0]     # MCU woken from sleep, by cause
        self.rejected = 0           # accelerometer wakes the GNSS did not confirm (slam, wind, wash)
        self.timer_wakes = 0        # supply-check wakes that went back to sleep at once
        self.shutdowns = [0, 0]     # agent shutdowns: acknowledged, timed out (rail cut without an answer)
        self.log = []               # (t_ms, what, cause) of the first power_log rail switches and alarms
        self._log_max = c["power_log"]
        self.tow = 0
        self._acc_t = now
        self._ign_since = -1
        self._ign0_since = -1
        self._bad = 0
        self._below = -1
        self._hb_at = now + c["heartbeat_h"] * 3600000
        self._supply_high = 0
        self._empty = -1
        self._t_agent = now
        self._move = -1
        self._park = None           # (lat_e7, lon_e7) of the parking spot
        self._fenced = 0

    # ---- accounting
    def _account(self, now):
        dt = now - self._acc_t
        if dt > 0:
            a = self.acc[self.state]
            a[0] += dt
            if self.gnss:
                a[1] += dt
            if self.rail:
                a[2] += dt
        self._acc_t = now

    def _to(self, now, state):
        self.state = state
        self.since = now
        if state != PARKED:
            self._empty = -1

    def _note(self, now, what, cause=-1):
        if len(self.log) < self._log_max:
            self.log.append((now, what, cause))

    def _alarm(self, now, reason, value):
        self.out.append((reason, value))
        self._note(now, reason)

    # ---- inputs
    def _supply(self, now, mv, ign):
        c = self.c
        ok = c["adc_min_mv"] <= mv <= c["adc_max_mv"]
        if not ok:
            self._bad += 1
            self._below = -1       # an implausible reading never moves the box towards cut-off
            if self._bad == _BAD_READS:
                self.mv_ok = 0
                self._alarm(now, "supply_invalid", mv)
            return 0
        if self._bad >= _BAD_READS:
            self._alarm(now, "supply_restored", mv)
        self._bad = 0
        self.mv_ok = 1
        if mv >= c["cutoff_mv"] or ign:
            self._below = -1       # a crank dip (ignition on) never counts
        elif self._below < 0:
            self._below = now
        if mv < c["engine_mv"]:
            self._supply_high = 0
        return 1

    def _ignition(self, now, ign, mv, moving):
        """The ignition as believed: a line stuck at 1 (engine not charging, car still) is reported
        and not believed until it reads 0 again."""
        engine = mv >= self.c["engine_mv"]
        if not ign:
            if self.ign_stuck == 1:
                self.ign_stuck = 0
                self._alarm(now, "ignition_ok", 0)
            self._ign_since = -1
            if engine and moving:
                if self._ign0_since < 0:
                    self._ign0_since = now
                elif self.ign_stuck == 0 and now - self._ign0_since >= _IGN0_STUCK_MS:
                    self.ign_stuck = 2
                    self._alarm(now, "ignition_stuck", 0)
            else:
                self._ign0_since = -1
            return 0
        if self.ign_stuck == 2:
            self.ign_stuck = 0
        self._ign0_since = -1
        if self.ign_stuck == 1:
            return 0
        if self._ign_since < 0 or engine or moving:
            self._ign_since = now
        elif now - self._ign_since >= self.c["ign_stuck_s"] * 1000:
            self.ign_stuck = 1
            self._alarm(now, "ignition_stuck", 1)
            return 0
        return 1

    def _cutoff_due(self, now):
        return self._below >= 0 and now - self._below >= self.c["cutoff_s"] * 1000

    # ---- the agent's rail
    def _agent_step(self, now, want, cause):
        ag = self.agent
        if want:
            if ag == AG_OFF:
                self.agent = AG_ON
                self.rail = 1
                self.agent_wakes[cause] += 1
                self._t_agent = now
                self._note(now, "agent_on", cause)
            return
        c = self.c
        if ag == AG_ON:
            self.agent = AG_ASKED
            self.ask = 1
            self._t_agent = now
        elif ag == AG_ASKED and now - self._t_agent >= c["agent_ack_s"] * 1000:
            self.shutdowns[1] += 1
            self._rail_off(now)
        elif ag == AG_HALT and now - self._t_agent >= c["agent_halt_s"] * 1000:
            self._rail_off(now)

    def _rail_off(self, now):
        self.agent = AG_OFF
        self.rail = 0
        self.ask = 0
        self._note(now, "agent_off")

    def agent_acked(self, now):
        """The agent answered the shutdown command (it has synced its queue)."""
        self._account(now)
        if self.agent == AG_ASKED:
            self.agent = AG_HALT
            self.ask = 0
            self.shutdowns[0] += 1
            self._t_agent = now

    def position(self, now, lat_e7, lon_e7):
        """A good GNSS fix while awake: the parking spot is the first one after the ignition went
        off; leaving geofence_m around it with the ignition off raises geofence_exit (once a parking)."""
        if self.ign or self.state == DRIVING and self.cause == C_IGN:
            self._park = None
            self._fenced = 0
            return
        p = self._park
        if p is None:
            self._park = (lat_e7, lon_e7)
            return
        if not self._fenced:
            d = dist_m(p[0], p[1], lat_e7, lon_e7)
            if d >= self.c["geofence_m"]:
                self._fenced = 1
                self._alarm(now, "geofence_exit", d)

    # ---- awake: one main-loop pass
    def update(self, now, ign, mv, moving, trip, backlog):
        """ign 0/1 as read; mv supply as read; moving: GNSS sees movement; trip: a trip is open;
        backlog: unacknowledged blocks in the store. Returns the ignition as believed."""
        self._account(now)
        c = self.c
        mv_ok = self._supply(now, mv, ign)
        ign = self._ignition(now, ign, mv if mv_ok else -1, moving)
        self.ign = ign
        engine = mv_ok and mv >= c["engine_mv"]
        # a tow or theft: movement with the ignition off and no alternator
        if moving and not ign and not engine:
            if self._move < 0:
                self._move = now
            elif not self.tow and now - self._move >= _TOW_CONFIRM_MS:
                self.tow = 1
                self._alarm(now, "tow", 0)
                if self.cause == C_ACTIVITY or self.agent == AG_OFF:
                    self.cause = C_TOW
        else:
            self._move = -1
            if ign:
                self.tow = 0
        if self.rail and now >= self._hb_at:
            self.heartbeat_due(now)   # the agent is up anyway: that is this period's heartbeat
        st = self.state
        if ign or (trip and moving):
            if st != DRIVING:
                self._to(now, DRIVING)
                if ign:
                    self.cause = C_IGN
            self.gnss = 1
            self._agent_step(now, 1, self.cause if self.cause != C_ACTIVITY else C_TOW)
            return ign
        if st == DRIVING:
            self._to(now, PARKED)
        if trip:
            # stopped, the trip not ended yet (trip_end_s): awake, agent as it is
            self.gnss = 1
            self.since = now
            if self.agent == AG_OFF and self.cause != C_ACTIVITY:
                self._agent_step(now, 1, self.cause)
            return ign
        # parked-awake
        if self.cause == C_ACTIVITY:
            # woken by the accelerometer: the agent stays off unless the GNSS confirms movement
            if now - self.since >= c["wake_confirm_s"] * 1000:
                self.rejected += 1
                self._sleep(now)
            return ign
        if self.cause == C_TOW and self.agent == AG_OFF:
            self._agent_step(now, 1, C_TOW)
        if backlog:
            self._empty = -1
        elif self._empty < 0:
            self._empty = now
        done = (self._empty >= 0 and now - self._empty >= c["park_hold_s"] * 1000) or \
            now - self.since >= c["park_max_s"] * 1000
        if self._cutoff_due(now):
            done = 1
        if done:
            self._agent_step(now, 0, 0)
            if self.agent == AG_OFF:
                self._sleep(now)
        return ign

    def _sleep(self, now):
        c = self.c
        self.gnss = 0
        self._move = -1
        if self._cutoff_due(now):
            if self.state != CUTOFF:
                self._alarm(now, "cutoff", now - self._below)
            self._to(now, CUTOFF)
            self.wake_accel = 0
            self.sleep_ms = c["supply_check_s"] * 10000
        else:
            self._to(now, SLEEP)
            self.wake_accel = 1
            ms = c["supply_check_s"] * 1000
            hb = self._hb_at - now
            self.sleep_ms = ms if ms < hb else (hb if hb > 0 else 1)
        self.wake_ign = 0 if self.ign_stuck == 1 else 1

    # ---- asleep
    def wake(self, now, why, ign, mv):
        """The MCU woke: why is "ign", "accel" or "timer". Sets sleep_ms (0: stay awake)."""
        self._account(now)
        c = self.c
        st = self.state
        if not ign and self.ign_stuck == 1:
            self.ign_stuck = 0          # the line reads 0 again: believed again, its pin wakes again
            self.wake_ign = 1
            self._alarm(now, "ignition_ok", 0)
        mv_ok = self._supply(now, mv, ign and self.ign_stuck != 1)
        ign_ok = ign and self.ign_stuck != 1
        if ign_ok and st == CUTOFF:
            self._alarm(now, "cutoff_end", mv)
        if ign_ok:
            return self._awake(now, C_IGN, 1)
        if mv_ok and mv >= c["engine_mv"] and not self._supply_high:
            self._supply_high = 1
            if st == CUTOFF:
                self._alarm(now, "cutoff_end", mv)
            return self._awake(now, C_SUPPLY, 1)
        if st == CUTOFF:
            if mv_ok and mv >= c["cutoff_mv"] + c["cutoff_hyst_mv"]:
                self._alarm(now, "cutoff_end", mv)
                self._below = -1
                self._sleep(now)
            else:
                self.sleep_ms = c["supply_check_s"] * 10000
            self.timer_wakes += 1
            return
        if why == "accel":
            return self._awake(now, C_ACTIVITY, 0)
        if now >= self._hb_at:
            while self._hb_at <= now:
                self._hb_at += c["heartbeat_h"] * 3600000
            return self._awake(now, C_HEARTBEAT, 1)
        self.timer_wakes += 1
        self._sleep(now)

    def _awake(self, now, cause, agent):
        self.box_wakes[cause] += 1
        self.cause = cause
        self.sleep_ms = 0
        self._to(now, PARKED)
        self.gnss = 0 if cause == C_HEARTBEAT else 1
        if agent:
            self._agent_step(now, 1, cause)

    def heartbeat_due(self, now):
        """While awake: the heartbeat time passed (the agent is on anyway): move it on, True once."""
        if now < self._hb_at:
            return 0
        while self._hb_at <= now:
            self._hb_at += self.c["heartbeat_h"] * 3600000
        return 1

    def summary(self, now):
        self._account(now)
        t = {}
        for i in range(4):
            t[STATES[i]] = {"ms": self.acc[i][0], "gnss_ms": self.acc[i][1], "agent_ms": self.acc[i][2]}
        aw = {}
        bw = {}
        for i in range(len(CAUSES)):
            aw[CAUSES[i]] = self.agent_wakes[i]
            bw[CAUSES[i]] = self.box_wakes[i]
        return {"state": STATES[self.state], "time": t, "agent_wakes": aw, "box_wakes": bw,
                "rejected_wakes": self.rejected, "timer_wakes": self.timer_wakes,
                "shutdowns_acked": self.shutdowns[0], "shutdowns_timed_out": self.shutdowns[1],
                "ign_stuck": self.ign_stuck, "supply_ok": self.mv_ok, "tow": self.tow,
                "log": [[a, b if c < 0 else b + ":" + CAUSES[c]] for a, b, c in self.log]}
