"""`paydbox bill`: what the consumer's trips bill, per device and for the whole database (docs/fleet.md
"Billing").

Billed: the closed trips' km (the box's trip_end distance_m), less the km towed (`towed_m`: an insurer bills
distance driven; `--bill-towed` bills them too). Listed apart: the towed km, the km of open trips (no
trip_end yet: billed once it arrives), the distance the car moved while the box was off (tamper
`unaccounted_distance`: in no trip) and the km the box's own odometer counted in no trip held
(`odometer_outside_trips_m`: a lost trip). Flagged: the billed km of the trips whose km may be short of the
distance driven (`km_incomplete`, consumer_db._km_flags), with their reasons. The score is the mean of
the closed trips' scores, towed trips left out (not the driver's driving).
"""
import json
import sys

from tools.consumer import db as consumer_db
from tools.consumer.trips import reasons_text


def add_arguments(p):
    p.add_argument("--db", default=consumer_db.DEFAULT_DB,
                   help="consumer SQLite file or postgresql:// URL (default %(default)s)")
    p.add_argument("--device", help="only this device")
    p.add_argument("--bill-towed", action="store_true",
                   help="bill the km of towed trips too (default: listed apart as towed_m, not billed)")
    p.add_argument("--json", action="store_true", help="print the bill as JSON")


def _empty(device):
    return {"device": device, "trips": 0, "billed_m": 0, "flagged_m": 0, "flagged_trips": 0,
            "flagged_reasons": {}, "towed_m": 0, "towed_trips": 0, "open_trips": 0, "open_m": 0,
            "unaccounted_m": 0, "odometer_outside_trips_m": 0, "score_avg": None, "score_trips": 0}


def _add(b, t, bill_towed):
    if not t["closed"]:
        b["open_trips"] += 1
        b["open_m"] += t.get("distance_m") or 0
        return
    d = t.get("distance_m") or 0
    towed = t.get("towed_m", 0) or 0
    billed = d if bill_towed else d - towed
    b["trips"] += 1
    b["billed_m"] += billed
    if towed:
        b["towed_m"] += towed
        b["towed_trips"] += 1
    if t.get("km_incomplete"):
        b["flagged_m"] += billed
        b["flagged_trips"] += 1
        for k, v in t["km_incomplete_reasons"].items():
            b["flagged_reasons"][k] = b["flagged_reasons"].get(k, 0) + v
    if t.get("score") is not None and t["score"] >= 0 and not t.get("towed"):
        b["_scores"].append(t["score"])


def bill(db, device=None, bill_towed=False):
    """{"devices": [per-device bill], "total": the same summed over them, "bill_towed": bool}."""
    per = {}
    boots = set()
    for t in consumer_db.list_trips(db, device=device):
        b = per.get(t["device"])
        if b is None:
            b = per[t["device"]] = dict(_empty(t["device"]), _scores=[])
        _add(b, t, bill_towed)
        boots.add((t["device"], t["boot"]))
    for dev, boot in sorted(boots):
        per[dev]["odometer_outside_trips_m"] += consumer_db.odometer_outside_trips_m(db, dev, boot)
    q = "SELECT device, SUM(value) FROM tampers WHERE reason='unaccounted_distance'"
    args = ()
    if device:
        q += " AND device=?"
        args = (device,)
    for dev, mm in db.execute(q + " GROUP BY device", args).fetchall():
        b = per.get(dev)
        if b is None:
            b = per[dev] = dict(_empty(dev), _scores=[])
        b["unaccounted_m"] = int(mm or 0) // 1000
    total = dict(_empty(None), _scores=[])
    for b in per.values():
        for k, v in b.items():
            if k in ("device", "score_avg", "score_trips"):
                continue
            if k == "flagged_reasons":
                for r, n in v.items():
                    total[k][r] = total[k].get(r, 0) + n
            else:
                total[k] += v  # sums, and the scores' list
    out = []
    for b in sorted(per.values(), key=lambda b: b["device"]) + [total]:
        s = b.pop("_scores")
        b["score_trips"] = len(s)
        b["score_avg"] = round(sum(s) / len(s), 1) if s else None
        out.append(b)
    total = out.pop()
    del total["device"]
    return {"devices": out, "total": total, "bill_towed": bill_towed}


def format_bill(res):
    head = ("DEVICE", "TRIPS", "BILLED KM", "FLAGGED KM", "TOWED KM", "OPEN", "UNACCOUNTED KM", "SCORE")

    def row(name, b):
        km = ["%.2f" % (b[k] / 1000.0) for k in ("billed_m", "flagged_m", "towed_m", "unaccounted_m")]
        return (name, str(b["trips"]), km[0], km[1], km[2], str(b["open_trips"]), km[3],
                "-" if b["score_avg"] is None else "%.1f" % b["score_avg"])
    rows = [row(b["device"], b) for b in res["devices"]] + [row("TOTAL", res["total"])]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in [head] + rows]
    t = res["total"]
    lines.append("")
    lines.append("billed %.2f km%s, of which %.2f km flagged (km may be short of the distance driven: "
                 "%d trip(s)%s)"
                 % (t["billed_m"] / 1000.0, " (towed km included: --bill-towed)" if res["bill_towed"] else "",
                    t["flagged_m"] / 1000.0, t["flagged_trips"],
                    ": " + reasons_text(t["flagged_reasons"]) if t["flagged_reasons"] else ""))
    if t["towed_m"] and not res["bill_towed"]:
        lines.append("towed %.2f km (%d trip(s)): not billed, not in the score" % (t["towed_m"] / 1000.0,
                                                                                     t["towed_trips"]))
    if t["open_trips"]:
        lines.append("open %d trip(s), %.2f km so far: billed when their trip_end arrives"
                     % (t["open_trips"], t["open_m"] / 1000.0))
    if t["odometer_outside_trips_m"]:
        lines.append("the boxes' odometers counted %.2f km in no trip held (a lost trip, or km a box did not "
                     "give its trip): not billed" % (t["odometer_outside_trips_m"] / 1000.0))
    if t["unaccounted_m"]:
        lines.append("moved %.2f km while the box was off (tamper unaccounted_distance): in no trip, "
                     "not billed"
                     % (t["unaccounted_m"] / 1000.0))
    return "\n".join(lines)


def run(args):
    db = consumer_db.connect(args.db, create=False)
    try:
        res = bill(db, device=args.device, bill_towed=args.bill_towed)
    finally:
        db.close()
    if args.json:
        print(json.dumps(res, indent=1))
    elif not res["devices"]:
        print("no trips%s in %s" % (" for device " + args.device if args.device else "", args.db))
    else:
        print(format_bill(res))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["bill"] + sys.argv[1:]))
