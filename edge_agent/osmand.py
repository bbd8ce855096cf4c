"""OsmAnd output of the edge agent: one HTTP request per AVL record to Traccar's `osmand` protocol
(port 5055 by default), the simplest thing any Traccar (and many other trackers' servers) accepts.

    [osmand]
    url = "http://traccar.example.net:5055/"
    id = "box-0001"           # the device's identifier in Traccar; default: the box's device id

Same records and mapping as the Codec 8 Extended output (edge_agent/teltonika.py Mapper), sent as
query parameters: id, timestamp (s), lat, lon, speed (knots, Traccar's unit for OsmAnd), bearing, sat,
hdop, odometer and tripOdometer (m), ignition, motion, power (supply voltage, V: status records), and alarm =
hardAcceleration | hardBraking | hardCornering | accident | tow | powerCut | idle | overspeed. HTTP 200 =
accepted: this output's progress on the queue row moves on (edge_agent/outputs.py). 400 (unknown device) backs
off like a refused IMEI; anything else, no answer, a dropped connection: the same record goes again.
"""
from urllib.parse import urlencode, urlsplit

from edge_agent import teltonika as T
from edge_agent.netout import LinkDown, RowForwarder

NAME = "osmand"
_ALARMS = {T.IO_CRASH: "accident", T.IO_TOWING: "tow", T.IO_UNPLUG: "powerCut", T.IO_IDLING: "idle",
           T.IO_OVERSPEED: "overspeed"}
_GREEN = {1: "hardAcceleration", 2: "hardBraking", 3: "hardCornering"}


def params(avl, device_id):
    """One AVL record (Mapper output) -> OsmAnd query parameters (list of pairs, fixed order)."""
    io = avl["io"]
    p = [("id", device_id), ("timestamp", "%d" % (avl["ts_ms"] // 1000)),
         ("lat", "%.7f" % (avl["lat_e7"] / 1e7)), ("lon", "%.7f" % (avl["lon_e7"] / 1e7)),
         ("speed", "%.2f" % (avl.get("speed_mmps", avl["speed_kmh"] * 278) * 3.6 / 1000 / 1.852)),
         ("bearing", "%.2f" % (max(avl.get("course_cdeg", avl["angle"] * 100), 0) / 100)),
         ("sat", "%d" % avl["sats"])]
    if avl.get("hdop_x10", -1) >= 0:
        p.append(("hdop", "%.1f" % (avl["hdop_x10"] / 10)))
    if avl["sats"] == 0:
        p.append(("valid", "false"))
    if T.IO_ODOMETER in io:
        p.append(("odometer", "%d" % io[T.IO_ODOMETER][1]))
    if T.IO_TRIP_ODOMETER in io:
        p.append(("tripOdometer", "%d" % io[T.IO_TRIP_ODOMETER][1]))
    if T.IO_IGNITION in io:
        p.append(("ignition", "true" if io[T.IO_IGNITION][1] else "false"))
        p.append(("motion", "true" if io[T.IO_MOVEMENT][1] else "false"))
    if T.IO_POWER in io:
        p.append(("power", "%.3f" % (io[T.IO_POWER][1] / 1000)))  # Traccar's `power` attribute, V
    ev = avl["event_id"]
    if ev == T.IO_GREEN_TYPE:
        p.append(("alarm", _GREEN[io[T.IO_GREEN_TYPE][1]]))
    elif ev in _ALARMS:
        p.append(("alarm", _ALARMS[ev]))
    return p


class OsmAndForwarder(RowForwarder):
    name = NAME
    link_error_counter = "errors"

    def __init__(self, cfg, delivery):
        url = cfg.get("url")
        if not url:
            raise ValueError("osmand.url is required")
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError("osmand.url: http://host[:port]/path, got %r" % url)
        RowForwarder.__init__(self, cfg, delivery, u.hostname, u.port or 5055,
                              {"requests": 0, "refused": 0, "errors": 0})
        self.path = u.path or "/"
        self.device_id = cfg.get("id")
        self.timeout_s = float(cfg.get("timeout_s", 30))

    def _opened(self, now):
        self.state = "ready"

    def _step(self, now, device):
        c = self.conn
        c.poll()
        if self.state == "wait":
            resp = self._response(c)
            if resp is None:
                if now - self.t_sent > self.timeout_s:
                    raise LinkDown("no HTTP answer within %.0f s" % self.timeout_s)
                return
            status, close = resp
            self.state = "ready"
            if status == 200:
                self.backoff.reset()
                self._on_http_200()
            elif status in (400, 404):
                self.counters["refused"] += 1
                self._down("server refused device %r (HTTP %d)" % (self.device_id or device, status),
                           self.refused_retry_s)
                return
            else:
                raise LinkDown("HTTP %d" % status)
            if close:
                self._down("server closed the connection", 0.0)
                self.next_try = now
                return
        if self.state == "ready":
            self._send_next(now, device)

    def _response(self, c):
        end = c.rx.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(c.rx[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split()[1])
        except (IndexError, ValueError):
            raise LinkDown("bad HTTP status line %r" % head[0][:60])
        length = 0
        close = False
        for h in head[1:]:
            k, _, v = h.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip() or 0)
            elif k.strip().lower() == "connection" and v.strip().lower() == "close":
                close = True
        if len(c.rx) < end + 4 + length:
            return None
        del c.rx[:end + 4 + length]
        return status, close

    def _send_next(self, now, device):
        if self._next_records() is None:
            return
        qid, avl, sent = self.current
        q = urlencode(params(avl[sent], self.device_id or device))
        req = ("POST %s?%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: 0\r\n"
               "User-Agent: paydbox-agent\r\n\r\n") % (
            self.path, q, self.host, self.port)
        self.conn.send(req.encode("ascii"))
        self.conn.poll()
        self.t_sent = now
        self.state = "wait"
        self.counters["requests"] += 1

    def _on_http_200(self):
        self._accepted(self.current[2], 1)
