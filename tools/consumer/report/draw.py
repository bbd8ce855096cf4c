"""The report's drawing, with no map tiles, no JavaScript and no network: an equirectangular projection
scaled to the trip's bounding box, segments coloured by speed, numbered event markers, a scale bar and
a speed profile chart. A drawing is a list of primitives (`Canvas`), written as inline SVG for HTML and
rasterised with Pillow for PNG."""
import html
import math
import os

from tools.consumer.report.trip import (
    EVENT_STYLE,
    SPEED_BINS,
    coach_sentences,
    event_counts,
    event_detail,
    event_label,
    nice_step,
    score_color,
    speed_color,
    speed_kmh,
    stats,
    subtitle,
    t0_of,
    title,
)

FONT = "DejaVu Sans, Arial, Helvetica, sans-serif"


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
                           % (x1 + dx, y1 + dy, x2 + dx, y2 + dy, c, w,
                              ' stroke-dasharray="4 3"' if dash else ""))
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
                        d.line([P(x1 + (x2 - x1) * a, y1 + (y2 - y1) * a),
                                P(x1 + (x2 - x1) * b, y1 + (y2 - y1) * b)],
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
                d.text(P(x, y), str(t), fill=c, font=font,
                       anchor={"start": "ls", "middle": "ms", "end": "rs"}[anchor])
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
    samples = [((p["t_ms"] - t0_ms) / 60000.0, speed_kmh(p["speed_mmps"])) for p in pos
               if p["speed_mmps"] >= 0]
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
        col = 160 + (i // 5) * 330  # 5 rows a column: the usual 9 rows (battery included) fit in two
        yy = y + (i % 5) * 20
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
