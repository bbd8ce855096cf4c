"""Teltonika Codec 8 Extended (codec id 0x8E) over TCP, and paydbox records -> AVL records.

Pure functions, no I/O: the Traccar forwarder (edge_agent/traccar.py), `paydbox export codec8e` and
the tests' fake server all use them. docs/traccar.md lists the mapping and where Traccar shows it.

Packet (all integers big-endian):
    00 00 00 00 | data length (4) | 8E | n | n AVL records | n | CRC-16/IBM of [8E .. n] (4, upper 2 = 0)
AVL record: timestamp ms since 1970 (8) | priority (1) | longitude 1e-7 deg, signed (4) | latitude (4) |
altitude m, signed (2) | angle deg (2) | satellites (1) | speed km/h (2) | event IO id (2) |
IO count (2) | then for 1, 2, 4, 8-byte values: count (2) and (id (2), value) each | NX count (2) and
(id (2), length (2), bytes) each.
Login: IMEI length (2) + ASCII; the server answers 01 (accepted) or 00 (refused). A data packet is
answered with the number of records it accepted (4 bytes).
"""
import struct

CODEC_8E = 0x8E
EPOCH_2000_S = 946684800  # records' utc_s count from 2000-01-01 UTC
MAX_RECORDS = 255         # one byte of record count
MAX_PACKET = 1280         # Teltonika devices' largest AVL packet; the forwarder stays within it

# IO element ids, as Traccar's TeltonikaProtocolDecoder reads them (size in bytes)
IO_IGNITION = 239          # 1: ignition (Traccar "ignition")
IO_MOVEMENT = 240          # 1: movement (Traccar "motion")
IO_ODOMETER = 16           # 4: total odometer, m (Traccar "odometer")
IO_TRIP_ODOMETER = 199     # 4: trip odometer, m (Traccar "tripOdometer")
IO_POWER = 66              # 2: external voltage, mV (Traccar "power", V)
IO_GREEN_TYPE = 253        # 1: green driving type 1 accel, 2 brake, 3 cornering (Traccar alarm)
IO_GREEN_VALUE = 254       # 1: green driving value, 0.01 g (Traccar "io254")
IO_GREEN_DURATION = 243    # 2: green driving event duration, ms (Traccar "io243")
IO_TOWING = 246            # 1: towing (Traccar alarm "tow", FMB models)
IO_CRASH = 247             # 1: crash detection (Traccar alarm "accident", FMB models)
IO_IDLING = 251            # 1: idling (Traccar alarm "idle", FMB models)
IO_UNPLUG = 252            # 1: unplug (Traccar alarm "powerCut", FMB models)
IO_OVERSPEED = 255         # 1: over speeding, km/h (Traccar "io255")

_SIZES = {IO_IGNITION: 1, IO_MOVEMENT: 1, IO_ODOMETER: 4, IO_TRIP_ODOMETER: 4, IO_POWER: 2,
          IO_GREEN_TYPE: 1, IO_GREEN_VALUE: 1, IO_GREEN_DURATION: 2, IO_TOWING: 1, IO_CRASH: 1,
          IO_IDLING: 1, IO_UNPLUG: 1, IO_OVERSPEED: 1}

# Each event kind the firmware writes (firmware/app.py _EVENT_KINDS, firmware/trip.py) -> (event IO id,
# green driving type (IO 253) or None, ignition (IO 239: 1 / 0; None: the kind says nothing of it, IO 239
# and 240 are left out), movement (IO 240: 1 / 0; None: from the speed)). A kind not in this table (a
# newer firmware's) gets no AVL record at all (Mapper.skipped_kinds counts them): nothing is sent that
# the record does not say.
EVENT_KINDS = {
    # harsh driving (Teltonika's green driving, from the accelerometer or, FMB "GNSS source", from the
    # GNSS speed): the firmware writes these only while someone drives (with the ignition and the engine
    # off a jolt is a `shock`), so the ignition is on
    "harsh_accel": (IO_GREEN_TYPE, 1, 1, None),
    "harsh_brake": (IO_GREEN_TYPE, 2, 1, None),
    "harsh_corner_left": (IO_GREEN_TYPE, 3, 1, None),
    "harsh_corner_right": (IO_GREEN_TYPE, 3, 1, None),
    "harsh_accel_gnss": (IO_GREEN_TYPE, 1, 1, None),
    "harsh_brake_gnss": (IO_GREEN_TYPE, 2, 1, None),
    # idling: the engine on and the car still (firmware/trip.py _idle)
    "idle": (IO_IDLING, None, 1, 0),
    # moving with the ignition off
    "towing": (IO_TOWING, None, 0, 1),
    # over the speed limit: says nothing of the ignition (a car on a tow truck goes fast too)
    "overspeed": (IO_OVERSPEED, None, None, None),
    # a jolt with nobody driving (ignition and engine off: a tow truck's winch, an impact at a
    # standstill): no green driving
    "shock": (0, None, None, None),
    # harsh, of a type the box could not tell (not calibrated): IO 253 has no "unknown" type, and
    # charging the driver a braking or an acceleration would be a guess; a position record
    "unclassified": (0, None, None, None),
}
_MOVE_MMPS = 2000          # the box's own "moving" speed (firmware/trip.py _MOVE_MMPS)
_STILL_MMPS = 800          # below this the box's odometer counts nothing (odometer.py move_off_mmps)


class AvlError(Exception):
    """A malformed packet; .offset is the byte offset of the problem."""

    def __init__(self, msg, offset=-1):
        Exception.__init__(self, msg if offset < 0 else "%s (byte %d)" % (msg, offset))
        self.offset = offset


def crc16_ibm(data):
    """CRC-16/IBM (ARC): poly 0x8005 reflected (0xA001), init 0, no final xor."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def login_packet(imei):
    b = str(imei).encode("ascii", "strict") if str(imei).isascii() else b""
    if not 1 <= len(b) <= 64 or not all(0x21 <= c < 0x7F for c in b):
        raise ValueError("imei: 1..64 printable ASCII characters, got %r" % (imei,))
    return struct.pack(">H", len(b)) + b


def _io_bytes(io, nx):
    groups = {1: [], 2: [], 4: [], 8: []}
    for k, (size, v) in sorted(io.items()):
        if size not in groups:
            raise ValueError("io %d: size %r is not 1, 2, 4 or 8" % (k, size))
        if not 0 <= v < 1 << (8 * size):
            raise ValueError("io %d: value %r does not fit %d bytes" % (k, v, size))
        groups[size].append((k, v))
    out = [struct.pack(">H", len(io) + len(nx))]
    for size, fmt in ((1, "B"), (2, "H"), (4, "I"), (8, "Q")):
        out.append(struct.pack(">H", len(groups[size])))
        for k, v in groups[size]:
            out.append(struct.pack(">H" + fmt, k, v))
    out.append(struct.pack(">H", len(nx)))
    for k, v in sorted(nx.items()):
        out.append(struct.pack(">HH", k, len(v)) + bytes(v))
    return b"".join(out)


def avl_record(r):
    """One AVL record dict -> bytes. Keys: ts_ms, priority, lat_e7, lon_e7, alt_m, angle, sats,
    speed_kmh, event_id, io {id: (size, value)}, nx {id: bytes} (optional)."""
    try:
        head = struct.pack(">QBiihHBHH", r["ts_ms"], r["priority"], r["lon_e7"], r["lat_e7"], r["alt_m"],
                           r["angle"], r["sats"], r["speed_kmh"], r["event_id"])
    except struct.error as e:
        raise ValueError("avl record field out of range: %s" % e)
    return head + _io_bytes(r.get("io", {}), r.get("nx", {}))


def avl_packet(records):
    """AVL records (dicts) -> one Codec 8 Extended TCP packet."""
    n = len(records)
    if not 1 <= n <= MAX_RECORDS:
        raise ValueError("avl packet: 1..%d records, got %d" % (MAX_RECORDS, n))
    data = bytes([CODEC_8E, n]) + b"".join(avl_record(r) for r in records) + bytes([n])
    return b"\0\0\0\0" + struct.pack(">I", len(data)) + data + struct.pack(">I", crc16_ibm(data))


def split_packets(records, max_bytes=MAX_PACKET, max_records=MAX_RECORDS):
    """Consecutive runs of records, each packet within max_bytes (a lone larger record goes alone):
    [(i, j, packet bytes)] covering records[i:j]."""
    out = []
    i = 0
    while i < len(records):
        size = 15  # preamble, length, codec, 2 counts, crc
        j = i
        while j < len(records) and j - i < max_records:
            s = len(avl_record(records[j]))
            if j > i and size + s > max_bytes:
                break
            size += s
            j += 1
        out.append((i, j, avl_packet(records[i:j])))
        i = j
    return out


def packet_length(buf):
    """Bytes of the whole packet starting at buf[0] once its 8-byte header is in, else None."""
    if len(buf) < 8:
        return None
    if buf[:4] != b"\0\0\0\0":
        raise AvlError("preamble is not four zero bytes", 0)
    return 8 + struct.unpack(">I", bytes(buf[4:8]))[0] + 4


def decode_packet(pkt):
    """One complete TCP packet -> list of AVL record dicts (the inverse of avl_packet). Raises AvlError."""
    pkt = bytes(pkt)
    total = packet_length(pkt)
    if total is None or len(pkt) < total:
        raise AvlError("truncated packet", len(pkt))
    dlen = total - 12
    data = pkt[8:8 + dlen]
    crc = struct.unpack(">I", pkt[8 + dlen:12 + dlen])[0]
    if crc != crc16_ibm(data):
        raise AvlError("CRC-16 mismatch: got %04x, computed %04x" % (crc, crc16_ibm(data)), 8 + dlen)
    if not data or data[0] != CODEC_8E:
        raise AvlError("codec id %s is not 0x8E" % (hex(data[0]) if data else "missing"), 8)
    n = data[1]
    off = 2
    recs = []
    try:
        for _ in range(n):
            ts, prio, lon, lat, alt, ang, sats, spd, ev, _tot = struct.unpack_from(">QBiihHBHHH", data, off)
            off += 28
            io = {}
            for size, fmt in ((1, "B"), (2, "H"), (4, "I"), (8, "Q")):
                (cnt,) = struct.unpack_from(">H", data, off)
                off += 2
                for _k in range(cnt):
                    k, v = struct.unpack_from(">H" + fmt, data, off)
                    off += 2 + size
                    io[k] = (size, v)
            (cnt,) = struct.unpack_from(">H", data, off)
            off += 2
            nx = {}
            for _k in range(cnt):
                k, ln = struct.unpack_from(">HH", data, off)
                off += 4
                if off + ln > len(data):
                    raise struct.error("nx value")
                nx[k] = data[off:off + ln]
                off += ln
            recs.append({"ts_ms": ts, "priority": prio, "lon_e7": lon, "lat_e7": lat, "alt_m": alt,
                         "angle": ang, "sats": sats, "speed_kmh": spd, "event_id": ev, "io": io, "nx": nx})
    except struct.error:
        raise AvlError("record %d runs past the data" % (len(recs) + 1), 8 + off)
    if off != len(data) - 1 or data[off] != n:
        raise AvlError("record count at the end (%d) does not match %d" % (data[-1], n), 8 + len(data) - 1)
    return recs


# ---- paydbox records -> AVL records

def _step_m(p, r):
    """Distance between two consecutive fixes of a block the way the box's odometer counts it
    (firmware/odometer.py): Doppler speed, trapezoid, nothing while (nearly) still or across a gap."""
    if r["utc_s"] >= 0 and p["utc_s"] >= 0 and r["utc_s"] > p["utc_s"]:
        dt_ms = 1000 * (r["utc_s"] - p["utc_s"])
    else:
        dt_ms = r["t_ms"] - p["t_ms"]
    if dt_ms <= 0 or dt_ms > 3000 or p["speed_mmps"] < _STILL_MMPS or r["speed_mmps"] < _STILL_MMPS:
        return 0.0
    return (p["speed_mmps"] + r["speed_mmps"]) * dt_ms / 2e6


def _at(hist, t_ms):
    """The odometer at box time t_ms from [(fix t_ms, odometer)], when a later fix is known: the fix at
    most 1.5 s before t_ms, else (a hole in the history: no fix then, or its block not seen yet) the
    first fix after t_ms, the closest bound the records give."""
    before = after = None
    for tf, o in hist:
        if tf <= t_ms:
            if before is None or tf > before[0]:
                before = (tf, o)
        elif after is None or tf < after[0]:
            after = (tf, o)
    if after is None:
        return None
    if before is not None and t_ms - before[0] <= 1500:
        return before[1]
    return after[1]


def _kmh(mmps):
    return (max(0, min(65535, int(mmps * 36 // 10000 + (1 if mmps * 36 % 10000 >= 5000 else 0)))) if mmps > 0
            else 0)


def _deg(cdeg):
    return 0 if cdeg is None or cdeg < 0 else ((cdeg + 50) // 100) % 360


class Mapper:
    """Decoded blocks -> AVL records (one per `pos`, event, crash, trip start/end and unplug tamper).

    Odometer: blocks carry the box's odometer (an `odometer` record follows every block's first
    record and every trip start, `status` has `odometer_m`); between such anchors the mapper adds the
    great-circle distance between the block's consecutive fixes. Records before the first anchor of their
    block carry no IO 16 (never a guess). Trip odometer: total odometer minus its value at the trip's
    `trip_start` (state kept per device, so it works when the trip's blocks arrive in different packets); the
    `trip_end` record carries the box's own trip distance.
    `state` is a JSON-able dict the caller may persist; mapping the same block again gives the same
    records."""

    def __init__(self, state=None):
        self.state = state if state is not None else {}
        self.skipped_no_time = 0
        self.skipped_kinds = {}  # event kinds not in EVENT_KINDS: {kind: records not mapped}

    def _dev(self, device):
        return self.state.setdefault(device, {"trips": {}, "last": None})

    def _trip_of(self, dev, seq):
        best = None
        for k, v in dev["trips"].items():
            ts = int(k)
            if ts <= seq and (v[1] is None or v[1] >= seq) and (best is None or ts > best[0]):
                best = (ts, v)
        return best

    def map_block(self, header, records):
        """-> [(seq, avl record dict)] in block order."""
        dev = self._dev(str(header["device"]))
        refs = [(r["t_ms"], r["utc_s"]) for r in records if r["type"] == "pos" and r["utc_s"] >= 0]
        odo = None
        boot = header["boot"]
        # (t_ms, odometer) after each fix of this boot, the last ~2 min carried over from the blocks
        # before: a record stamped earlier than the latest fix reads its odometer from it
        hist = [(h[1], h[2]) for h in dev.get("hist", []) if h[0] == boot]
        n_old = len(hist)
        # previous fix: the last one of the block before, when it is the box's fix just before this
        # block (same boot, < 3 s earlier): an anchor taken after it counts nothing from it onwards
        prev = None
        lf = dev.get("last_fix")
        if lf and records and lf["boot"] == header["boot"] and 0 < records[0]["t_ms"] - lf["t_ms"] <= 3000:
            prev = lf
        last_pos = dev["last"]  # (lat, lon, sats) of the latest fix seen for this device
        # tows seen, [boot, seq, since t_ms] (a `towing` event: its t_ms is when the tow began; a `tow`
        # tamper, the sleeping box's alarm (firmware/power.py): the car moved off with the ignition off and
        # the box asleep, so its trip is a tow from its start: -1), this block's own first, so that its
        # records before them see them
        tows = dev.setdefault("tows", [])
        for r in records:
            if r["type"] == "event" and r["kind"] == "towing":
                m = [boot, r["seq"], r["t_ms"]]
            elif r["type"] == "tamper" and r["reason"] == "tow":
                m = [boot, r["seq"], -1]
            else:
                continue
            if m not in tows:
                tows.append(m)
        del tows[:-16]
        out = []
        for i, r in enumerate(records):
            t = r["type"]
            nxt = records[i + 1] if i + 1 < len(records) else None
            own = None  # this record's odometer when the box wrote it right after the record
            if (nxt is not None and nxt["type"] == "odometer" and nxt["t_ms"] == r["t_ms"]
                and nxt["seq"] == r["seq"] + 1):
                # firmware/app.py: after a block's first record (its distance counted) and after a trip
                # start (the odometer at the start time; the odometer now follows when it differs)
                own = float(nxt["total_m"])
            if t == "odometer":
                odo = float(r["total_m"])
                continue
            if t == "status":
                odo = float(r["odometer_m"])
                if r.get("supply_mv", -1) < 0:
                    continue  # no supply reading (a box without power inputs, or before version 5)
                rec_odo = odo
            if t == "pos":
                if own is not None:
                    odo, prev = own, None
                elif odo is not None and prev is not None:
                    odo += _step_m(prev, r)
                prev = r
                last_pos = (r["lat_e7"], r["lon_e7"], r["sats"])
                if odo is not None:
                    hist.append((r["t_ms"], odo))
                rec_odo = odo
            elif t != "trip_start" and _at(hist, r["t_ms"]) is not None:
                # stamped before the latest fix (an over-speed, idle or towing event is written when it
                # has lasted long enough, a crash after its post-trigger trace, each with its start
                # time): the odometer at that time
                rec_odo = _at(hist, r["t_ms"])
            elif own is not None:
                rec_odo = own
            else:
                rec_odo = odo
            if own is not None and t != "pos" and odo is None:
                odo = own  # the odometer now (firmware/app.py writes it when the record is made)
            if t == "trip_start":
                dev["trips"][str(r["seq"])] = [None if rec_odo is None else int(round(rec_odo)), None]
                if len(dev["trips"]) > 16:
                    del dev["trips"][str(min(int(k) for k in dev["trips"]))]
            if t == "trip_end":
                tr = dev["trips"].get(str(r["trip"]))
                if tr is not None:
                    tr[1] = r["seq"]
                    if tr[0] is not None:
                        # the box's own trip distance: the odometer at the trip's end, exactly
                        rec_odo = float(tr[0] + max(0, r["distance_m"]))
                        odo = rec_odo if odo is None else max(odo, rec_odo)
            towed = t in ("pos", "trip_start") and self._towed(dev, boot, r)
            avl = self._record(r, refs, rec_odo, last_pos, dev, towed)
            if avl is None:
                continue
            out.append((r["seq"], avl))
        dev["last"] = list(last_pos) if last_pos else None
        if len(hist) > n_old:
            keep = ([h for h in dev.get("hist", []) if h[0] == boot]
                    + [[boot, tf, o] for tf, o in hist[n_old:]])
            dev["hist"] = keep[-120:]
        if prev is not None and prev is not lf:
            dev["last_fix"] = {"boot": header["boot"], "t_ms": prev["t_ms"], "utc_s": prev["utc_s"],
                               "speed_mmps": prev["speed_mmps"]}
        return out

    def _towed(self, dev, boot, r):
        """True when the record is in a trip (by seq: its trip_start, up to its trip_end) that holds a tow
        begun at or before the record's time: the car moved with the ignition off."""
        tr = self._trip_of(dev, r["seq"])
        if tr is None:
            return False
        lo, hi = tr[0], tr[1][1]
        return any(b == boot and lo <= q and (hi is None or q <= hi) and tm <= r["t_ms"]
                   for b, q, tm in dev.get("tows", ()))

    def _ts_ms(self, r, refs):
        t = r["type"]
        if t == "pos" and r["utc_s"] >= 0:
            return (r["utc_s"] + EPOCH_2000_S) * 1000
        if t == "trip_end" and r.get("end_utc_s", -1) >= 0:
            return (r["end_utc_s"] + EPOCH_2000_S) * 1000
        if refs:
            # the block's fix nearest in box time: a ms-exact time for an event between two fixes
            ref = min(refs, key=lambda x: abs(x[0] - r["t_ms"]))
            return (ref[1] + EPOCH_2000_S) * 1000 + (r["t_ms"] - ref[0])
        if r["utc_s"] >= 0:
            return (r["utc_s"] + EPOCH_2000_S) * 1000
        return None

    def _record(self, r, refs, odo, last_pos, dev, towed=False):
        t = r["type"]
        io = {}
        event_id = 0
        prio = 1
        speed = 0
        course = -1
        lat = r.get("lat_e7")
        lon = r.get("lon_e7")
        sats = last_pos[2] if last_pos else 0
        ign, moving = 1, 0
        if t == "pos":
            prio, speed, course, sats = 0, r["speed_mmps"], r["course_cdeg"], r["sats"]
            moving = 1 if speed >= _MOVE_MMPS else 0  # pos records exist only while a trip is open
            if towed:
                ign = 0  # a trip with a tow: moving with the ignition off
        elif t == "event":
            kind = r["kind"]
            if kind not in EVENT_KINDS:
                self.skipped_kinds[kind] = self.skipped_kinds.get(kind, 0) + 1
                return None
            event_id, green, ign, moving = EVENT_KINDS[kind]
            speed, course = r["speed_start_mmps"], r["course_cdeg"]
            if moving is None:
                moving = 1 if speed >= _MOVE_MMPS else 0
            if green is not None:
                io[IO_GREEN_TYPE] = (1, green)
                io[IO_GREEN_VALUE] = (1, max(0, min(255, (r["peak_mg"] + 5) // 10)))
                io[IO_GREEN_DURATION] = (2, max(0, min(65535, r["dur_ms"])))
            elif event_id == IO_OVERSPEED:
                io[IO_OVERSPEED] = (1, min(255, _kmh(max(r["speed_start_mmps"], r["speed_end_mmps"]))))
            elif event_id:
                io[event_id] = (1, 1)  # the alarm IOs (towing, idling): 1
        elif t == "crash":
            prio, event_id = 2, IO_CRASH
            speed = r["speed_mmps"]
            moving = 1 if speed >= _MOVE_MMPS else 0
            io[IO_CRASH] = (1, 1)
        elif t == "trip_start":
            # a trip opens on the ignition; a tow's on movement (the ignition off)
            event_id, moving = (IO_MOVEMENT, 1) if towed else (IO_IGNITION, 1)
            if towed:
                ign = 0
        elif t == "trip_end":
            event_id, ign = IO_IGNITION, 0
            lat, lon = r["end_lat_e7"], r["end_lon_e7"]
            io[IO_TRIP_ODOMETER] = (4, max(0, r["distance_m"]))
        elif t == "tamper" and r["reason"] in ("power_loss", "unaccounted_distance"):
            # unplugged: the box lost its supply, or the car moved while it was off
            event_id, ign = IO_UNPLUG, 0
            io[IO_UNPLUG] = (1, 1)
        elif t == "tamper" and r["reason"] == "tow":
            # moved with the ignition off, seen by the sleeping box (firmware/power.py): Traccar's tow alarm
            prio, event_id, ign, moving = 2, IO_TOWING, 0, 1
            io[IO_TOWING] = (1, 1)
        elif t == "status":
            # the supply voltage (heartbeat and periodic status): IO 66 external voltage, mV; the status
            # says nothing of the ignition, so IO 239/240 are left out
            event_id, ign = IO_POWER, None
            io[IO_POWER] = (2, max(0, min(65535, r["supply_mv"])))
        else:
            return None  # config, other tamper reasons: no AVL record
        ts = self._ts_ms(r, refs)
        if ts is None:
            self.skipped_no_time += 1
            return None
        if lat is None or lon is None:
            lat, lon = (last_pos[0], last_pos[1]) if last_pos else (0, 0)
        if lat == 0 and lon == 0:
            sats = 0  # no position (privacy no_positions, or none known): Traccar marks it invalid
        if ign is not None:
            io[IO_IGNITION] = (1, ign)
            io[IO_MOVEMENT] = (1, moving)
        if odo is not None:
            # the estimate between two anchors may run ahead of the box's next anchor
            # (in time order: a record stamped later than another never shows less)
            o = int(round(odo))
            hi = dev.get("odo_hi")
            if hi is not None and ts > hi[0]:
                o = max(o, hi[1])
            if hi is None or ts >= hi[0]:
                dev["odo_hi"] = [ts, max(o, hi[1]) if hi is not None else o]
            odo_m = o
            io[IO_ODOMETER] = (4, o)
            if IO_TRIP_ODOMETER not in io and (ign or towed):
                tr = self._trip_of(dev, r["seq"])
                if tr is not None and tr[1][0] is not None:
                    io[IO_TRIP_ODOMETER] = (4, max(0, odo_m - tr[1][0]))
        # speed_mmps / course_cdeg / hdop_x10: full resolution for outputs that can carry it (OsmAnd)
        return {"ts_ms": ts, "priority": prio, "lat_e7": lat, "lon_e7": lon, "alt_m": 0,
                "angle": _deg(course), "sats": max(0, min(255, sats)), "speed_kmh": _kmh(speed),
                "event_id": event_id, "io": io, "speed_mmps": max(0, speed), "course_cdeg": course,
                "hdop_x10": r.get("hdop_x10", -1)}


def records_of_block(block):
    """(header, records) of a paydbox block (firmware.decoder.decode_block)."""
    from firmware import decoder

    return decoder.decode_block(block)
