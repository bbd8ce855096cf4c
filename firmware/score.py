# -*- coding: utf-8 -*-
# Per-trip driving score (0-100). Integer arithmetic only, so the box (MicroPython) and the host
# (CPython) give identical results. Formula: docs/motion.md. The coach sentences that explain a score
# are host-side text (firmware/coach.py), not on the box.
#
# score = 100 - harsh - speeding - night - crash, clamped to 0..100, where
#   harsh    = 3/2 * (weighted harsh events per 100 km), capped at 60. Weights (x10): accel 10,
#              brake 15, corner 12; each event x severity (peak / threshold, 1..2) when the summary
#              carries its `events` list. The distance is floored at 10 km, so one event on a
#              1 km trip counts as 10 per 100 km, not 100.
#   speeding = 150 * overspeed_s / duration_s, capped at 30 (10 % of the time over the limit: -15)
#   night    = 10 * night_s / duration_s (all-night trip: -10; statistically riskier, not the driver's fault)
#   crash    = 15 per crash, capped at 30
# Trips shorter than 200 m with no event score 100 (nothing to judge).
#
# Partial scores: events the box saw but could not classify (`n_unclassified`: the mount was not
# calibrated, so accel, brake and cornering cannot be told apart) each count at the lowest weight
# (accel, severity 1), and the trip is marked partial (`note` 'partial_unclassified'); a partial
# trip never scores 100. Harsh accel/brake found from the GNSS speed alone (`n_gnss_only`, counted
# in n_harsh_accel / n_harsh_brake) are scored like the accelerometer's and noted 'gnss_only'.

from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(harsh_accel=0, harsh_brake=0, harsh_corner_left=0, harsh_corner_right=0, n_gnss_only=0,
         n_unclassified=0, overspeed_s=0, partial_unclassified=0)

_W_ACCEL = const(10)
_W_BRAKE = const(15)
_W_CORNER = const(12)
_MIN_DIST_M = const(10000)
_HARSH_CAP = const(60)
_SPEED_CAP = const(30)
_CRASH_EACH = const(15)
_CRASH_CAP = const(30)

# default thresholds in mg (2.5 / 2.7 / 3.4 m/s^2), used for the severity of listed events
_THR_MG = {"harsh_accel": 255, "harsh_brake": 275, "harsh_corner_left": 347, "harsh_corner_right": 347}
_WEIGHT = {"harsh_accel": _W_ACCEL, "harsh_brake": _W_BRAKE, "harsh_corner_left": _W_CORNER,
           "harsh_corner_right": _W_CORNER}


def _get(summary, key):
    v = summary.get(key, 0)
    if v is None:
        return 0
    if not isinstance(v, int):
        raise ValueError("summary: field %s must be an int, got %r" % (key, v))
    return v if v > 0 else 0


def _weighted_x100(summary):
    """Sum of event weights x severity, x100 (integer)."""
    evs = summary.get("events")
    listed = {}
    total = 0
    if isinstance(evs, list):
        for e in evs:
            kind = e.get("type", e.get("kind")) if isinstance(e, dict) else None
            if kind not in _WEIGHT:
                continue
            peak = e.get("peak_mg", 0)
            sev10 = 10
            if isinstance(peak, int) and peak > 0:
                sev10 = peak * 10 // _THR_MG[kind]
                sev10 = 10 if sev10 < 10 else (20 if sev10 > 20 else sev10)
            total += _WEIGHT[kind] * sev10
            listed[kind] = listed.get(kind, 0) + 1
    # unclassified events: at least the lightest harsh event each
    total += _get(summary, "n_unclassified") * _W_ACCEL * 10
    # counts not covered by the list (or no list): severity 1
    for kind, key in (("harsh_accel", "n_harsh_accel"), ("harsh_brake", "n_harsh_brake"),
                      ("harsh_corner_left", "n_harsh_corner_left"),
                      ("harsh_corner_right", "n_harsh_corner_right")):
        extra = _get(summary, key) - listed.get(kind, 0)
        if extra > 0:
            total += extra * _WEIGHT[kind] * 10
    return total


def note(summary):
    """'' for a complete score, else the reasons joined by '+': 'partial_unclassified' (events not
    classified: uncalibrated mount), 'gnss_only' (harsh accel/brake from the GNSS speed alone)."""
    out = ""
    if _get(summary, "n_unclassified"):
        out = "partial_unclassified"
    if _get(summary, "n_gnss_only"):
        out = out + "+gnss_only" if out else "gnss_only"
    return out


def parts(summary):
    """The score's penalties (ints): harsh, speeding, night, crash, the score, and its note
    (see note(): '' when complete)."""
    if not isinstance(summary, dict):
        raise ValueError("summary: expected a dict (trip_end record)")
    dist = _get(summary, "distance_m")
    dur = _get(summary, "duration_s")
    w100 = _weighted_x100(summary)
    n_crash = _get(summary, "n_crash")
    d_eff = dist if dist > _MIN_DIST_M else _MIN_DIST_M
    # events per 100 km = w100/100 * 100000 / d_eff; penalty = 3/2 of it
    harsh = (w100 * 1500 + d_eff // 2) // d_eff
    if harsh > _HARSH_CAP:
        harsh = _HARSH_CAP
    speeding = 0
    night = 0
    if dur > 0:
        speeding = 150 * _get(summary, "overspeed_s") // dur
        if speeding > _SPEED_CAP:
            speeding = _SPEED_CAP
        ns = _get(summary, "night_s")
        night = 10 * (ns if ns < dur else dur) // dur
    crash = _CRASH_EACH * n_crash
    if crash > _CRASH_CAP:
        crash = _CRASH_CAP
    if dist < 200 and w100 == 0 and n_crash == 0 and speeding == 0:
        total = 100
    else:
        total = 100 - harsh - speeding - night - crash
    total = 0 if total < 0 else (100 if total > 100 else total)
    nt = note(summary)
    if total == 100 and _get(summary, "n_unclassified"):
        total = 99   # partial: never a clean 100
    return {"harsh": harsh, "speeding": speeding, "night": night, "crash": crash, "score": total, "note": nt}


def score(summary):
    """Driving score 0..100 of a trip_end record dict."""
    return parts(summary)["score"]
