# Trip state machine and per-trip accounting (runs at the GNSS fix rate, 1-10 Hz; not a hot path).
#
# A trip starts on ignition (engine running) or on motion confirmed by GNSS, and ends when the
# vehicle has been stationary (or the ignition off) for `trip_end_s`; stops shorter than that (lights,
# jams) stay inside the trip. The trip's end time is the last time the vehicle moved.
# Also here: over-speed, idling (engine on, not moving), towing (moving, ignition off), night time.
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(distance_mm=0, idle_event_s=0, max_speed_mmps=0, n_gnss_only=0, n_harsh_accel=0, n_harsh_brake=0,
         n_harsh_corner_left=0, n_harsh_corner_right=0, n_overspeed=0, n_unclassified=0, overspeed_kmh=0,
         overspeed_min_s=0, overspeed_ms=0, overspeed_s=0, speed_end_mmps=0, speed_start_mmps=0,
         start_lat_e7=0, start_lon_e7=0, start_utc_s=0, towing_min_s=0)

_IDLE = const(0)
_DRIVING = const(1)

# units: ms, mm/s, mV
_MOVE_MMPS = const(2000)      # moving: GNSS speed >= 2 m/s (7.2 km/h) ...
_STILL_MMPS = const(1000)     # ... still below 1 m/s (hysteresis)
_MOVE_CONFIRM_MS = const(5000)  # motion must last 5 s to start a trip without ignition
_ENGINE_ON_MV = const(13200)  # alternator charging: engine running

DEFAULTS = {
    "trip_end_s": 180,
    "overspeed_kmh": 130,
    "overspeed_min_s": 10,
    "idle_event_s": 300,
    "towing_min_s": 20,
}


def _cfg(cfg, key):
    if cfg and key in cfg:
        return cfg[key]
    return DEFAULTS[key]


def solar_hour(utc_s, lon_e7):
    """Local mean solar hour (0..23) from UTC seconds since 2000 and longitude: night is a matter of
    daylight, not of time zones, so this needs no time-zone table."""
    if utc_s < 0:
        return -1
    offset_s = (lon_e7 // 10000000) * 240  # 4 minutes per degree
    return ((utc_s + offset_s) % 86400) // 3600


def is_night(utc_s, lon_e7):
    h = solar_hour(utc_s, lon_e7)
    return h >= 0 and (h >= 22 or h < 6)


class TripTracker:
    """Fed fixes, power and events with box times; emits records through `emit(record_dict)`.

    Records emitted: trip_start, event (overspeed, idle, towing), trip_end (the summary).
    `seq` and `t_ms` of records are filled by the caller's emit (it owns the sequence numbers)."""

    def __init__(self, cfg=None, emit=None, score_fn=None, before_end=None):
        self.cfg = cfg
        self.emit = emit
        self.score_fn = score_fn
        # called at trip end before the summary is built, while the trip is still open: events that
        # are still pending elsewhere (motion's queue) come in through on_event and are counted
        self.before_end = before_end
        self.state = _IDLE
        self.trip = None        # dict of the current trip's accumulators
        self.trips = []         # finished trip summaries (kept for the replay report; bounded)
        self.ign = -1
        self.supply_mv = -1
        self._engine_off_ms = -1  # box ms at which ignition-and-engine went off (-1: never seen on)
        self._moving_since = -1
        self._last_move_ms = -1
        self._last_fix_ms = -1
        self._was_moving = False
        self._pending_mm = 0
        self._overspeed_since = -1
        self._idle_since = -1
        self._idle_reported = False
        self._towing_since = -1
        self._towing_reported = False
        self.last_fix = None    # (t_ms, utc_s, lat_e7, lon_e7, speed_mmps, course_cdeg)
        self.trip_start_seq = -1

    # ---- inputs ----
    def on_power(self, t_ms, ign, supply_mv):
        if (self.ign == 1 or self.supply_mv >= _ENGINE_ON_MV) and ign != 1 and supply_mv < _ENGINE_ON_MV:
            self._engine_off_ms = t_ms
        self.ign = ign
        self.supply_mv = supply_mv
        if self.state == _IDLE and ign == 1 and supply_mv >= _ENGINE_ON_MV:
            self._start(t_ms)

    def engine_on(self):
        if self.supply_mv < 0:
            return -1
        return 1 if (self.ign == 1 and self.supply_mv >= _ENGINE_ON_MV) else 0

    def nobody_driving(self, t_ms):
        """1 when an event that began at box time t_ms (ms) began with the ignition (as believed) off and
        the alternator not charging, and both still are: a harsh event then is the parked car being shaken
        (a tow truck's winch), nobody's driving. An event of the drive that is classified only after the
        engine went off (motion holds candidates) keeps its kind. 0 without power inputs."""
        if self.ign != 0 or self.supply_mv >= _ENGINE_ON_MV:
            return 0
        return 1 if t_ms >= self._engine_off_ms else 0

    def on_fix(self, t_ms, valid, utc_s, lat_e7, lon_e7, speed_mmps, course_cdeg, credited_mm, bridged_mm=0):
        """Called for every GNSS epoch with the odometer's credited distance for it (mm), and the part of
        it that bridged an outage (mm: the trip_end's bridged_m)."""
        dt_ms = t_ms - self._last_fix_ms if self._last_fix_ms >= 0 else 0
        if dt_ms > 5000:
            dt_ms = 0  # outage: time accounting resumes with the next fix
        self._last_fix_ms = t_ms
        if valid:
            self.last_fix = (t_ms, utc_s, lat_e7, lon_e7, speed_mmps, course_cdeg)
        speed = speed_mmps if (valid and speed_mmps >= 0) else -1
        # hysteresis: start moving at 2 m/s, stay moving down to 1 m/s
        moving = speed >= _MOVE_MMPS or (speed >= _STILL_MMPS and self._was_moving)
        self._was_moving = moving
        if moving:
            if self._moving_since < 0:
                self._moving_since = t_ms
            self._last_move_ms = t_ms
        else:
            self._moving_since = -1

        if self.state == _IDLE:
            # distance covered while motion is being confirmed belongs to the trip it starts
            self._pending_mm = self._pending_mm + credited_mm if moving else 0
            if moving and t_ms - self._moving_since >= _MOVE_CONFIRM_MS:
                self._start(self._moving_since, self._pending_mm)
                self._pending_mm = 0
            self._towing(t_ms, moving, speed)
            return
        tr = self.trip
        tr["distance_mm"] += credited_mm
        tr["bridged_mm"] += bridged_mm
        if speed > tr["max_speed_mmps"]:
            tr["max_speed_mmps"] = speed
        if valid:
            if tr["start_lat_e7"] == 0 and tr["start_lon_e7"] == 0:
                tr["start_lat_e7"] = lat_e7
                tr["start_lon_e7"] = lon_e7
            if tr["start_utc_s"] < 0 and utc_s >= 0:
                tr["start_utc_s"] = utc_s - (t_ms - tr["start_t_ms"]) // 1000
            tr["end_lat_e7"] = lat_e7
            tr["end_lon_e7"] = lon_e7
            if moving and is_night(utc_s, lon_e7):
                tr["night_ms"] += dt_ms
        self._overspeed(t_ms, speed, dt_ms)
        self._idle(t_ms, moving, dt_ms)
        self._towing(t_ms, moving, speed)
        # end of trip: stationary (or engine off) long enough
        end_ms = _cfg(self.cfg, "trip_end_s") * 1000
        if not moving and self._last_move_ms >= 0 and t_ms - self._last_move_ms >= end_ms:
            self._end(self._last_move_ms)
        elif (not moving and self._last_move_ms < 0 and t_ms - tr["start_t_ms"] >= end_ms
              and self.engine_on() != 1):
            self._end(t_ms)

    def on_event(self, ev):
        """A motion event (dict with 'type') that belongs to the current trip."""
        if self.trip is None:
            return
        key = "n_" + ev["type"]
        if key in self.trip:
            self.trip[key] += 1
        if ev.get("src") == "gnss":
            self.trip["n_gnss_only"] += 1
        # what the box's trip list reports of it (Box.summary): a 4-tuple (48 B), not the event's
        # dict (~200 B, kept for the whole trip: a trip of many events grew the heap by it)
        self.trip["events"].append((ev["type"], ev["t_ms"], ev.get("dur_ms", 0), ev.get("peak_mg", 0)))

    def tick(self, t_ms):
        """Called when no fix arrives (GNSS outage, or no receiver): ends a trip whose vehicle has been
        still and engine off for trip_end_s."""
        if self.state != _DRIVING:
            return
        ref = self._last_move_ms if self._last_move_ms >= 0 else self.trip["start_t_ms"]
        if self._last_fix_ms >= 0 and t_ms - self._last_fix_ms < 5000:
            return  # fixes are flowing: on_fix decides
        if self.engine_on() != 1 and t_ms - ref >= _cfg(self.cfg, "trip_end_s") * 1000:
            self._end(ref)

    def shutdown(self, t_ms):
        """Power is going away: close the trip at the last movement (or now)."""
        if self.state == _DRIVING:
            self._end(self._last_move_ms if self._last_move_ms >= 0 else t_ms)

    # ---- internals ----
    def _start(self, t_ms, pending_mm=0):
        # pending_mm: distance covered while the start was being confirmed; it belongs to this trip
        lf = self.last_fix
        lat = lf[2] if lf else 0
        lon = lf[3] if lf else 0
        utc = -1
        if lf and lf[1] >= 0:
            utc = lf[1] - (lf[0] - t_ms) // 1000
        # the accumulators first: a MemoryError building them (the supervisor catches it) must not leave
        # the tracker DRIVING with no trip dict (a TypeError at the next fix, out of the loop)
        tr = {
            "start_t_ms": t_ms, "start_utc_s": utc, "start_lat_e7": lat, "start_lon_e7": lon,
            "end_lat_e7": lat, "end_lon_e7": lon,
            "distance_mm": pending_mm, "bridged_mm": 0, "max_speed_mmps": 0,
            "n_harsh_accel": 0, "n_harsh_brake": 0, "n_harsh_corner_left": 0, "n_harsh_corner_right": 0,
            "n_crash": 0, "n_overspeed": 0, "n_idle": 0, "n_towing": 0, "n_unclassified": 0, "n_gnss_only": 0,
            "idle_ms": 0, "night_ms": 0, "overspeed_ms": 0, "events": [],
            # the trip_start's seq, set after its emit; in the literal so that the dict is not grown
            # after it, and so that a trip whose start record failed (MemoryError, caught by the
            # supervisor) still ends with a summary (its trip -1), not a KeyError at the trip's end
            "trip": -1,
        }
        self.trip = tr
        self.state = _DRIVING
        if not self._was_moving:
            # a movement before this trip (hours ago, the box asleep in between) must not end it at once
            self._last_move_ms = -1
        self._overspeed_since = -1
        self._idle_since = -1
        self._idle_reported = False
        # "seq" and "trip" (the emit sets them) in the literal: the dict is not grown (firmware/app.py _emit)
        rec = {"type": "trip_start", "t_ms": t_ms, "lat_e7": lat, "lon_e7": lon, "utc_s": utc, "seq": -1,
               "trip": -1}
        self.trip_start_seq = self._emit(rec)
        self.trip["trip"] = self.trip_start_seq

    def _end(self, end_ms):
        if self.before_end is not None:
            self.before_end()
        tr = self.trip
        start = tr["start_t_ms"]
        if end_ms < start:
            end_ms = start
        end_utc = -1
        if tr["start_utc_s"] >= 0:
            end_utc = tr["start_utc_s"] + (end_ms - start) // 1000
        s = {
            "type": "trip_end", "t_ms": end_ms, "utc_s": end_utc, "trip": tr["trip"],
            "start_t_ms": start, "end_t_ms": end_ms,
            "start_utc_s": tr["start_utc_s"], "end_utc_s": end_utc,
            "start_lat_e7": tr["start_lat_e7"], "start_lon_e7": tr["start_lon_e7"],
            "end_lat_e7": tr["end_lat_e7"], "end_lon_e7": tr["end_lon_e7"],
            "distance_m": tr["distance_mm"] // 1000, "bridged_m": tr["bridged_mm"] // 1000,
            "duration_s": (end_ms - start) // 1000, "max_speed_mmps": tr["max_speed_mmps"],
            "n_harsh_accel": tr["n_harsh_accel"], "n_harsh_brake": tr["n_harsh_brake"],
            "n_harsh_corner_left": tr["n_harsh_corner_left"],
            "n_harsh_corner_right": tr["n_harsh_corner_right"],
            "n_crash": tr["n_crash"], "n_overspeed": tr["n_overspeed"],
            "idle_s": tr["idle_ms"] // 1000, "night_s": tr["night_ms"] // 1000,
            "overspeed_s": tr["overspeed_ms"] // 1000, "score": -1,
            # "seq" is set by the emit (its sequence number), "events" after it, for the box's trip
            # list (None until then: the score counts the trip_end counters, not the list; the codec
            # reads only the trip_end fields): both keys in the literal so that the dict (~25 keys)
            # is not grown (rehashed into a second table) at the trip's end, the heap at its fullest
            "seq": -1, "events": None,
        }
        # present only when non-zero (the record format's optional trip_end fields)
        for k in ("n_unclassified", "n_gnss_only"):
            if tr[k]:
                s[k] = tr[k]
        if self.score_fn is not None:
            sc = self.score_fn(s)
            if isinstance(sc, dict):   # firmware.score.parts: the score and its note
                s["score"] = sc["score"]
                if sc.get("note"):
                    s["score_note"] = sc["note"]
            else:
                s["score"] = sc
        self._emit(s)
        s["events"] = tr["events"]
        if len(self.trips) >= 64:
            self.trips.pop(0)
        self.trips.append(s)
        self.trip = None
        self.state = _IDLE
        self._moving_since = -1

    def _emit(self, rec):
        if self.emit is not None:
            return self.emit(rec)
        return -1

    def _event(self, kind, t_ms, dur_ms, speed_start, speed_end):
        lf = self.last_fix
        ev = {
            "type": "event", "kind": kind, "t_ms": t_ms, "dur_ms": dur_ms, "peak_mg": 0, "mean_mg": 0,
            "speed_start_mmps": speed_start, "speed_end_mmps": speed_end,
            "lat_e7": lf[2] if lf else 0, "lon_e7": lf[3] if lf else 0,
            "course_cdeg": lf[5] if lf else -1, "utc_s": lf[1] if lf else -1,
        }
        self._emit(ev)
        if self.trip is not None:
            self.on_event({"type": kind, "t_ms": t_ms, "dur_ms": dur_ms,
                           "speed_start_mmps": speed_start, "speed_end_mmps": speed_end})

    def _overspeed(self, t_ms, speed, dt_ms):
        limit_mmps = _cfg(self.cfg, "overspeed_kmh") * 1000000 // 3600
        if speed > limit_mmps:
            self.trip["overspeed_ms"] += dt_ms
            if self._overspeed_since < 0:
                self._overspeed_since = t_ms
                self._overspeed_v0 = speed
                self._overspeed_reported = False
            elif (not self._overspeed_reported
                  and t_ms - self._overspeed_since >= _cfg(self.cfg, "overspeed_min_s") * 1000):
                self._overspeed_reported = True
                self._event("overspeed", self._overspeed_since, t_ms - self._overspeed_since,
                            self._overspeed_v0, speed)
        else:
            self._overspeed_since = -1

    def _idle(self, t_ms, moving, dt_ms):
        if not moving and self.engine_on() == 1:
            self.trip["idle_ms"] += dt_ms
            if self._idle_since < 0:
                self._idle_since = t_ms
                self._idle_reported = False
            elif not self._idle_reported and t_ms - self._idle_since >= _cfg(self.cfg, "idle_event_s") * 1000:
                self._idle_reported = True
                self._event("idle", self._idle_since, t_ms - self._idle_since, 0, 0)
        else:
            self._idle_since = -1

    def _towing(self, t_ms, moving, speed):
        if moving and self.ign == 0:
            if self._towing_since < 0:
                self._towing_since = t_ms
                self._towing_reported = False
            elif (not self._towing_reported
                  and t_ms - self._towing_since >= _cfg(self.cfg, "towing_min_s") * 1000):
                self._towing_reported = True
                self._event("towing", self._towing_since, t_ms - self._towing_since, speed, speed)
        else:
            self._towing_since = -1
