"""`paydbox trips`: the trips stored by the consumer (`paydbox ingest`)."""
import json
import sys

from tools.consumer import db as consumer_db


def add_arguments(p):
    p.add_argument("--db", default=consumer_db.DEFAULT_DB,
                   help="consumer SQLite file or postgresql:// URL (default %(default)s)")
    p.add_argument("--device", help="only this device")
    p.add_argument("--json", action="store_true", help="one JSON list on stdout")


def fmt_duration(s):
    if s is None:
        return "-"
    s = int(s)
    return "%d:%02d:%02d" % (s // 3600, s % 3600 // 60, s % 60)


def fmt_time(utc_s):
    iso = consumer_db.utc_iso(utc_s)
    return iso.replace("T", " ").rstrip("Z") if iso else "-"


def trip_dict(t):
    """The machine form of one trip (also used by --json)."""
    return {
        "id": t["id"], "device": t["device"], "boot": t["boot"], "trip": t["trip"],
        "start": consumer_db.utc_iso(t.get("start_utc_s")), "end": consumer_db.utc_iso(t.get("end_utc_s")),
        "distance_m": t.get("distance_m"), "duration_s": t.get("duration_s"),
        "events": t.get("n_events"), "score": t.get("score"), "closed": t["closed"],
        # completeness: an insurer must know whether every record of the trip is in before billing it
        "complete": t["complete"], "records_expected": t["records_expected"],
        "records_held": t["records_held"], "records_lost": t["records_lost"], "gaps": t["gaps"],
        "score_note": (t.get("summary") or {}).get("score_note", ""),
        # the car battery as the box read it (status records' supply_mv, mV; None: no reading for this trip)
        "supply_start_mv": t.get("supply_start_mv"), "supply_end_mv": t.get("supply_end_mv"),
        "low_battery": t.get("low_battery"),
        # the car moved with the ignition off (a `towing` event in the trip): a tow, not the driver's drive;
        # towed_m of its distance_m were towed (not billed by default: docs/fleet.md "Billing")
        "towed": t.get("towed", False), "towed_m": t.get("towed_m", 0),
        # the km may be short of the distance driven (consumer_db._km_flags): {reason: count}
        "km_incomplete": t.get("km_incomplete", False),
        "km_incomplete_reasons": t.get("km_incomplete_reasons", {}),
    }


def battery_cell(t):
    """'12.47 V' (the reading at the trip start), 'LOW 11.90 V' below consumer_db.LOW_BATTERY_MV, '-'
    unknown."""
    mv = t.get("supply_start_mv")
    if mv is None:
        return "-"
    return ("LOW " if t.get("low_battery") else "") + "%.2f V" % (mv / 1000.0)


def records_cell(t):
    """'held/expected', flagged when the trip is not complete: 'GAPS' (missing, may still come),
    'LOST' (reported gone by the agent and the box), 'open' (no trip_end yet)."""
    cell = "%d/%d" % (t["records_held"], t["records_expected"])
    if not t["closed"]:
        return cell + "+ open"
    if t["complete"]:
        return cell
    return cell + (" LOST %d" % t["records_lost"] if t["records_lost"] else " GAPS")


def score_text(t):
    """The score as shown: '94', '94 partial' (events not classified: the box was not calibrated),
    '91 gnss' (harsh events from GNSS speed only), '91 TOW' (the car was towed), '-' when unknown."""
    if t.get("score") is None:
        return "-"
    note = (t.get("summary") or {}).get("score_note", "")
    tags = [w for w, key in (("partial", "partial_unclassified"), ("gnss", "gnss_only")) if key in note]
    if t.get("towed"):
        tags.append("TOW")  # the car was towed: not the driver's score
    return " ".join([str(t["score"])] + tags)


# how each km_incomplete reason reads in a table
REASON_TEXT = {"loop_fault": "loop_fault %d", "gnss_missing": "gnss_missing %d",
               "loop_fault_cap": "loop faults no longer recorded", "odometer_extra_m": "odometer +%d m",
               "records_missing": "%d records missing", "open": "open"}


def reasons_text(why):
    """{reason: count} -> 'loop_fault 3, odometer +394 m' (consumer_db._km_flags' reasons, in its order)."""
    return ", ".join((REASON_TEXT[k] % v if "%" in REASON_TEXT[k] else REASON_TEXT[k]) if k in REASON_TEXT
                     else "%s %s" % (k, v) for k, v in why.items())


def billing_cell(t):
    """'-', 'INCOMPLETE (loop_fault 3, odometer +394 m)' (the km may be short of the distance driven),
    'TOWED 4.76 km' (of the trip's km, not billed by default), or both."""
    bits = []
    if t.get("km_incomplete"):
        why = {k: v for k, v in t.get("km_incomplete_reasons", {}).items() if k != "open"}
        if why:  # an open trip says so in END and RECORDS already
            bits.append("INCOMPLETE (%s)" % reasons_text(why))
    if t.get("towed_m"):
        bits.append("TOWED %.2f km" % (t["towed_m"] / 1000.0))
    return "; ".join(bits) or "-"


def format_table(trips):
    head = ("ID", "DEVICE", "START (UTC)", "END (UTC)", "KM", "DURATION", "EVENTS", "SCORE", "BATTERY",
            "RECORDS", "BILLING")
    rows = []
    for t in trips:
        km = "-" if t.get("distance_m") is None else "%.2f" % (t["distance_m"] / 1000.0)
        score = score_text(t)
        end = fmt_time(t.get("end_utc_s")) + ("" if t["closed"] else " (open)")
        rows.append((str(t["id"]), t["device"], fmt_time(t.get("start_utc_s")), end, km,
                     fmt_duration(t.get("duration_s")),
                     "-" if t.get("n_events") is None else str(t["n_events"]), score, battery_cell(t),
                     records_cell(t), billing_cell(t)))
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    right = {4, 5, 6, 7, 8}
    out = []
    for r in [head] + rows:
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))
                   .rstrip())
    return "\n".join(out)


def run(args):
    db = consumer_db.connect(args.db, create=False)
    try:
        trips = consumer_db.list_trips(db, device=args.device)
    finally:
        db.close()
    if args.json:
        print(json.dumps([trip_dict(t) for t in trips], indent=1))
        return 0
    if not trips:
        print("no trips%s in %s" % (" for device " + args.device if args.device else "", args.db))
        return 0
    print(format_table(trips))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["trips"] + sys.argv[1:]))
