"""`paydbox report TRIP -o FILE`: one trip as an offline HTML page, a PNG, GPX 1.1 or GeoJSON.

The route is drawn here (no map tiles, no JavaScript, no network): an equirectangular projection
scaled to the trip's bounding box, segments coloured by speed, numbered event markers, a scale bar,
and a speed profile chart. The same drawing (a list of primitives, `Canvas`) is written as inline SVG
for HTML and rasterised with Pillow for PNG.
"""
import html
import json
import math
import os
import sys
import time

from tools.consumer import db as consumer_db

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
    "harsh_accel_gnss": ("#dd6b20", "harsh acceleration (GNSS only)", "acceleration brusque (GNSS seul)"),
    "harsh_brake_gnss": ("#e53e3e", "harsh braking (GNSS only)", "freinage brusque (GNSS seul)"),
}
FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"


def add_arguments(p):
    p.add_argument("trip", metavar="TRIP", help="trip id from `paydbox trips` (or DEVICE:BOOT:TRIP)")
    p.add_argument("--db", default=consumer_db.DEFAULT_DB, help="consumer SQLite file or postgresql:// URL (default %(default)s)")
    p.add_argument("-o", "--output", required=True, help="FILE.html, FILE.png, FILE.gpx or FILE.geojson")


# ------------------------------------------------------------------ drawing primitives

class Canvas:
    def __init__(self, width, height, bg="#ffffff"):
        self.width = width
        self.height = height
        self.bg = bg
        self.ops = []

    def line(self, x1, y1, x2, y2, color, width=1, dash=False):
        self.ops.append(("line", x1, y1, x2, y2, color, width, dash))

    def polyline(self, pts, color, width=1):
        if len(pts) >= 2:
            self.ops.append(("poly", pts, color, width))

    def rect(self, x, y, w, h, fill=None, stroke=None, width=1):
        self.ops.append(("rect", x, y, w, h, fill, stroke, width))

    def circle(self, x, y, r, fill, stroke="#ffffff", width=1.5):
        self.ops.append(("circle", x, y, r, fill, stroke, width))

    def text(self, x, y, s, size=12, color="#1a202c", anchor="start", bold=False):
        """y is the text baseline; anchor start|middle|end."""
        self.ops.append(("text", x, y, s, size, color, anchor, bold))

    def embed(self, other, dx, dy):
        self.ops.append(("embed", other, dx, dy))

    # -- SVG
    def svg(self, extra_attrs=""):
        out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
               'font-family="%s"%s>' % (self.width, self.height, self.width, self.height, FONT, extra_attrs),
               '<rect x="0" y="0" width="%d" height="%d" fill="%s"/>' % (self.width, self.height, self.bg)]
        self._svg_ops(out, 0, 0)
        out.append("</svg>")
        return "\n".join(out)

    def _svg_ops(self, out, dx, dy):
        for op in self.ops:
            k = op[0]
            if k == "line":
                _, x1, y1, x2, y2, c, w, dash = op
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"%s/>'
                           % (x1 + dx, y1 + dy, x2 + dx, y2 + dy, c, w, ' stroke-dasharray="4 3"' if dash else ""))
            elif k == "poly":
                _, pts, c, w = op
                out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="%g" '
                           'stroke-linecap="round" stroke-linejoin="round"/>'
                           % (" ".join("%.1f,%.1f" % (x + dx, y + dy) for x, y in pts), c, w))
            elif k == "rect":
                _, x, y, w_, h, fill, stroke, sw = op
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"%s/>'
                           % (x + dx, y + dy, w_, h, fill or "none",
                              ' stroke="%s" stroke-width="%g"' % (stroke, sw) if stroke else ""))
            elif k == "circle":
                _, x, y, r, fill, stroke, sw = op
                out.append('<circle cx="%.1f" cy="%.1f" r="%g" fill="%s" stroke="%s" stroke-width="%g"/>'
                           % (x + dx, y + dy, r, fill, stroke, sw))
            elif k == "text":
                _, x, y, s, size, c, anchor, bold = op
                out.append('<text x="%.1f" y="%.1f" font-size="%g" fill="%s" text-anchor="%s"%s>%s</text>'
                           % (x + dx, y + dy, size, c, anchor, ' font-weight="bold"' if bold else "",
                              html.escape(str(s))))
            elif k == "embed":
                _, other, ox, oy = op
                out.append('<rect x="%.1f" y="%.1f" width="%d" height="%d" fill="%s"/>'
                           % (ox + dx, oy + dy, other.width, other.height, other.bg))
                other._svg_ops(out, dx + ox, dy + oy)

    # -- PNG (Pillow)
    def png(self, path, scale=1.0):
        try:
            from PIL import Image, ImageDraw
        except ImportError:
            raise RuntimeError("PNG output needs Pillow (pip install Pillow); HTML, GPX and GeoJSON do not")
        img = Image.new("RGB", (int(self.width * scale), int(self.height * scale)), self.bg)
        d = ImageDraw.Draw(img)
        self._png_ops(d, 0, 0, scale)
        img.save(path, "PNG", optimize=True)

    def _png_ops(self, d, dx, dy, s):
        def P(x, y):
            return ((x + dx) * s, (y + dy) * s)

        for op in self.ops:
            k = op[0]
            if k == "line":
                _, x1, y1, x2, y2, c, w, dash = op
                if dash:
                    n = max(1, int(math.hypot(x2 - x1, y2 - y1) / 7))
                    for i in range(n):
                        a, b = i / n, (i + 0.57) / n
                        d.line([P(x1 + (x2 - x1) * a, y1 + (y2 - y1) * a), P(x1 + (x2 - x1) * b, y1 + (y2 - y1) * b)],
                               fill=c, width=max(1, int(round(w * s))))
                else:
                    d.line([P(x1, y1), P(x2, y2)], fill=c, width=max(1, int(round(w * s))))
            elif k == "poly":
                _, pts, c, w = op
                ww = max(1, int(round(w * s)))
                d.line([P(x, y) for x, y in pts], fill=c, width=ww, joint="curve")
                if ww >= 3:
                    for x, y in (pts[0], pts[-1]):
                        cx, cy = P(x, y)
                        d.ellipse([cx - ww / 2, cy - ww / 2, cx + ww / 2, cy + ww / 2], fill=c)
            elif k == "rect":
                _, x, y, w_, h, fill, stroke, sw = op
                x0, y0 = P(x, y)
                d.rectangle([x0, y0, x0 + w_ * s, y0 + h * s], fill=fill, outline=stroke,
                            width=max(1, int(round(sw * s))) if stroke else 0)
            elif k == "circle":
                _, x, y, r, fill, stroke, sw = op
                cx, cy = P(x, y)
                d.ellipse([cx - r * s, cy - r * s, cx + r * s, cy + r * s], fill=fill, outline=stroke,
                          width=max(1, int(round(sw * s))))
            elif k == "text":
                _, x, y, t, size, c, anchor, bold = op
                font = _font(size * s, bold)
                d.text(P(x, y), str(t), fill=c, font=font, anchor={"start": "ls", "middle": "ms", "end": "rs"}[anchor])
            elif k == "embed":
                _, other, ox, oy = op
                x0, y0 = P(ox, oy)
                d.rectangle([x0, y0, x0 + other.width * s, y0 + other.height * s], fill=other.bg)
                other._png_ops(d, dx + ox, dy + oy, s)


_FONTS = {}


def _font(size, bold):
    from PIL import ImageFont
    key = (int(round(size)), bold)
    if key not in _FONTS:
        names = ["DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf"] if bold else ["DejaVuSans.ttf",
                                                                                 "LiberationSans-Regular.ttf"]
        font = None
        for n in names:
            for d in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation", ""):
                try:
                    font = ImageFont.truetype(os.path.join(d, n) if d else n, key[0])
                    break
                except OSError:
                    continue
            if font:
                break
        _FONTS[key] = font or ImageFont.load_default(size=key[0])
    return _FONTS[key]


# ------------------------------------------------------------------ trip data

def speed_kmh(mmps):
    return -1.0 if mmps is None or mmps < 0 else mmps * 0.0036


def speed_color(kmh):
    for hi, c, _ in SPEED_BINS:
        if kmh < hi:
            return c
    return SPEED_BINS[-1][1]


def load(db_path, trip_id):
    db = consumer_db.connect(db_path, create=False)
    try:
        t = consumer_db.get_trip(db, trip_id)
        pos = consumer_db.trip_positions(db, t)
        ev = consumer_db.trip_events(db, t)
    finally:
        db.close()
    return t, pos, ev


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
    return ("%d h %02d min" % (s // 3600, s % 3600 // 60)) if s >= 3600 else ("%d min %02d s" % (s // 60, s % 60))


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


# ------------------------------------------------------------------ drawings

def map_canvas(pos, events, width=900, height=540):
    c = Canvas(width, height, bg="#f7fafc")
    pad = 36
    pts = [(p["lat_e7"] / 1e7, p["lon_e7"] / 1e7) for p in pos]
    located = [e for e in events if e.get("lat_e7") is not None and (e["lat_e7"] or e.get("lon_e7"))]
    allpts = pts + [(e["lat_e7"] / 1e7, e["lon_e7"] / 1e7) for e in located]
    if not allpts:
        c.text(width / 2, height / 2, "no positions received for this trip", 16, "#4a5568", "middle")
        return c
    lat_min = min(a for a, _ in allpts)
    lat_max = max(a for a, _ in allpts)
    lon_min = min(b for _, b in allpts)
    lon_max = max(b for _, b in allpts)
    kx = math.cos(math.radians((lat_min + lat_max) / 2))
    span_x = max((lon_max - lon_min) * kx, 0.001)  # at least ~110 m
    span_y = max(lat_max - lat_min, 0.001)
    sc = min((width - 2 * pad) / span_x, (height - 2 * pad - 34) / span_y)
    cx_deg = (lon_min + lon_max) / 2
    cy_deg = (lat_min + lat_max) / 2

    def proj(lat, lon):
        return (width / 2 + (lon - cx_deg) * kx * sc, (height - 34) / 2 + (cy_deg - lat) * sc)

    # frame and light grid
    c.rect(0.5, 0.5, width - 1, height - 1, None, "#cbd5e0")
    # route: one polyline per run of equal speed colour (shadow first for contrast)
    xy = [proj(a, b) for a, b in pts]
    c.polyline(xy, "#ffffff", 9)
    run = [xy[0]] if xy else []
    run_col = speed_color(speed_kmh(pos[0]["speed_mmps"])) if pos else None
    for i in range(1, len(xy)):
        col = speed_color((speed_kmh(pos[i - 1]["speed_mmps"]) + speed_kmh(pos[i]["speed_mmps"])) / 2)
        if col != run_col and len(run) >= 2:
            c.polyline(run, run_col, 5)
            run = [run[-1]]
        run_col = col
        run.append(xy[i])
    if len(run) >= 2:
        c.polyline(run, run_col, 5)
    # start / end
    if xy:
        c.circle(xy[0][0], xy[0][1], 9, "#2f855a", "#ffffff", 2)
        c.text(xy[0][0], xy[0][1] + 4, "S", 11, "#ffffff", "middle", True)
        c.circle(xy[-1][0], xy[-1][1], 9, "#1a202c", "#ffffff", 2)
        c.text(xy[-1][0], xy[-1][1] + 4, "E", 11, "#ffffff", "middle", True)
    # events: numbered markers (details in the list below the map); labels dodge each other
    placed = [xy[0], xy[-1]] if xy else []
    offsets = [(14, -19), (-14, -19), (14, 19), (-14, 19), (28, -6), (-28, -6), (0, -30), (0, 30)]
    for i, e in enumerate(events):
        if e not in located:
            continue
        x, y = proj(e["lat_e7"] / 1e7, e["lon_e7"] / 1e7)
        col = EVENT_STYLE.get(e.get("kind"), EVENT_STYLE["unclassified"])[0]
        best = None
        for ox, oy in offsets:
            lx, ly = x + ox, y + oy
            d = min([math.hypot(lx - px, ly - py) for px, py in placed] or [99])
            if 10 < lx < width - 10 and 10 < ly < height - 44 and (best is None or d > best[0] + 0.01):
                best = (d, lx, ly)
            if d >= 22:
                break
        _, lx, ly = best or (0, x + 14, y - 19)
        placed.append((lx, ly))
        c.line(x, y, lx, ly, col, 1.5)
        c.circle(x, y, 4, col, "#ffffff", 1)
        c.circle(lx, ly, 10, col, "#ffffff", 1.5)
        c.text(lx, ly + 4, str(i + 1), 11, "#ffffff", "middle", True)
    # bottom strip: legend (speed colours) and scale bar
    c.rect(1, height - 34, width - 2, 33, "#ffffff")
    c.line(1, height - 34, width - 1, height - 34, "#cbd5e0", 1)
    lx, ly = 12, height - 13
    c.text(lx, ly, "speed (km/h)", 12, "#2d3748", "start", True)
    lx += 98
    for _, col, lab in SPEED_BINS:
        c.rect(lx, ly - 10, 22, 10, col)
        c.text(lx + 27, ly, lab, 12, "#2d3748")
        lx += 27 + 7 * len(lab) + 16
    m_per_px = 111320.0 / sc
    bar_m = nice_step(m_per_px * min(width - lx - 40, width / 6), 1)
    while bar_m / m_per_px > width - lx - 40 and bar_m > 1:
        bar_m /= 2.0
    bar_px = bar_m / m_per_px
    bx, by = width - 16 - bar_px, height - 11
    c.line(bx, by, bx + bar_px, by, "#2d3748", 2)
    c.line(bx, by - 5, bx, by + 1, "#2d3748", 2)
    c.line(bx + bar_px, by - 5, bx + bar_px, by + 1, "#2d3748", 2)
    c.text(bx + bar_px / 2, by - 7, ("%g km" % (bar_m / 1000)) if bar_m >= 1000 else ("%d m" % bar_m), 11,
           "#2d3748", "middle")
    # north arrow
    c.line(width - 24, 40, width - 24, 16, "#2d3748", 2)
    c.polyline([(width - 30, 24), (width - 24, 14), (width - 18, 24)], "#2d3748", 2)
    c.text(width - 24, 54, "N", 12, "#2d3748", "middle", True)
    return c


def profile_canvas(pos, events, t0_ms, width=900, height=230):
    c = Canvas(width, height, bg="#ffffff")
    left, right, top, bottom = 52, 16, 26, 40
    pw, ph = width - left - right, height - top - bottom
    samples = [((p["t_ms"] - t0_ms) / 60000.0, speed_kmh(p["speed_mmps"])) for p in pos if p["speed_mmps"] >= 0]
    if not samples:
        c.text(width / 2, height / 2, "no speed samples", 14, "#4a5568", "middle")
        return c
    ev_t = [(e["t_ms"] - t0_ms) / 60000.0 for e in events if e.get("t_ms") is not None]
    tmax = max([s[0] for s in samples] + ev_t + [1e-3])
    vmax = max(s[1] for s in samples)
    vtop = max(20, math.ceil(vmax / 20.0) * 20)
    step_v = 20 if vtop <= 160 else 40
    for v in range(0, int(vtop) + 1, step_v):
        y = top + ph - v / vtop * ph
        c.line(left, y, left + pw, y, "#e2e8f0", 1)
        c.text(left - 6, y + 4, str(v), 11, "#4a5568", "end")
    st = nice_step(tmax, 8)
    t = 0.0
    while t <= tmax + 1e-9:
        x = left + t / tmax * pw
        c.line(x, top + ph, x, top + ph + 4, "#4a5568", 1)
        c.text(x, top + ph + 16, ("%g" % round(t, 2)), 11, "#4a5568", "middle")
        t += st
    c.text(left + pw / 2, height - 6, "minutes since trip start", 12, "#2d3748", "middle")
    c.text(left - 6, top - 10, "km/h", 11, "#2d3748", "end", True)
    for e in events:
        if e.get("t_ms") is None:
            continue
        x = left + (e["t_ms"] - t0_ms) / 60000.0 / tmax * pw
        if left <= x <= left + pw:
            col = EVENT_STYLE.get(e.get("kind"), EVENT_STYLE["unclassified"])[0]
            c.line(x, top, x, top + ph, col, 1.2, dash=True)
    pts = [(left + tm / tmax * pw, top + ph - v / vtop * ph) for tm, v in samples]
    # fill-like baseline and the curve coloured by speed band
    for (x1, y1), (x2, y2), (_, v1), (_, v2) in zip(pts, pts[1:], samples, samples[1:]):
        c.line(x1, y1, x2, y2, speed_color((v1 + v2) / 2), 2.2)
    for i, e in enumerate(events):
        if e.get("t_ms") is None:
            continue
        x = left + (e["t_ms"] - t0_ms) / 60000.0 / tmax * pw
        if left <= x <= left + pw:
            col = EVENT_STYLE.get(e.get("kind"), EVENT_STYLE["unclassified"])[0]
            c.circle(x, top - 9, 8, col, "#ffffff", 1)
            c.text(x, top - 5, str(i + 1), 10, "#ffffff", "middle", True)
    c.rect(left, top, pw, ph, None, "#a0aec0")
    return c


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
        return [("harsh braking", s.get("n_harsh_brake", 0)), ("harsh acceleration", s.get("n_harsh_accel", 0)),
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
    ]
    if s:
        rows.append(("Night / idle", "%s / %s" % (fmt_dur(s.get("night_s", 0)), fmt_dur(s.get("idle_s", 0)))))
        rows.append(("Over speed", fmt_dur(s.get("overspeed_s", 0))))
        note = s.get("score_note", "")
        if "partial_unclassified" in note:
            rows.append(("Score", "partial: %d event(s) not classified (box not calibrated)" % s.get("n_unclassified", 0)))
        if "gnss_only" in note:
            rows.append(("GNSS-only events", "%d harsh accel/brake from GNSS speed alone" % s.get("n_gnss_only", 0)))
    return rows


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


# ------------------------------------------------------------------ outputs

CSS = """
body{font-family:DejaVu Sans,Arial,Helvetica,sans-serif;color:#1a202c;margin:24px auto;max-width:940px;background:#fff}
h1{font-size:26px;margin:0}.sub{color:#4a5568;margin:2px 0 16px}
.top{display:flex;gap:18px;align-items:stretch;margin-bottom:16px}
.score{min-width:130px;border-radius:10px;color:#fff;text-align:center;padding:10px 8px}
.score b{font-size:46px;display:block;line-height:1.1}.score span{font-size:13px}
table.kv{border-collapse:collapse;font-size:14px}table.kv td{padding:3px 12px 3px 0}table.kv td:first-child{color:#4a5568}
h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table.ev{border-collapse:collapse;font-size:13px;width:100%}table.ev th,table.ev td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf2f7}
.dot{display:inline-block;width:18px;height:18px;border-radius:9px;color:#fff;text-align:center;font-size:11px;line-height:18px;font-weight:bold}
.coach{display:flex;gap:24px}.coach div{flex:1}.coach h3{font-size:15px;margin:6px 0;color:#4a5568}.coach li{margin:4px 0}
.counts span{display:inline-block;margin:0 14px 6px 0;font-size:14px}
.foot{color:#718096;font-size:12px;margin-top:24px}
"""


def score_color(score):
    if score is None:
        return "#718096"
    return "#2f855a" if score >= 80 else ("#d69e2e" if score >= 60 else "#c53030")


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
    parts.append('<h2>Route</h2><div class="map">%s</div>' % mc.svg(' role="img" aria-label="route coloured by speed"'))
    parts.append('<h2>Speed profile</h2><div class="profile">%s</div>' % pc.svg(' role="img" aria-label="speed profile"'))
    parts.append("<h2>Events (%d)</h2>" % len(events))
    if events:
        parts.append('<table class="ev"><tr><th>#</th><th>time</th><th>event</th><th>details</th></tr>')
        for i, ev in enumerate(events):
            col = EVENT_STYLE.get(ev.get("kind"), EVENT_STYLE["unclassified"])[0]
            when = consumer_db.utc_iso(ev.get("utc_s"))
            when = when[11:19] if when else "+%ds" % ((ev["t_ms"] - t0) // 1000)
            parts.append('<tr><td><span class="dot" style="background:%s">%d</span></td><td>%s</td><td>%s</td>'
                         "<td>%s</td></tr>" % (col, i + 1, e(when), e(event_label(ev)), e(event_detail(ev))))
        parts.append("</table>")
    else:
        parts.append("<p>No harsh event during this trip.</p>")
    parts.append('<h2>Coach</h2><div class="coach">')
    for lang, head in (("en", "English"), ("fr", "Fran&ccedil;ais")):
        parts.append('<div lang="%s"><h3>%s</h3><ul>' % (lang, head) +
                     "".join("<li>%s</li>" % e(s) for s in coach_sentences(t.get("summary"), lang)) + "</ul></div>")
    parts.append("</div>")
    parts.append('<p class="foot">paydbox report, generated %s UTC from %s. Drawn offline: no map tiles.</p>'
                 % (time.strftime("%Y-%m-%d %H:%M", time.gmtime()), e(t["device"])))
    parts.append("</body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def _wrap(s, n):
    words, lines, cur = s.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > n:
            lines.append(cur)
            cur = w
        else:
            cur = (cur + " " + w).strip()
    if cur:
        lines.append(cur)
    return lines


def page_canvas(t, pos, events):
    """The whole report as one drawing (for PNG)."""
    t0 = t0_of(t, pos)
    W = 940
    mc = map_canvas(pos, events, width=900, height=540)
    pc = profile_canvas(pos, events, t0, width=900, height=230)
    coach = [(lang, coach_sentences(t.get("summary"), lang)) for lang in ("en", "fr")]
    ev_lines = ["%d. %s  %s" % (i + 1, event_label(ev), event_detail(ev)) for i, ev in enumerate(events)]
    coach_lines = sum(len(_wrap(s, 58)) for _, ss in coach for s in ss) // 2 + 6
    H = 200 + 570 + 260 + 24 + 18 * ((len(ev_lines) + 1) // 2) + 40 + 18 * coach_lines + 40
    c = Canvas(W, H)
    c.text(20, 40, title(t), 26, "#1a202c", "start", True)
    c.text(20, 62, subtitle(t), 13, "#4a5568")
    score = t.get("score")
    c.rect(20, 76, 120, 96, score_color(score))
    c.text(80, 132, "-" if score is None else str(int(score)), 44, "#ffffff", "middle", True)
    c.text(80, 160, "score / 100", 12, "#ffffff", "middle")
    y = 92
    for i, (k, v) in enumerate(stats(t, pos)):
        col = 160 + (i // 4) * 330
        yy = y + (i % 4) * 22
        c.text(col, yy, k, 13, "#4a5568")
        c.text(col + 110, yy, v, 13, "#1a202c", "start", True)
    x = 20
    for k, v in event_counts(t, events):
        s = "%s: %d" % (k, v)
        c.text(x, 194, s, 13, "#1a202c")
        x += 9 * len(s) + 14
    y = 210
    c.embed(mc, 20, y)
    y += 540 + 30
    c.text(20, y - 8, "Speed profile", 15, "#1a202c", "start", True)
    c.embed(pc, 20, y)
    y += 230 + 26
    c.text(20, y, "Events (%d)" % len(events), 15, "#1a202c", "start", True)
    y += 20
    for i, line in enumerate(ev_lines):
        c.text(20 + (i % 2) * 450, y + (i // 2) * 18, line[:62], 12, "#1a202c")
    y += 18 * ((len(ev_lines) + 1) // 2) + 24
    c.text(20, y, "Coach", 15, "#1a202c", "start", True)
    y += 22
    yy = {}
    for col, (lang, ss) in enumerate(coach):
        x0 = 20 + col * 450
        yl = y
        c.text(x0, yl, "English" if lang == "en" else "Fran\u00e7ais", 13, "#4a5568", "start", True)
        yl += 18
        for s in ss:
            for j, line in enumerate(_wrap(s, 58)):
                c.text(x0 + (0 if j else 0), yl, ("- " if j == 0 else "  ") + line, 12, "#1a202c")
                yl += 17
            yl += 3
        yy[col] = yl
    c.height = int(max(yy.values()) + 24)
    return c


def write_gpx(path, t, pos, events):
    from xml.sax.saxutils import escape
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<gpx version="1.1" creator="paydbox" xmlns="http://www.topografix.com/GPX/1/1" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.topografix.com/GPX/1/1 '
           'http://www.topografix.com/GPX/1/1/gpx.xsd">',
           "<metadata><name>%s</name>%s</metadata>" % (
               escape(title(t)), "<time>%s</time>" % _iso(t, t.get("start_t_ms"), t.get("start_utc_s"))
               if _iso(t, t.get("start_t_ms"), t.get("start_utc_s")) else "")]
    for i, e in enumerate(events):
        if e.get("lat_e7") is None:
            continue
        tm = _iso(t, e.get("t_ms"), e.get("utc_s"))
        out.append('<wpt lat="%.7f" lon="%.7f">%s<name>%s</name><desc>%s</desc><type>%s</type></wpt>' % (
            e["lat_e7"] / 1e7, e["lon_e7"] / 1e7, "<time>%s</time>" % tm if tm else "",
            escape("%d. %s" % (i + 1, event_label(e))), escape(event_detail(e)), escape(e.get("kind", ""))))
    out.append("<trk><name>%s</name><trkseg>" % escape(title(t)))
    for p in pos:
        tm = _iso(t, p["t_ms"], p["utc_s"])
        out.append('<trkpt lat="%.7f" lon="%.7f">%s</trkpt>' % (p["lat_e7"] / 1e7, p["lon_e7"] / 1e7,
                                                               "<time>%s</time>" % tm if tm else ""))
    out.append("</trkseg></trk></gpx>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def _iso(t, t_ms, utc_s):
    """ISO time of a record: its own utc_s, else derived from the trip start (utc + box ms)."""
    if utc_s is not None and utc_s >= 0:
        return consumer_db.utc_iso(utc_s)
    if t_ms is not None and t.get("start_utc_s") is not None and t["start_utc_s"] >= 0 and t.get("start_t_ms") is not None:
        return consumer_db.utc_iso(t["start_utc_s"] + (t_ms - t["start_t_ms"]) // 1000)
    return None


def geojson(t, pos, events):
    feats = [{
        "type": "Feature",
        "geometry": {"type": "LineString",
                     "coordinates": [[round(p["lon_e7"] / 1e7, 7), round(p["lat_e7"] / 1e7, 7)] for p in pos]},
        "properties": {"trip_id": t["id"], "device": t["device"], "boot": t["boot"], "trip": t["trip"],
                       "start": consumer_db.utc_iso(t.get("start_utc_s")), "end": consumer_db.utc_iso(t.get("end_utc_s")),
                       "distance_m": t.get("distance_m"), "duration_s": t.get("duration_s"), "score": t.get("score"),
                       "times": [_iso(t, p["t_ms"], p["utc_s"]) for p in pos],
                       "speeds_kmh": [round(speed_kmh(p["speed_mmps"]), 1) for p in pos]},
    }]
    for i, e in enumerate(events):
        if e.get("lat_e7") is None:
            continue
        feats.append({"type": "Feature",
                      "geometry": {"type": "Point", "coordinates": [round(e["lon_e7"] / 1e7, 7), round(e["lat_e7"] / 1e7, 7)]},
                      "properties": {"n": i + 1, "kind": e.get("kind"), "label": event_label(e),
                                     "detail": event_detail(e), "time": _iso(t, e.get("t_ms"), e.get("utc_s")),
                                     "peak_mg": e.get("peak_mg")}})
    return {"type": "FeatureCollection", "features": feats}


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
    print("%s: %s, %d positions, %d events -> %s" % (title(t), fmt_km(t.get("distance_m")), len(pos), len(events),
                                                   os.path.abspath(args.output)))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["report"] + sys.argv[1:]))
