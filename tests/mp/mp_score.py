# Firmware tests for firmware/score.py, run under MicroPython and CPython.
from firmware.coach import coach
from firmware.score import parts, score
from mptest import assert_eq, assert_raises


def trip(**kw):
    s = {"type": "trip_end", "distance_m": 25000, "duration_s": 1800, "n_harsh_accel": 0, "n_harsh_brake": 0,
         "n_harsh_corner_left": 0, "n_harsh_corner_right": 0, "n_crash": 0, "n_overspeed": 0,
         "overspeed_s": 0, "night_s": 0, "idle_s": 0}
    s.update(kw)
    return s


def test_clean_trip_scores_100_and_praise():
    assert_eq(score(trip()), 100, "clean trip")
    c = coach(trip())
    assert_eq(c[0], "Score 100/100.", "first sentence")
    assert_eq("Well done" in c[1], True, "praise: %r" % c)
    assert_eq(coach(trip(), "fr")[1].startswith("Conduite souple"), True, "french praise")


def test_formula_values():
    # 1 brake in 25 km: 15 weighted / 25 km = 6 per 100 km -> 9 points
    assert_eq(parts(trip(n_harsh_brake=1))["harsh"], 9, "brake penalty")
    assert_eq(score(trip(n_harsh_brake=1)), 91, "one brake")
    # 10 % of the time over the limit: -15
    assert_eq(score(trip(overspeed_s=180)), 85, "speeding")
    # all-night trip: -10
    assert_eq(score(trip(night_s=1800)), 90, "night")
    assert_eq(score(trip(n_crash=1)), 85, "crash")
    # caps: never below 0
    assert_eq(score(trip(n_harsh_brake=50, overspeed_s=1800, night_s=1800, n_crash=3)), 0, "floor")


def test_monotonic_in_events():
    prev = 101
    for n in range(0, 12):
        s = score(trip(n_harsh_accel=n, n_harsh_corner_left=n // 2))
        if s > prev:
            raise AssertionError("score rose with more events: %d > %d" % (s, prev))
        prev = s
    # braking weighs more than acceleration
    if not score(trip(n_harsh_brake=2)) < score(trip(n_harsh_accel=2)):
        raise AssertionError("brake should weigh more than accel")


def test_short_trips():
    # no events on a 100 m move: nothing to judge
    assert_eq(score(trip(distance_m=100, duration_s=40)), 100, "tiny trip")
    assert_eq("Short trip" in coach(trip(distance_m=100, duration_s=40))[1], True, "short text")
    # one event on a 1 km trip counts as over 10 km (floor), not as 100 per 100 km
    assert_eq(score(trip(distance_m=1000, duration_s=120, n_harsh_brake=1)), 77,
              "floor at 10 km: 15 per 100 km x 1.5 = 22.5 -> 23")
    assert_eq(score(trip(distance_m=0, duration_s=0)), 100, "empty")


def test_severity_from_event_list():
    ev = [{"type": "harsh_brake", "peak_mg": 550}]   # twice the threshold
    a = score(trip(n_harsh_brake=1, events=ev))
    b = score(trip(n_harsh_brake=1))
    if not a < b:
        raise AssertionError("severe brake %d should score below a mild one %d" % (a, b))


def test_coach_priorities_and_languages():
    s = trip(n_harsh_brake=3, n_harsh_accel=1, n_harsh_corner_right=2, overspeed_s=600, night_s=1200,
             n_crash=1)
    en = coach(s)
    fr = coach(s, "fr")
    assert_eq(len(en), len(fr), "same sentences in both languages")
    assert_eq(en[1].startswith("A possible crash"), True, "crash first: %r" % en)
    assert_eq(en[2].startswith("You braked hard 3"), True, "most frequent next: %r" % en)
    assert_eq("bend" in en[3], True, "corners: %r" % en)
    assert_eq("10 min" in en[5], True, "speeding minutes: %r" % en)
    assert_eq("66%" in en[6], True, "night share: %r" % en)
    assert_eq(fr[2].startswith("Vous avez freiné brusquement 3 fois"), True, "fr: %r" % fr)
    for line in en + fr:
        assert_eq(isinstance(line, str) and len(line) > 5, True, "sentence")


def test_bad_input():
    assert_raises(ValueError, coach, trip(), "de")
    assert_raises(ValueError, score, [1, 2])
    assert_raises(ValueError, score, trip(distance_m=1.5))


def test_partial_score_unclassified():
    # events the box could not classify (uncalibrated mount) count at the lightest weight (accel,
    # severity 1) and make the score partial: 1 in 25 km = 10 weighted per 25 km = 4 per 100 km x 1.5 -> 6
    p = parts(trip(n_unclassified=1))
    assert_eq((p["score"], p["note"]), (94, "partial_unclassified"), "one unclassified event")
    # a long trip where the penalty rounds to 0 is still not a clean 100
    p = parts(trip(distance_m=500000, duration_s=18000, n_unclassified=1))
    assert_eq((p["harsh"], p["score"], p["note"]), (0, 99, "partial_unclassified"), "never 100 when partial")
    assert_eq(parts(trip())["note"], "", "complete score")
    c = coach(trip(n_unclassified=2))
    assert_eq("2 event(s) could not be classified" in c[1], True, "coach says so: %r" % c)
    assert_eq("Well done" in " ".join(c), False, "no praise on a partial score")


def test_gnss_only_events_scored_and_noted():
    # GNSS-only brakes are counted in n_harsh_brake (scored like any brake) and noted
    p = parts(trip(n_harsh_brake=1, n_gnss_only=1))
    assert_eq((p["score"], p["note"]), (91, "gnss_only"), "gnss-only brake")
    p = parts(trip(n_harsh_brake=1, n_gnss_only=1, n_unclassified=1))
    assert_eq(p["note"], "partial_unclassified+gnss_only", "both notes")
    assert_eq("GPS speed only" in " ".join(coach(trip(n_harsh_brake=1, n_gnss_only=1))), True, "coach")
