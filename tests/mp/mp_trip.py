# Trip state machine tests (CPython and MicroPython).
from firmware.trip import TripTracker, is_night, solar_hour
from mptest import assert_eq


class Sink:
    def __init__(self):
        self.recs = []

    def __call__(self, rec):
        self.recs.append(rec)
        return len(self.recs)

    def types(self):
        return [r["type"] if r["type"] != "event" else r["kind"] for r in self.recs]


def drive(tt, t0, seconds, speed_mmps, step_ms=1000, utc0=800000000, lon_e7=48400000):
    t = t0
    for i in range(seconds * 1000 // step_ms):
        t += step_ms
        tt.on_fix(t, 1, utc0 + t // 1000, 457600000, lon_e7, speed_mmps, 9000, speed_mmps * step_ms // 1000)
    return t


def test_trip_with_short_stop_is_one_trip():
    sink = Sink()
    tt = TripTracker({"trip_end_s": 120}, emit=sink)
    t = drive(tt, 0, 30, 0)
    t = drive(tt, t, 300, 15000)         # 5 min at 54 km/h
    t = drive(tt, t, 60, 0)              # red light / jam: 1 min
    t = drive(tt, t, 300, 15000)
    t = drive(tt, t, 200, 0)             # parked
    assert_eq(sink.types(), ["trip_start", "trip_end"], "records")
    s = sink.recs[-1]
    assert_eq(s["distance_m"], 9000, "distance")
    # start confirmed after 5 s of motion is back-dated to the motion start; end = last movement
    assert_eq(s["start_t_ms"], 31000, "start")
    assert_eq(s["end_t_ms"], 30000 + 660000, "end")
    assert_eq(s["trip"], 1, "trip id = trip_start seq")


def test_overspeed_and_towing():
    sink = Sink()
    tt = TripTracker({"overspeed_kmh": 110, "overspeed_min_s": 10, "towing_min_s": 20}, emit=sink)
    tt.on_power(0, 1, 14200)
    t = drive(tt, 0, 60, 36000)          # 130 km/h for a minute
    t = drive(tt, t, 200, 0)
    tt.on_power(t, 0, 12400)
    t = drive(tt, t, 400, 0)
    assert_eq(sink.types()[:3], ["trip_start", "overspeed", "trip_end"], "overspeed")
    s = sink.recs[2]
    assert_eq(s["n_overspeed"], 1, "count")
    assert_eq(s["overspeed_s"] >= 59, True, "overspeed time")
    t = drive(tt, t, 60, 5000)           # moving with the ignition off: towed
    assert_eq("towing" in sink.types(), True, "towing")


def test_idle_event():
    sink = Sink()
    tt = TripTracker({"idle_event_s": 60, "trip_end_s": 600}, emit=sink)
    tt.on_power(0, 1, 14000)
    t = drive(tt, 0, 30, 10000)
    t = drive(tt, t, 120, 0)             # engine on, not moving: idling
    assert_eq("idle" in sink.types(), True, "idle event")
    t = drive(tt, t, 30, 10000)
    tt.on_power(t, 0, 12300)
    t = drive(tt, t, 700, 0)
    s = sink.recs[-1]
    assert_eq(s["type"], "trip_end", "ended")
    assert_eq(119 <= s["idle_s"] <= 121, True, "idle seconds %d" % s["idle_s"])


def test_night():
    # 2000-01-01 23:30 UTC at longitude 0 is night, 12:00 is not; solar time follows longitude
    assert_eq(is_night(23 * 3600 + 1800, 0), True, "23:30")
    assert_eq(is_night(12 * 3600, 0), False, "noon")
    assert_eq(solar_hour(12 * 3600, 900000000), 18, "90 deg east: +6 h")


def test_partial_score_in_trip_end():
    # an uncalibrated trip: one unclassified candidate and one GNSS-only brake -> the trip_end says so
    from firmware.score import parts
    sink = Sink()
    tt = TripTracker({"trip_end_s": 120}, emit=sink, score_fn=parts)
    t = drive(tt, 0, 10, 0)
    t = drive(tt, t, 600, 15000)          # 9 km
    tt.on_event({"type": "unclassified", "t_ms": t - 200000, "peak_mg": 380})
    tt.on_event({"type": "harsh_brake", "src": "gnss", "t_ms": t - 100000, "peak_mg": 300})
    t = drive(tt, t, 200, 0)
    s = sink.recs[-1]
    assert_eq(s["type"], "trip_end", "ended")
    assert_eq((s["n_unclassified"], s["n_gnss_only"], s["n_harsh_brake"]), (1, 1, 1), "counts")
    assert_eq(s["score_note"], "partial_unclassified+gnss_only", "note")
    # 10 km floor: brake 15 + unclassified 10 weighted = 25 per 10 km = 250 per 100 km -> 37.5 -> 38 (rounded)
    assert_eq(s["score"], 62, "score")
    # a complete trip has no optional fields at all
    sink2 = Sink()
    tt2 = TripTracker({"trip_end_s": 120}, emit=sink2, score_fn=parts)
    t = drive(tt2, 0, 10, 0)
    t = drive(tt2, t, 600, 15000)
    t = drive(tt2, t, 200, 0)
    s = sink2.recs[-1]
    assert_eq([k for k in ("n_unclassified", "n_gnss_only", "score_note") if k in s], [],
              "no optional fields")
    assert_eq(s["score"], 100, "clean trip")


def test_a_trip_whose_start_record_failed_still_ends():
    # the trip_start's emit raised (a MemoryError on a full heap: the supervisor counts it as a loop
    # fault and goes on); the trip still ends with its summary, its trip id unknown (-1)
    sink = Sink()

    def emit(rec):
        if rec["type"] == "trip_start":
            raise MemoryError()
        return sink(rec)

    tt = TripTracker({"trip_end_s": 120}, emit=emit)
    try:
        drive(tt, 0, 30, 15000)
    except MemoryError:
        pass
    tt.shutdown(40000)
    assert_eq(sink.types(), ["trip_end"], "records")
    assert_eq((sink.recs[0]["trip"], sink.recs[0]["start_t_ms"]), (-1, 1000))
