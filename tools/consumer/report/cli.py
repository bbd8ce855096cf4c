"""`paydbox report TRIP -o FILE`: the subcommand (the outputs are the modules beside it)."""
import json
import os
import sys

from tools.consumer import db as consumer_db
from tools.consumer.report.draw import page_canvas
from tools.consumer.report.geojson import geojson
from tools.consumer.report.gpx import write_gpx
from tools.consumer.report.html_page import write_html
from tools.consumer.report.trip import fmt_km, title


def add_arguments(p):
    p.add_argument("trip", metavar="TRIP", help="trip id from `paydbox trips` (or DEVICE:BOOT:TRIP)")
    p.add_argument("--db", default=consumer_db.DEFAULT_DB,
                   help="consumer SQLite file or postgresql:// URL (default %(default)s)")
    p.add_argument("-o", "--output", required=True, help="FILE.html, FILE.png, FILE.gpx or FILE.geojson")


def load(db_path, trip_id):
    db = consumer_db.connect(db_path, create=False)
    try:
        t = consumer_db.get_trip(db, trip_id)
        pos = consumer_db.trip_positions(db, t)
        ev = consumer_db.trip_events(db, t)
    finally:
        db.close()
    return t, pos, ev


def write_report(db_path, trip_id, out):
    t, pos, events = load(db_path, trip_id)
    ext = os.path.splitext(out)[1].lower()
    if ext in (".html", ".htm"):
        write_html(out, t, pos, events)
    elif ext == ".png":
        page_canvas(t, pos, events).png(out)
    elif ext == ".gpx":
        write_gpx(out, t, pos, events)
    elif ext in (".geojson", ".json"):
        with open(out, "w", encoding="utf-8") as f:
            json.dump(geojson(t, pos, events), f)
    else:
        raise ValueError("-o: unknown output type %r (use .html, .png, .gpx or .geojson)" % ext)
    return t, pos, events


def run(args):
    t, pos, events = write_report(args.db, args.trip, args.output)
    print("%s: %s, %d positions, %d events -> %s"
          % (title(t), fmt_km(t.get("distance_m")), len(pos), len(events),
                                                   os.path.abspath(args.output)))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["report"] + sys.argv[1:]))
