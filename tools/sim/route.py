"""Route geometry: a chain of straights and circular arcs in a local ENU frame, plus ENU <-> lat/lon."""
import math

# WGS84 radii of curvature, so the truth distances are true metres on the ellipsoid
_A = 6378137.0
_E2 = 6.69437999014e-3


def radii(lat_deg):
    s = math.sin(math.radians(lat_deg))
    w = 1.0 - _E2 * s * s
    m = _A * (1.0 - _E2) / (w ** 1.5)   # meridional
    n = _A / math.sqrt(w)                # prime vertical
    return m, n


class Frame:
    """Local tangent plane around (lat0, lon0): east/north metres <-> degrees."""

    def __init__(self, lat0, lon0):
        self.lat0 = lat0
        self.lon0 = lon0
        m, n = radii(lat0)
        self._m = m
        self._ncos = n * math.cos(math.radians(lat0))

    def to_latlon(self, e, n):
        return self.lat0 + math.degrees(n / self._m), self.lon0 + math.degrees(e / self._ncos)

    def to_en(self, lat, lon):
        return math.radians(lon - self.lon0) * self._ncos, math.radians(lat - self.lat0) * self._m


class Piece:
    """One route piece. radius_m: 0 for a straight, > 0 left turn, < 0 right turn.

    Options (all optional): v_kmh (limit), stop (dwell s at the end), a / b / alat / jerk (driver overrides),
    tunnel, canyon, unplug (box power cut while on it), crash (impact at its end), glitch ('zero'|'jump'),
    potholes (count on this piece), rough (road texture multiplier), shock ((ax, ay, az) m/s2 in the vehicle
    frame and a duration in s: an impact at mid-piece that does not change the speed, truth `shock`),
    late_brake ((fraction, km/h): past that fraction of the piece the driver brakes hard to that speed,
    e.g. braking inside a bend).
    """

    def __init__(self, length_m, radius_m=0.0, v_kmh=50.0, **opts):
        if length_m <= 0:
            raise ValueError("length_m: must be > 0, got %r" % length_m)
        self.length = float(length_m)
        self.radius = float(radius_m)
        self.v_kmh = float(v_kmh)
        self.opts = opts
        self.s0 = 0.0
        self.x0 = self.y0 = 0.0
        self.h0 = 0.0   # math heading (rad, east = 0, counter-clockwise)

    @property
    def s1(self):
        return self.s0 + self.length

    def v_max(self, alat):
        v = self.v_kmh / 3.6
        if self.radius:
            v = min(v, math.sqrt(self.opts.get("alat", alat) * abs(self.radius)))
        return v

    def pose(self, d):
        """(x, y, heading) at distance d into the piece."""
        h = self.h0
        if not self.radius:
            return self.x0 + d * math.cos(h), self.y0 + d * math.sin(h), h
        r = self.radius
        th = d / r
        cx = self.x0 - r * math.sin(h)
        cy = self.y0 + r * math.cos(h)
        return cx + r * math.sin(h + th), cy - r * math.cos(h + th), h + th

    def end_pose(self):
        return self.pose(self.length)


class Route:
    def __init__(self, heading_deg=0.0):
        self.pieces = []
        self.total = 0.0
        self._x = self._y = 0.0
        self._h = math.radians(90.0 - heading_deg)
        self._i = 0

    def extend(self, pieces):
        for p in pieces:
            p.s0 = self.total
            p.x0, p.y0, p.h0 = self._x, self._y, self._h
            self._x, self._y, self._h = p.end_pose()
            self.total += p.length
            self.pieces.append(p)

    def index_at(self, s):
        """Index of the piece containing s (pieces ahead are searched from the last answer)."""
        ps = self.pieces
        i = min(self._i, len(ps) - 1)
        while i > 0 and s < ps[i].s0:
            i -= 1
        while i < len(ps) - 1 and s >= ps[i].s1:
            i += 1
        self._i = i
        return i

    def pose(self, s):
        if not self.pieces:
            return self._x, self._y, self._h
        i = self.index_at(s)
        p = self.pieces[i]
        return p.pose(min(max(s - p.s0, 0.0), p.length))


def course_deg(h):
    """math heading (rad) -> course over ground (deg from north, clockwise)"""
    return (90.0 - math.degrees(h)) % 360.0
