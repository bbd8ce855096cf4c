"""The report as one offline HTML page: the drawings as inline SVG, the stats, events and coach."""
import html
import time

from tools.consumer import db as consumer_db
from tools.consumer.report.draw import map_canvas, profile_canvas
from tools.consumer.report.trip import (
    EVENT_STYLE,
    coach_sentences,
    event_counts,
    event_detail,
    event_label,
    score_color,
    stats,
    subtitle,
    t0_of,
    title,
)

CSS = """
body{font-family:DejaVu Sans,Arial,Helvetica,sans-serif;color:#1a202c;margin:24px auto;max-width:940px;\
background:#fff}
h1{font-size:26px;margin:0}.sub{color:#4a5568;margin:2px 0 16px}
.top{display:flex;gap:18px;align-items:stretch;margin-bottom:16px}
.score{min-width:130px;border-radius:10px;color:#fff;text-align:center;padding:10px 8px}
.score b{font-size:46px;display:block;line-height:1.1}.score span{font-size:13px}
table.kv{border-collapse:collapse;font-size:14px}table.kv td{padding:3px 12px 3px 0}\
table.kv td:first-child{color:#4a5568}
h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table.ev{border-collapse:collapse;font-size:13px;width:100%}\
table.ev th,table.ev td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf2f7}
.dot{display:inline-block;width:18px;height:18px;border-radius:9px;color:#fff;text-align:center;font-size:11px;line-height:18px;font-weight:bold}
.coach{display:flex;gap:24px}.coach div{flex:1}.coach h3{font-size:15px;margin:6px 0;color:#4a5568}\
.coach li{margin:4px 0}
.counts span{display:inline-block;margin:0 14px 6px 0;font-size:14px}
.foot{color:#718096;font-size:12px;margin-top:24px}
"""


def write_html(path, t, pos, events):
    t0 = t0_of(t, pos)
    mc = map_canvas(pos, events)
    pc = profile_canvas(pos, events, t0)
    score = t.get("score")
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>%s</title><style>%s</style></head><body>" % (e(title(t)), CSS),
             "<h1>%s</h1><p class=\"sub\">%s</p>" % (e(title(t)), e(subtitle(t))),
             '<div class="top"><div class="score" style="background:%s"><b>%s</b><span>%s / 100</span>'
             "</div>" % (score_color(score), "-" if score is None else int(score),
                         "partial score" if "partial" in ((t.get("summary") or {}).get("score_note") or "")
                         else "driving score"),
             '<table class="kv">']
    for k, v in stats(t, pos):
        parts.append("<tr><td>%s</td><td><b>%s</b></td></tr>" % (e(k), e(v)))
    parts.append("</table></div>")
    parts.append('<div class="counts">' + "".join("<span>%s: <b>%d</b></span>" % (e(k), v)
                                                  for k, v in event_counts(t, events)) + "</div>")
    parts.append('<h2>Route</h2><div class="map">%s</div>'
                 % mc.svg(' role="img" aria-label="route coloured by speed"'))
    parts.append('<h2>Speed profile</h2><div class="profile">%s</div>'
                 % pc.svg(' role="img" aria-label="speed profile"'))
    parts.append("<h2>Events (%d)</h2>" % len(events))
    if events:
        parts.append('<table class="ev"><tr><th>#</th><th>time</th><th>event</th><th>details</th></tr>')
        for i, ev in enumerate(events):
            col = EVENT_STYLE.get(ev.get("kind"), EVENT_STYLE["unclassified"])[0]
            when = consumer_db.utc_iso(ev.get("utc_s"))
            when = when[11:19] if when else "+%ds" % ((ev["t_ms"] - t0) // 1000)
            parts.append('<tr><td><span class="dot" '
                         'style="background:%s">%d</span></td><td>%s</td><td>%s</td>'
                         "<td>%s</td></tr>" % (col, i + 1, e(when), e(event_label(ev)), e(event_detail(ev))))
        parts.append("</table>")
    else:
        parts.append("<p>No harsh event during this trip.</p>")
    parts.append('<h2>Coach</h2><div class="coach">')
    for lang, head in (("en", "English"), ("fr", "Fran&ccedil;ais")):
        parts.append('<div lang="%s"><h3>%s</h3><ul>' % (lang, head) +
                     "".join("<li>%s</li>" % e(s) for s in coach_sentences(t.get("summary"), lang))
                     + "</ul></div>")
    parts.append("</div>")
    parts.append('<p class="foot">paydbox report, generated %s UTC from %s. Drawn offline: no map tiles.</p>'
                 % (time.strftime("%Y-%m-%d %H:%M", time.gmtime()), e(t["device"])))
    parts.append("</body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
