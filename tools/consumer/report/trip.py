"""What every report output shows of a trip (consumer trip, position and event dicts): speed bins and
event styles, labels and details, the stats table, titles, record times."""
import math

from tools.consumer import db as consumer_db
from tools.consumer.trips import reasons_text

SPEED_BINS = [  # (upper bound km/h, colour, label)
    (30, "#2b6cb0", "< 30"),
    (50, "#0ea5a5", "30-50"),
    (70, "#38a169", "50-70"),
    (90, "#d69e2e", "70-90"),
    (110, "#dd6b20", "90-110"),
    (1e9, "#c53030", "> 110"),
]


EVENT_STYLE = {  # kind -> (colour, English label, French label)
    "harsh_brake": ("#e53e3e", "harsh braking", "freinage brusque"),
    "harsh_accel": ("#dd6b20", "harsh acceleration", "acceleration brusque"),
    "harsh_corner_left": ("#805ad5", "harsh left turn", "virage serre a gauche"),
    "harsh_corner_right": ("#805ad5", "harsh right turn", "virage serre a droite"),
    "overspeed": ("#d53f8c", "over speed", "exces de vitesse"),
    "idle": ("#718096", "idling", "ralenti"),
    "towing": ("#975a16", "towing", "remorquage"),
    "crash": ("#000000", "CRASH", "CHOC"),
    "unclassified": ("#a0aec0", "unclassified", "non classe"),
    "shock": ("#a0aec0", "shock (parked, not driving)", "choc (a l'arret)"),
    "harsh_accel_gnss": ("#dd6b20", "harsh acceleration (GNSS only)", "acceleration brusque (GNSS seul)"),
    "harsh_brake_gnss": ("#e53e3e", "harsh braking (GNSS only)", "freinage brusque (GNSS seul)"),
}


def speed_kmh(mmps):
    return -1.0 if mmps is None or mmps < 0 else mmps * 0.0036


def speed_color(kmh):
    for hi, c, _ in SPEED_BINS:
        if kmh < hi:
            return c
    return SPEED_BINS[-1][1]


def nice_step(span, n):
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_km(m):
    return "-" if m is None else "%.2f km" % (m / 1000.0)


def fmt_dur(s):
    if s is None:
        return "-"
    s = int(s)
    return (("%d h %02d min" % (s // 3600, s % 3600 // 60)) if s >= 3600
            else ("%d min %02d s" % (s // 60, s % 60)))


def event_label(e, lang="en"):
    st = EVENT_STYLE.get(e.get("kind"), EVENT_STYLE["unclassified"])
    return st[1] if lang == "en" else st[2]


def event_detail(e):
    bits = []
    if e.get("peak_mg") is not None:
        bits.append("peak %.2f g" % (e["peak_mg"] / 1000.0))
    sp = e.get("speed_start_mmps", e.get("speed_mmps"))
    if sp is not None and sp >= 0:
        if e.get("speed_end_mmps") is not None and e["speed_end_mmps"] >= 0 and "speed_start_mmps" in e:
            bits.append("%d -> %d km/h" % (round(speed_kmh(sp)), round(speed_kmh(e["speed_end_mmps"]))))
        else:
            bits.append("%d km/h" % round(speed_kmh(sp)))
    if e.get("dur_ms"):
        bits.append("%.1f s" % (e["dur_ms"] / 1000.0))
    return ", ".join(bits)


def coach_sentences(summary, lang):
    if summary is None:
        return ["(trip still open: no summary received yet)" if lang == "en" else
                "(trajet en cours : pas encore de resume)"]
    try:
        from firmware import coach as coach_mod
    except ImportError as e:
        return ["(coach unavailable: %s)" % e]
    return list(coach_mod.coach(summary, lang))


def event_counts(t, events):
    s = t.get("summary")
    if s:
        return [("harsh braking", s.get("n_harsh_brake", 0)),
                ("harsh acceleration", s.get("n_harsh_accel", 0)),
                ("harsh cornering", s.get("n_harsh_corner_left", 0) + s.get("n_harsh_corner_right", 0)),
                ("over speed", s.get("n_overspeed", 0)), ("crash", s.get("n_crash", 0))]
    counts = {}
    for e in events:
        counts[event_label(e)] = counts.get(event_label(e), 0) + 1
    return sorted(counts.items())


def stats(t, pos):
    s = t.get("summary") or {}
    max_mmps = s.get("max_speed_mmps")
    if max_mmps is None and pos:
        max_mmps = max(p["speed_mmps"] for p in pos)
    rows = [
        ("Start (UTC)", (consumer_db.utc_iso(t.get("start_utc_s")) or "-").replace("T", " ").rstrip("Z")),
        ("End (UTC)", (consumer_db.utc_iso(t.get("end_utc_s")) or "-").replace("T", " ").rstrip("Z")),
        ("Distance", fmt_km(t.get("distance_m"))),
        ("Duration", fmt_dur(t.get("duration_s"))),
        ("Max speed", "-" if max_mmps is None else "%d km/h" % round(speed_kmh(max_mmps))),
        ("Positions", str(len(pos))),
        ("Battery (start / end)", battery_text(t)),
    ]
    if t.get("towed"):
        rows.append(("Towed", "moved with the ignition off: a tow, not the driver's drive"))
    if t["closed"]:
        # what the bill counts (tools/consumer/bill.py, default: towed km left out)
        towed = t.get("towed_m", 0) or 0
        rows.append(("Billed distance", fmt_km((t.get("distance_m") or 0) - towed)
                     + (" (%s towed, not billed)" % fmt_km(towed) if towed else "")))
    if t.get("km_incomplete") and t["closed"]:
        rows.append(("Distance INCOMPLETE", "may be short of the distance driven: "
                     + reasons_text(t["km_incomplete_reasons"])))
    if s:
        rows.append(("Night / idle", "%s / %s" % (fmt_dur(s.get("night_s", 0)), fmt_dur(s.get("idle_s", 0)))))
        rows.append(("Over speed", fmt_dur(s.get("overspeed_s", 0))))
        note = s.get("score_note", "")
        if "partial_unclassified" in note:
            rows.append(("Score", "partial: %d event(s) not classified (box not calibrated)"
                         % s.get("n_unclassified", 0)))
        if "gnss_only" in note:
            rows.append(("GNSS-only events",
                         "%d harsh accel/brake from GNSS speed alone" % s.get("n_gnss_only", 0)))
    return rows


def battery_text(t):
    """The car battery at the trip start / end as the box read it: '12.47 V / 12.45 V', with 'LOW' when the
    start reading is below consumer_db.LOW_BATTERY_MV; '-' for a reading the box did not send."""
    def v(mv):
        return "-" if mv is None else "%.2f V" % (mv / 1000.0)
    text = "%s / %s" % (v(t.get("supply_start_mv")), v(t.get("supply_end_mv")))
    if t.get("low_battery"):
        text += " LOW (below %.1f V at rest: the car may not start)" % (consumer_db.LOW_BATTERY_MV / 1000.0)
    return text


def title(t):
    return "Trip %d - %s" % (t["id"], t["device"])


def subtitle(t):
    if not t["closed"]:
        state = " (open: no trip_end yet; %d records so far)" % t["records_held"]
    elif t["complete"]:
        state = ", complete: %d/%d records" % (t["records_held"], t["records_expected"])
    else:
        state = ", INCOMPLETE: %d of %d records held%s, missing seqs %s" % (
            t["records_held"], t["records_expected"],
            " (%d reported lost)" % t["records_lost"] if t["records_lost"] else "",
            ", ".join("%d-%d" % (a, b) if a != b else str(a) for a, b in t["gaps"][:6]))
    return "boot %d, trip %d%s" % (t["boot"], t["trip"], state)


def t0_of(t, pos):
    if t.get("start_t_ms") is not None:
        return t["start_t_ms"]
    return pos[0]["t_ms"] if pos else 0


def score_color(score):
    if score is None:
        return "#718096"
    return "#2f855a" if score >= 80 else ("#d69e2e" if score >= 60 else "#c53030")


def iso_time(t, t_ms, utc_s):
    """ISO time of a record: its own utc_s, else derived from the trip start (utc + box ms)."""
    if utc_s is not None and utc_s >= 0:
        return consumer_db.utc_iso(utc_s)
    if (t_ms is not None and t.get("start_utc_s") is not None and t["start_utc_s"] >= 0
        and t.get("start_t_ms") is not None):
        return consumer_db.utc_iso(t["start_utc_s"] + (t_ms - t["start_t_ms"]) // 1000)
    return None
