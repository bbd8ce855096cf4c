"""The trip as GPX 1.1: one track of its positions, a waypoint per located event."""
from tools.consumer.report.trip import event_detail, event_label, iso_time, title


def write_gpx(path, t, pos, events):
    from xml.sax.saxutils import escape
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<gpx version="1.1" creator="paydbox" xmlns="http://www.topografix.com/GPX/1/1" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:schemaLocation="http://www.topografix.com/GPX/1/1 '
           'http://www.topografix.com/GPX/1/1/gpx.xsd">',
           "<metadata><name>%s</name>%s</metadata>" % (
               escape(title(t)), "<time>%s</time>" % iso_time(t, t.get("start_t_ms"), t.get("start_utc_s"))
               if iso_time(t, t.get("start_t_ms"), t.get("start_utc_s")) else "")]
    for i, e in enumerate(events):
        if e.get("lat_e7") is None:
            continue
        tm = iso_time(t, e.get("t_ms"), e.get("utc_s"))
        out.append('<wpt lat="%.7f" lon="%.7f">%s<name>%s</name><desc>%s</desc><type>%s</type></wpt>' % (
            e["lat_e7"] / 1e7, e["lon_e7"] / 1e7, "<time>%s</time>" % tm if tm else "",
            escape("%d. %s" % (i + 1, event_label(e))), escape(event_detail(e)), escape(e.get("kind", ""))))
    out.append("<trk><name>%s</name><trkseg>" % escape(title(t)))
    for p in pos:
        tm = iso_time(t, p["t_ms"], p["utc_s"])
        out.append('<trkpt lat="%.7f" lon="%.7f">%s</trkpt>' % (p["lat_e7"] / 1e7, p["lon_e7"] / 1e7,
                                                               "<time>%s</time>" % tm if tm else ""))
    out.append("</trkseg></trk></gpx>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
