# Billing odometer: fix quality gate, motion gate, distance by integrating GNSS (Doppler) speed,
# outage bridging, persistence. Per-fix code (1-10 Hz); distance arithmetic is integer so the result is
# identical on MicroPython and CPython. See docs/gnss.md for the rules and why.
import math

from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(a_max_mmps2=0, accel_veto_mmps=0, accept_estimated=0, bridge_course_min_mm=0,
         bridge_course_min_mmps=0, bridge_course_tol_cdeg=0, bridge_max_ms=0, bridge_min_ms=0,
         bridge_path_factor_x100=0, hdop_max_x10=0, jump_tol_mm=0, move_off_mmps=0, move_on_mmps=0,
         stop_chord_min_mmps=0, stop_tol_mm=0, unaccounted_min_mm=0, veto_chord_mm=0, veto_confirm_ms=0)

_EARTH_R_MM = 6371008800.0  # mean Earth radius in mm
_E7_TO_RAD = math.pi / 1800000000.0
_UNKNOWN = const(-1)

DEFAULTS = {
    "hdop_max_x10": 50,  # drop fixes with HDOP > 5.0
    "sats_min": 4,
    "v_max_mmps": 70000,  # 252 km/h: faster implied motion is a jump
    "a_max_mmps2": 15000,  # 1.5 g change of reported speed
    "jump_tol_mm": 30000,  # position noise allowance in the jump test
    "move_on_mmps": 1500,  # start counting above 5.4 km/h ...
    "move_on_ms": 1000,  # ... held this long (distance in between is kept pending, then credited)
    "move_off_mmps": 800,  # stop counting below 2.9 km/h
    "creep_mmps": 300,  # below this, pending distance is discarded
    "accel_veto_mmps": 5000,  # accelerometer 'still' vetoes motion only below this GNSS speed ...
    "veto_confirm_ms": 3000,  # ... unless speed >= move_on is held this long (towed: no vibration) ...
    "veto_chord_mm": 10000,  # ... and the positions moved this far since the pending distance began
    "bridge_min_ms": 3000,  # a gap longer than this between accepted fixes is an outage
    "bridge_max_ms": 1800000,  # 30 min: longer gaps are not bridged (box off / parked)
    "bridge_path_factor_x100": 115,  # bridged = clamp(avg speed * dt, straight line, 1.15 * straight line)
    "bridge_course_min_mmps": 3000,  # courses at both ends of a gap are trusted above this speed ...
    "bridge_course_min_mm": 100000,  # ... and when the straight line is this long (bearing noise)
    "bridge_course_tol_cdeg": 200,  # course noise margin added to the course vs chord deviation
    "stop_tol_mm": 500,  # stopping interval: straight line, at most the old speed * dt + this ...
    "stop_chord_min_mmps": 4000,  # ... when stopping from this speed; below, trapezoid <= line + tol
    "reanchor_n": 5,  # consecutive mutually consistent 'jump' fixes: accept the new place, add nothing
    "accept_estimated": 0,  # GGA quality 6 / mode E (dead reckoning) fixes
    "unaccounted_min_mm": 500000,  # report moves of 500 m or more while the box was off
}

_REASONS = ("no_fix", "estimated", "zero_zero", "hdop", "sats", "jump", "accel", "parked", "stale",
            "reanchor")


def distance_mm(lat1_e7, lon1_e7, lat2_e7, lon2_e7):
    """Great-circle distance in mm (haversine on the mean sphere), as an int."""
    # the differences from the integers: on a single-precision port (ESP32, RP2040) a latitude in
    # radians has a 0.36 m step (24-bit mantissa), and p2 - p1 would carry it into every distance
    p1 = lat1_e7 * _E7_TO_RAD
    p2 = lat2_e7 * _E7_TO_RAD
    dp = (lat2_e7 - lat1_e7) * _E7_TO_RAD
    dl = (lon2_e7 - lon1_e7) * _E7_TO_RAD
    if dl > math.pi:
        dl -= 2 * math.pi
    elif dl < -math.pi:
        dl += 2 * math.pi
    s1 = math.sin(dp * 0.5)
    s2 = math.sin(dl * 0.5)
    h = s1 * s1 + math.cos(p1) * math.cos(p2) * s2 * s2
    if h > 1.0:
        h = 1.0
    return int(2.0 * _EARTH_R_MM * math.asin(math.sqrt(h)) + 0.5)


class Odometer:
    def __init__(self, cfg=None, state=None):
        c = DEFAULTS  # shared (never written) while nothing overrides it: one 24-key table, not two
        if cfg:
            c = dict(DEFAULTS)
            for k in cfg:
                if k not in DEFAULTS:
                    raise ValueError("unknown odometer config key %r" % (k,))
                v = cfg[k]
                if not isinstance(v, int) or v < 0:
                    raise ValueError("odometer config %r must be an int >= 0, got %r" % (k, v))
                c[k] = v
        self.cfg = c
        self.counters = {}
        for r in _REASONS:
            self.counters[r] = 0
        self.counters["accepted"] = 0
        self.counters["bridges"] = 0
        self.total_mm = 0
        self.trip_mm = 0
        self.bridged_mm = 0
        self.moving = 0
        self._acc_um = 0  # sub-mm remainder of the speed integral
        self._pending_um = 0  # distance while speeding up, credited once motion is confirmed
        self._on_since = -1  # t (ms) since speed >= move_on
        self._pend_t = 0  # box ms, position and 'accelerometer said still' of the pending distance's start
        self._pend_lat = 0
        self._pend_lon = 0
        self._pend_veto = 0
        self._has_last = 0
        self._lat = 0
        self._lon = 0
        self._t = 0  # ms time of the last accepted fix (utc ms when known, else box t_ms)
        self._t_box = 0
        self._t_utc = -1
        self._v = 0  # mm/s at the last accepted fix
        self._course = -1  # cdeg at the last accepted fix (-1 unknown)
        self._rej_n = 0  # consecutive jump rejections
        self._rej_lat = 0
        self._rej_lon = 0
        self._rej_t = 0
        self._stored = None  # (lat_e7, lon_e7) from persistence: for unaccounted_mm
        self._boot_checked = 0
        if state:
            self.restore(state)

    # ------------------------------------------------------------------ persistence
    def state(self):
        s = {"total_mm": self.total_mm, "bridged_mm": self.bridged_mm, "has_pos": 0, "lat_e7": 0, "lon_e7": 0}
        if self._has_last:
            s["has_pos"] = 1
            s["lat_e7"] = self._lat
            s["lon_e7"] = self._lon
        elif self._stored is not None:
            s["has_pos"] = 1
            s["lat_e7"] = self._stored[0]
            s["lon_e7"] = self._stored[1]
        return s

    def restore(self, st):
        try:
            self.total_mm = int(st.get("total_mm", 0))
            self.bridged_mm = int(st.get("bridged_mm", 0))
            if st.get("has_pos", 0):
                self._stored = (int(st["lat_e7"]), int(st["lon_e7"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("odometer state: bad or missing field in %r" % (st,))
        if self.total_mm < 0 or self.bridged_mm < 0:
            raise ValueError("odometer state: negative total_mm/bridged_mm")

    def start_trip(self):
        self.trip_mm = 0

    # ------------------------------------------------------------------ gate
    def _reject(self, fix):
        """Static quality gate: reason name or None."""
        if not fix.valid or fix.quality == 0:
            return "no_fix"
        if fix.quality == 6 and not self.cfg["accept_estimated"]:
            return "estimated"
        if fix.mode == "E" and not self.cfg["accept_estimated"]:
            return "estimated"
        if fix.lat_e7 == 0 and fix.lon_e7 == 0:
            return "zero_zero"
        if fix.hdop_x10 > self.cfg["hdop_max_x10"]:
            return "hdop"
        if 0 <= fix.sats < self.cfg["sats_min"]:
            return "sats"
        return None

    def good(self, fix):
        return self._reject(fix) is None

    def unaccounted_mm(self, fix):
        """First good fix after boot vs the last stored position: the distance (mm) when it is at least
        cfg unaccounted_min_mm, else 0. Returns 0 after the first good fix has been checked."""
        if self._boot_checked or self._reject(fix) is not None:
            return 0
        self._boot_checked = 1
        if self._stored is None:
            return 0
        d = distance_mm(self._stored[0], self._stored[1], fix.lat_e7, fix.lon_e7)
        return d if d >= self.cfg["unaccounted_min_mm"] else 0

    # ------------------------------------------------------------------ per fix
    def on_fix(self, fix, accel_moving=-1):
        cfg = self.cfg
        why = self._reject(fix)
        if why is not None:
            self.counters[why] += 1
            return 0
        t_box = fix.t_ms
        t_utc = fix.utc_s * 1000 + fix.utc_ms if fix.utc_s >= 0 else -1
        if not self._has_last:
            self._accept(fix, t_box, t_utc, fix.speed_mmps if fix.speed_mmps >= 0 else 0)
            self._boot_checked = 1
            return 0
        # elapsed time: receiver UTC when both known and consistent with box time, else box time
        dt = t_box - self._t_box
        if t_utc >= 0 and self._t_utc >= 0:
            du = t_utc - self._t_utc
            if du > 0 and (dt <= 0 or abs(du - dt) < 1000):
                dt = du
        if dt <= 0:
            self.counters["stale"] += 1
            return 0
        d_mm = distance_mm(self._lat, self._lon, fix.lat_e7, fix.lon_e7)
        v = fix.speed_mmps
        # jump test: farther than the fastest plausible motion plus noise
        if d_mm > (cfg["v_max_mmps"] * dt) // 1000 + cfg["jump_tol_mm"]:
            return self._jumped(fix, t_box, t_utc, v)
        if v >= 0 and dt <= 5000 and abs(v - self._v) * 1000 > cfg["a_max_mmps2"] * dt + 2000000:
            # reported speed changed faster than a car can (allow 2 m/s noise)
            self.counters["accel"] += 1
            return 0
        self._rej_n = 0
        if v < 0:  # no Doppler speed (RMC without speed, GGA-only): speed implied by positions
            v = (d_mm * 1000) // dt
        credited = 0
        if dt > cfg["bridge_min_ms"]:
            credited = self._bridge(fix, dt, d_mm, v)
            self._accept(fix, t_box, t_utc, v)
            return credited
        credited = self._integrate(dt, v, accel_moving, t_box, d_mm, fix)
        self._accept(fix, t_box, t_utc, v)
        return credited

    def _accept(self, fix, t_box, t_utc, v):
        self.counters["accepted"] += 1
        self._has_last = 1
        self._lat = fix.lat_e7
        self._lon = fix.lon_e7
        self._t_box = t_box
        self._t_utc = t_utc
        self._v = v
        self._course = fix.course_cdeg
        self._rej_n = 0

    def _credit(self, mm):
        if mm > 0:
            self.total_mm += mm
            self.trip_mm += mm

    def _integrate(self, dt, v, accel_moving, t, d_mm, fix):
        cfg = self.cfg
        seg_um = (self._v + v) * dt  # trapezoid: (v0 + v1) / 2 * dt, in um (mm/s * ms / 2 * 2)
        seg_um //= 2
        vetoed = accel_moving == 0 and v < cfg["accel_veto_mmps"]
        if self.moving:
            # Moving is only ever confirmed by GNSS speed; once it is, the accelerometer's 'still' ends it
            # only below move_on: a towed car has no engine vibration at any speed (tow truck at 4 m/s).
            if v < cfg["move_off_mmps"] or (accel_moving == 0 and v < cfg["move_on_mmps"]):
                # The car stopped somewhere in this interval: the trapezoid assumes a steady
                # deceleration over all of dt, and is wrong both ways (a crash, 14 m/s -> 0 in 0.1 s,
                # is credited 7 m at 1 Hz; braking late, 11 m/s held then a hard stop, 5.5 m of 7.6).
                # From a real speed the straight line between the two fixes is the better measure
                # (~0.5 m noise), at most the old speed held over dt. From a low speed (a gentle
                # stop, or a multipath speed spike while parked) the trapezoid is close and only
                # bounded by the straight line, so position noise cannot add distance.
                tol_um = cfg["stop_tol_mm"] * 1000
                if self._v >= cfg["stop_chord_min_mmps"]:
                    seg_um = d_mm * 1000
                    lim_um = self._v * dt + tol_um
                else:
                    lim_um = d_mm * 1000 + tol_um
                if seg_um > lim_um:
                    seg_um = lim_um
                self.moving = 0
                self._on_since = -1
                self._pending_um = 0
            return self._add_um(seg_um)
        # still: speed has to stay above move_on for move_on_ms before distance counts
        if v < cfg["creep_mmps"]:
            if self._pending_um:
                self.counters["parked"] += 1
            self._pending_um = 0
            self._on_since = -1
            return 0
        if self._pending_um == 0 or (
                vetoed and self._on_since < 0 and t - self._pend_t > cfg["veto_confirm_ms"]):
            # pending distance starts at the last accepted fix (restarted while the accelerometer says
            # still and the speed stays below move_on: slow multipath wander must not pile up)
            self._pending_um = 0
            self._pend_t = self._t_box
            self._pend_lat = self._lat
            self._pend_lon = self._lon
            self._pend_veto = 0
        if vetoed:
            self._pend_veto = 1
            self.counters["parked"] += 1
        self._pending_um += seg_um
        if v >= cfg["move_on_mmps"]:
            if self._on_since < 0:
                self._on_since = t
            elif t - self._on_since >= (cfg["veto_confirm_ms"] if vetoed else cfg["move_on_ms"]):
                p = self._pending_um
                if self._pend_veto:
                    # the accelerometer said still (towed, or parked with multipath): the positions
                    # must have moved as well, and bound the credited distance
                    c = distance_mm(self._pend_lat, self._pend_lon, fix.lat_e7, fix.lon_e7)
                    if vetoed and c < cfg["veto_chord_mm"]:
                        return 0
                    c = (c + cfg["stop_tol_mm"]) * 1000
                    if p > c:
                        p = c
                self.moving = 1
                self._pending_um = 0
                return self._add_um(p)
        else:
            self._on_since = -1
        return 0

    def _add_um(self, um):
        self._acc_um += um
        mm = self._acc_um // 1000
        self._acc_um -= mm * 1000
        self._credit(mm)
        return mm

    def _bridge(self, fix, dt, d_mm, v):
        """Outage: straight-line distance (up to the path the speeds imply) when plausible."""
        cfg = self.cfg
        self._pending_um = 0
        self._on_since = -1
        was_moving = self.moving
        now_moving = v >= cfg["move_on_mmps"]
        self.moving = 1 if now_moving else 0
        if dt > cfg["bridge_max_ms"] or not (was_moving or now_moving):
            return 0
        if d_mm * 1000 > cfg["v_max_mmps"] * dt:
            return 0
        path = (self._v + v) * dt // 2000
        cap = d_mm * cfg["bridge_path_factor_x100"] // 100
        # The average of the two end speeds is a poor guess of the speed inside (a 2 % slower tunnel
        # over 1.2 km is 25 m); the road's shape is better known: with the courses at both ends close
        # to the chord's bearing the road is nearly straight, and a road whose heading stays within
        # alpha of the chord is at most chord / cos(alpha) long.
        c = self._course_cap(fix, d_mm, v)
        if c < cap:
            cap = c
        b = path if path > d_mm else d_mm
        if b > cap:
            b = cap
        self.counters["bridges"] += 1
        self.bridged_mm += b
        self._credit(b)
        return b

    def _course_cap(self, fix, d_mm, v):
        """Upper bound (mm) of the path over a gap from the courses at its ends vs the chord bearing,
        or a huge value when the courses are unknown or unreliable (slow, short chord)."""
        cfg = self.cfg
        c0 = self._course
        c1 = fix.course_cdeg
        vmin = cfg["bridge_course_min_mmps"]
        if c0 < 0 or c1 < 0 or self._v < vmin or v < vmin or d_mm < cfg["bridge_course_min_mm"]:
            return 1 << 62
        dn = float(fix.lat_e7 - self._lat)
        de = (fix.lon_e7 - self._lon) * math.cos((fix.lat_e7 + self._lat) * 0.5 * _E7_TO_RAD)
        brg = int(math.atan2(de, dn) * 18000.0 / math.pi)  # cdeg, -18000..18000
        a = _dev_cdeg(c0, brg)
        a1 = _dev_cdeg(c1, brg)
        if a1 > a:
            a = a1
        a += cfg["bridge_course_tol_cdeg"]
        if a >= 6000:  # beyond 60 deg: no useful bound (1 / cos = 2, above any path factor)
            return 1 << 62
        return int(d_mm / math.cos(a * math.pi / 18000.0)) + 1

    def _jumped(self, fix, t_box, t_utc, v):
        """A fix too far from the last accepted one. N consecutive fixes that agree with each other
        mean the last accepted position was the wrong one: re-anchor there, adding nothing."""
        cfg = self.cfg
        self.counters["jump"] += 1
        if self._rej_n > 0:
            dt = t_box - self._rej_t
            d = distance_mm(self._rej_lat, self._rej_lon, fix.lat_e7, fix.lon_e7)
            if dt > 0 and d <= (cfg["v_max_mmps"] * dt) // 1000 + cfg["jump_tol_mm"]:
                self._rej_n += 1
            else:
                self._rej_n = 1
        else:
            self._rej_n = 1
        self._rej_lat = fix.lat_e7
        self._rej_lon = fix.lon_e7
        self._rej_t = t_box
        if self._rej_n >= cfg["reanchor_n"]:
            self.counters["reanchor"] += 1
            self._accept(fix, t_box, t_utc, v if v >= 0 else 0)
            self.moving = 0
            self._pending_um = 0
            self._on_since = -1
        return 0


def _dev_cdeg(a, b):
    """|a - b| in cdeg, wrapped to 0..18000."""
    d = (a - b) % 36000
    return 36000 - d if d > 18000 else d
