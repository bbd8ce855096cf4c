# paydbox record codec, the reader: blocks back to records (spec: docs/record-format.md). Host side: the
# edge agent, the consumer, host tools and tests import it (`from firmware import decoder`); the box
# only encodes, so this module is not in the box's image and runner.load_box never loads it
# (tools/installer/flash.py BOX_MODULES is the import closure of firmware/main.py). What the bits
# mean is written once, in firmware/codec.py (header, predictors, contexts: codec.LAYOUT and the
# functions imported below) and firmware/records.py (record definitions); this module only walks them
# back. Runs on CPython and MicroPython (tests/mp/mp_codec.py).
import binascii
import struct

from firmware.codec import (
    _HDR_FLAG,
    HEADER,
    LAYOUT,
    _base,
    _div_round,
    _grid_e7,
    _init_models,
    _nbits,
    _pctx,
    _pos_t_pred,
    _pos_utc_pred,
    _predict_pos,
    _push_pos,
    _speed_pred,
    _unit,
)
from firmware.rangecoder import NINT, NPRE, RBOT, RTOP
from firmware.records import COUNTS, FIELDS, FIRST, KINDS, OPTIONAL, STRINGS, TYPE_NAMES, VERSION
from hw.compat import const, zeros

(NFIXED, C_TYPE_T, C_OTHER_T, C_UTC, C_SEQ, C_STRLEN, F_REG, F_POS, F_TYPE, F_SEQ, F_HS, F_GRID, NMODELS, NST,
 MOD_COURSE) = LAYOUT
(H_BOOT, H_SEQ, H_COUNT, H_UTC, H_T, H_LAT, H_LON, H_ROUND, H_TOL, H_SQ, H_CQ, NHDR, HDR_ZIGZAG, MAGIC0,
 MAGIC1, FLAG_THINNED, FLAG_ROUNDED, FLAG_NO_POS, FLAG_QUANT) = HEADER
_HDR_DEFAULT = (0, 0, 0, -1, 0, 0, 0, 1, 0, 1, 1)  # what a header field the flags leave out stands for

# Every version the decoder reads (docs/record-format.md "Versions"): version -> (entries of
# records.STRINGS, fields per record type in type order; a type past the end of the tuple is not in that
# version). A version only appends: record types, fields to the end of their type (each with a default in
# records.OPTIONAL), strings to STRINGS; so an older block is read with today's tables cut to its counts,
# and a field it does not have decodes as absent (its default). Contexts' priors depend on the kind of
# field, never on a context's index, so appending does not change how older fields decode. The row of
# the version the box writes is records' (VERSION, STRINGS, COUNTS); a new version adds the row of the
# one it replaces here. 1 and 2 (Rice codes) were never deployed and are not read.
FORMATS = {
    3: (16, (6, 9, 7, 3, 23, 9, 2, 3, 1)),  # range coder, NMEA grid, odometer record
    4: (22, (6, 9, 7, 3, 26, 9, 2, 3, 1)),  # trip_end + n_unclassified, n_gnss_only, score_note
    VERSION: (len(STRINGS), tuple(COUNTS)),  # 5: status + supply_mv; power-management tamper reasons
}

# field kinds: the letters of records.KINDS
_K_LAT = const(0x61)  # a
_K_LON = const(0x6F)  # o
_K_COURSE = const(0x63)  # c
_K_STR = const(0x73)  # s
_K_BYTES = const(0x62)  # b


class CodecError(Exception):
    """Damaged or unsupported block. .offset is the byte offset of the damage (or -1)."""

    def __init__(self, msg, offset=-1):
        super().__init__("%s at byte offset %d" % (msg, offset) if offset >= 0 else msg)
        self.offset = offset


def unzigzag(u):
    return (u >> 1) if not (u & 1) else -((u + 1) >> 1)


def _get_varint(data, off, end):
    u = 0
    shift = 0
    start = off
    while True:
        if off >= end:
            raise CodecError("header varint truncated", start)
        b = data[off]
        off += 1
        u |= (b & 0x7F) << shift
        if not b & 0x80:
            return u, off
        shift += 7
        if shift > 63:
            raise CodecError("header varint too long", start)


def _get_header(data, end):
    """(flags, device, header values, offset of the record stream) of data (magic, version and CRC
    already checked); CodecError at the offset of a bad field."""
    flags = data[3]
    if flags & ~15:
        raise CodecError("unknown flags %02x" % flags, 3)
    ln, off = _get_varint(data, 4, end)
    if off + ln > end:
        raise CodecError("device id truncated", off)
    try:
        device = bytes(data[off:off + ln]).decode()
    except Exception:
        raise CodecError("device id not UTF-8", off)
    off += ln
    h = list(_HDR_DEFAULT)
    for i in range(NHDR):
        if not _HDR_FLAG[i] or flags & _HDR_FLAG[i]:
            v, off = _get_varint(data, off, end)
            h[i] = unzigzag(v) if (HDR_ZIGZAG >> i) & 1 else v
            if i == H_ROUND and v < 1:
                raise CodecError("bad rounding step", off - 1)
            if i == H_CQ and (h[H_SQ] < 1 or v < 1 or 36000 % v):
                raise CodecError("bad speed/course step", off - 1)
    return flags, device, h, off


def decode_header(data):
    """(header dict, offset of the record stream, header values by _H_*). Checks magic, version and CRC."""
    n = len(data)
    if n < 4 or data[0] != MAGIC0 or data[1] != MAGIC1:
        raise CodecError("bad magic", 0)
    ver = data[2]
    if ver not in FORMATS:
        raise CodecError("unsupported record-format version %d (this decoder reads %s)"
                         % (ver, ", ".join([str(v) for v in sorted(FORMATS)])), 2)
    if n < 12:
        raise CodecError("block truncated (%d bytes)" % n, n)
    end = n - 4
    crc = struct.unpack_from("<I", data, end)[0]
    calc = binascii.crc32(memoryview(data)[:end]) & 0xFFFFFFFF
    if crc != calc:
        raise CodecError("CRC mismatch (stored %08x, computed %08x)" % (crc, calc), end)
    flags, device, h, off = _get_header(data, end)
    q = h[H_ROUND]
    hdr = {"version": ver, "device": device, "boot": h[H_BOOT], "first_seq": h[H_SEQ], "count": h[H_COUNT],
           "flags": flags, "base_utc_s": h[H_UTC], "base_t_ms": h[H_T], "base_lat_e7": h[H_LAT] * q,
           "base_lon_e7": h[H_LON] * q,
           "privacy": "no_positions" if flags & FLAG_NO_POS else (
               "rounded" if flags & FLAG_ROUNDED else "off"),
           "round_e7": q, "tolerance_m": h[H_TOL], "speed_q_mmps": h[H_SQ], "course_q_cdeg": h[H_CQ],
           "size": n}
    return hdr, off, h


class RangeDecoder:
    """Reads the stream data[start:end] (zeros past its end) with nmodels models whose priors init(p) sets."""

    def __init__(self, data, start, end, nmodels, init):
        self.data = data
        self.start = start
        self.end = end
        self.k = start + 3  # the next byte comes from bits 4..7 of data[k] and 0..3 of data[k + 1]
        self.p = zeros("H", nmodels)
        init(self.p)
        self.range = RTOP
        c = 0
        for j in range(4):
            c = (c << 8) | self._byte(start + j)
        self.code = c >> 4

    def _byte(self, i):
        return self.data[i] if i < self.end else 0

    def _shift(self):
        while self.range < RBOT:
            k = self.k
            self.code = (((self.code << 8) & (RTOP - 1)) | ((self._byte(k) & 15) << 4)
                         | (self._byte(k + 1) >> 4))
            self.k = k + 1
            self.range <<= 8

    def pos(self):
        # byte offset reached (for error messages)
        return self.k if self.k < self.end else self.end

    def bit(self, i):
        p = self.p
        p0 = p[i]
        bound = (self.range >> 12) * p0
        if self.code < bound:
            self.range = bound
            p[i] = p0 + ((4096 - p0) >> 4)
            b = 0
        else:
            self.code -= bound
            self.range -= bound
            p[i] = p0 - (p0 >> 4)
            b = 1
        if self.range < RBOT:
            self._shift()
        return b

    def raw(self, k):
        v = 0
        while k > 0:
            take = 8 if k > 8 else k
            k -= take
            r = self.range >> take
            d = self.code // r
            if d >> take:
                raise CodecError("record data damaged", self.pos())
            self.code -= d * r
            self.range = r
            v = (v << take) | d
            if r < RBOT:
                self._shift()
        return v

    def uint(self, c):
        b = c * NINT
        last = b + NPRE - 1
        n = 0
        while self.bit(b + n if n < NPRE - 1 else last):
            n += 1
            if n > 63:
                raise CodecError("record data damaged (integer too long)", self.pos())
        if n < 2:
            return n
        u = 2 | self.bit(b + NPRE - 2 + (n if n < NPRE else NPRE - 1))
        if n > 2:
            u = (u << (n - 2)) | self.raw(n - 2)
        return u


def _get_bytes(r, what):
    # a length-prefixed run of raw bytes (an inline string or a bytes field)
    ln = r.uint(C_STRLEN)
    if ln > r.end - r.pos() + 4:
        raise CodecError("%s length %d beyond the data" % (what, ln), r.pos())
    b = bytearray(ln)
    for i in range(ln):
        b[i] = r.raw(8)
    return bytes(b)


def decode_block(data):
    """bytes -> (header dict, [record dicts]). CodecError(offset) on any damage. A block of an older
    version (FORMATS) decodes with the fields it had; hdr["version"] says which."""
    hdr, off, _h = decode_header(data)
    q = hdr["round_e7"]
    sq = hdr["speed_q_mmps"]
    cq = hdr["course_q_cdeg"]
    ver = hdr["version"]
    nstr, nfields = FORMATS[ver]
    end = len(data) - 4
    r = RangeDecoder(data, off, end, NMODELS, _init_models)
    st = [0] * NST
    st[0] = hdr["first_seq"] - 1
    st[1] = hdr["base_t_ms"]
    st[2] = hdr["base_utc_s"]
    st[3] = hdr["base_lat_e7"] // q  # the bases in rounding units, as coded
    st[4] = hdr["base_lon_e7"] // q
    prev = [0] * len(FIELDS)  # as BlockEncoder._prev
    recs = []
    count = hdr["count"]
    if count > (end - off + 1) * 128:
        raise CodecError("record count %d larger than the data" % count, off)
    for _ in range(count):
        rstart = r.pos()
        regular = r.bit(F_REG)
        if regular:
            code = 0
            if not st[5]:
                raise CodecError("regular fix without a previous fix", rstart)
        elif r.bit(F_POS):
            code = 0
        else:
            node = 1
            for _j in range(4):
                node = 2 * node + r.bit(F_TYPE + node)
            code = node - 16
            if code == 0 or code >= len(nfields):
                raise CodecError("unknown record type %d (version %d)" % (code, ver), rstart)
        if not regular and r.bit(F_SEQ):
            seq = st[0] + 1 + unzigzag(r.uint(C_SEQ) + 1)
        else:
            seq = st[0] + 1
        st[0] = seq
        if code == 0 and st[5]:
            utc = _pos_utc_pred(st)
            if not regular:
                utc += unzigzag(r.uint(C_UTC))
            t = _pos_t_pred(st, utc) + unzigzag(r.uint(C_TYPE_T))
        else:
            t = st[1] + unzigzag(r.uint(C_OTHER_T))
            pu = -1 if st[2] == -1 else st[2] + (t - st[1] + 500) // 1000
            utc = pu + unzigzag(r.uint(C_UTC))
        st[1] = t
        st[2] = utc
        rec = {"type": TYPE_NAMES[code], "seq": seq, "t_ms": t, "utc_s": utc}
        if code == 0:
            h = st[5]
            u = r.uint(_pctx(st, 0))
            st[22] = _nbits(u)
            speed = _speed_pred(st, sq) + unzigzag(u)
            if sq > 1:
                speed = speed * sq if speed >= 0 else -1
            u = r.uint(_pctx(st, 1))
            st[23] = _nbits(u)
            course = ((_unit(st[13], cq) + 1 if h else 0) + unzigzag(u)) % (36000 // cq + 1) - 1
            if cq > 1:
                course = course * cq if course >= 0 else -1
            if h and not r.bit(F_HS):
                hdop = st[14]
                sats = st[15]
            else:
                hdop = (st[14] if h else 0) + unzigzag(r.uint(NFIXED + 4))
                sats = (st[15] if h else 0) + unzigzag(r.uint(NFIXED + 5))
            _predict_pos(st, t, speed, course, q)
            pa = st[26]
            po = st[27]
            m = 0
            if q == 1 and r.bit(F_GRID):
                m = 1000 if r.bit(F_GRID + 1) else 100
            u = r.uint(_pctx(st, 2))
            st[24] = _nbits(u)
            lat = pa + unzigzag(u) if not m else _grid_e7(_div_round(pa * 60, m) + unzigzag(u), m)
            u = r.uint(_pctx(st, 3))
            st[25] = _nbits(u)
            lon = po + unzigzag(u) if not m else _grid_e7(_div_round(po * 60, m) + unzigzag(u), m)
            _push_pos(st, t, utc, lat, lon, speed, course, hdop, sats)
            rec["lat_e7"] = lat * q
            rec["lon_e7"] = lon * q
            rec["speed_mmps"] = speed
            rec["course_cdeg"] = course
            rec["hdop_x10"] = hdop
            rec["sats"] = sats
            recs.append(rec)
            continue
        for i in range(FIRST[code], FIRST[code] + nfields[code]):
            name = FIELDS[i]
            kind = KINDS[i]
            ci = NFIXED + i
            if kind == _K_STR:
                idx = r.uint(ci)
                if idx:
                    if idx > nstr:
                        raise CodecError("unknown string index %d (version %d)" % (idx, ver), r.pos())
                    v = STRINGS[idx - 1]
                else:
                    b = _get_bytes(r, "string")
                    try:
                        v = b.decode()
                    except Exception:
                        raise CodecError("string not UTF-8", r.pos())
            elif kind == _K_BYTES:
                v = _get_bytes(r, "bytes")
            elif kind == _K_LAT:
                v = st[3] + unzigzag(r.uint(ci))
                st[3] = v
                v *= q
            elif kind == _K_LON:
                v = st[4] + unzigzag(r.uint(ci))
                st[4] = v
                v *= q
            elif kind == _K_COURSE:
                v = (prev[i] + unzigzag(r.uint(ci))) % MOD_COURSE - 1
                prev[i] = v + 1
            else:
                p = _base(name, seq, t, utc)
                if p is None:
                    v = prev[i] + unzigzag(r.uint(ci))
                    prev[i] = v
                else:
                    v = p + unzigzag(r.uint(ci))
            if name in OPTIONAL and v == OPTIONAL[name]:
                continue
            rec[name] = v
        recs.append(rec)
    return hdr, recs
