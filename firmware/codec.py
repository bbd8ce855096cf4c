# paydbox record codec: self-contained compact blocks (spec: docs/record-format.md).
# One implementation for the box (MicroPython) and the host (CPython: `from firmware import codec`).
# This module is the encoder's public API (BlockEncoder; the reader, decode_header, decode_block and
# CodecError, is firmware/decoder.py, host side: the box never decodes a block) and what the bits
# mean: header, predictors, contexts. firmware/records.py holds the record definitions (types,
# fields, strings, versions), firmware/rangecoder.py the generic adaptive range coder.
#
# Block = byte-aligned header (magic, version, flags, device, boot, first_seq, count, base time and
# position, all varints) + a range-coded record stream + CRC-32.  Every field is a prediction residual,
# zigzag-mapped, binarised (bit length in unary, then the mantissa) and coded with an adaptive binary
# range coder (LZMA-style probabilities, 28-bit window so every integer stays a MicroPython small int).
# Predictors use integers only, so the box (float32 or no FPU) and the host decode bit-exactly.
# (Module constants are const(): on MicroPython they are folded into the bytecode, and those whose
# name starts with _ take no room in the module's dict.)
import binascii
import struct

from firmware.rangecoder import NINT, RangeEncoder, init_int_models
from firmware.records import FIELDS, FIRST, KINDS, OPTIONAL, STRINGS, TYPE_NAMES, VERSION
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(course_cdeg=0, no_positions=0)

_MAGIC0 = const(0x50)  # 'P'
_MAGIC1 = const(0x44)  # 'D'

_FLAG_THINNED = const(1)  # bounded-error mode: some pos records were dropped (tolerance in header)
_FLAG_ROUNDED = const(2)  # privacy 'rounded': positions quantised (step in header)
_FLAG_NO_POS = const(4)  # privacy 'no_positions': no pos records, positions zeroed
_FLAG_QUANT = const(8)  # pos speed/course quantised (steps in header); positions stay lossless


# field kinds (records.KINDS letters)
_K_LAT = const(0x61)  # a
_K_LON = const(0x6F)  # o
_K_COURSE = const(0x63)  # c
_K_STR = const(0x73)  # s
_K_BYTES = const(0x62)  # b

# Context layout: fixed contexts, then one per field of records.FIELDS (field i: context _NFIXED + i).
_C_TYPE_T = const(0)  # t_ms residual, pos records
_C_OTHER_T = const(1)  # t_ms residual, other records
_C_UTC = const(2)
_C_SEQ = const(3)
_C_STRLEN = const(4)
_NFIXED = const(5)
# pos speed, course, lat, lon: 2 contexts each, chosen by the size of the field's previous residual
# (accelerating, turning and multipath come in runs): the field's own context _NFIXED + f after a small
# one, _C_PX + f after a large one (_pctx)
_C_PX = const(72)  # = _NFIXED + len(FIELDS)
_NCTX = const(76)   # = _C_PX + 4
_NINT = const(38)  # = rangecoder.NINT: models per integer context
# typical residual bit length per context: the prior of its models (a hint only; they adapt within a
# few records). Fixed contexts (t pos, t other, utc, seq, string length), the fields of FIELDS (pos:
# speed, course, lat, lon after a small residual, hdop, sats; all others 4), then _C_PX.. (speed,
# course, lat, lon after a large residual). A bytes constant: it stays in the image, not the heap.
_K0 = (b"\x03\x0a\x00\x00\x03" b"\x08\x07\x06\x06\x00\x00"
       b"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04"
       b"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04"
       b"\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04\x04"
       b"\x04" b"\x0a\x09\x08\x08")
if _NFIXED + len(FIELDS) != _C_PX or NINT != _NINT or len(_K0) != _NCTX:
    raise ImportError("codec: _C_PX, _NINT or _K0 out of step with records.FIELDS or rangecoder.NINT")
del NINT  # (checked: its slot in the module dict is free again)
# flag models after the integer contexts
_F_REG = const(_NCTX * _NINT)  # regular fix
_F_POS = const(_F_REG + 1)  # a pos record (not regular) / another type
_F_TYPE = const(_F_REG + 2)  # 4-bit type code: binary tree, models 1..15
_F_SEQ = const(_F_REG + 18)  # seq jump
_F_HS = const(_F_REG + 19)  # hdop/sats changed
_F_GRID = const(_F_REG + 20)  # pos on a receiver's arc-minute grid; then which one (2 models)
_NMODELS = const(_F_REG + 22)


def _init_models(p):
    init_int_models(p, _K0)
    for i in range(_F_REG, _NMODELS):
        p[i] = 2048
    p[_F_REG] = 1024  # a regular fix is the common record
    p[_F_SEQ] = 3600  # seq jumps are rare
    p[_F_HS] = 2800
    p[_F_GRID] = 600  # positions from NMEA sit on the ddmm.mmmmm grid


_MOD_COURSE = const(36001)  # course+1 in 0..36000


# sin(deg) * 2**14 for deg = 0..90, u16 little-endian (literal: predictions must be bit-exact on every
# runtime; a bytes constant stays in the image, a tuple of 91 ints took ~750 B of heap):
# 0, 286, 572, 857, 1143, ... 16374, 16382, 16384 (round(sin(deg) * 16384))
_SIN_Q14 = (
    b"\x00\x00\x1e\x01\x3c\x02\x59\x03\x77\x04\x94\x05\xb1\x06\xcd\x07\xe8\x08\x03\x0a\x1d\x0b\x36\x0c"
    b"\x4e\x0d\x66\x0e\x7c\x0f\x90\x10\xa4\x11\xb6\x12\xc7\x13\xd6\x14\xe4\x15\xf0\x16\xfa\x17\x02\x19"
    b"\x08\x1a\x0c\x1b\x0e\x1c\x0e\x1d\x0c\x1e\x07\x1f\x00\x20\xf6\x20\xea\x21\xdb\x22\xca\x23\xb5\x24"
    b"\x9e\x25\x84\x26\x67\x27\x47\x28\x23\x29\xfd\x29\xd3\x2a\xa6\x2b\x75\x2c\x41\x2d\x0a\x2e\xce\x2e"
    b"\x90\x2f\x4d\x30\x07\x31\xbd\x31\x6f\x32\x1d\x33\xc7\x33\x6d\x34\x0f\x35\xad\x35\x46\x36\xdc\x36"
    b"\x6d\x37\xfa\x37\x82\x38\x06\x39\x86\x39\x01\x3a\x78\x3a\xea\x3a\x57\x3b\xc0\x3b\x24\x3c\x83\x3c"
    b"\xde\x3c\x34\x3d\x85\x3d\xd2\x3d\x19\x3e\x5c\x3e\x9a\x3e\xd3\x3e\x07\x3f\x36\x3f\x61\x3f\x86\x3f"
    b"\xa6\x3f\xc2\x3f\xd8\x3f\xea\x3f\xf6\x3f\xfe\x3f\x00\x40")
_SLOW_MMPS = const(1000)
# predictor state (a list, reset per block): 0 seq, 1 t, 2 utc, 3 lat, 4 lon (last of any record), 5 number
# of previous pos (0/1/2), 6-8 p1 t/lat/lon, 9-11 p0 t/lat/lon, 12-15 p1 speed/course/hdop/sats,
# 16 p0 speed, 17 p1 utc, 18 clock offset known, 19 ref t_ms, 20 ref utc_s, 21 8 * mean offset (ms)
# 22-25 bit length of the last speed, course, lat, lon residual, 26-27 predicted lat, lon (_predict_pos)
_NST = const(28)
# the layout firmware/decoder.py walks back, in one tuple (15 names of their own would take room in the
# box's module dict and qstr pool)
LAYOUT = (_NFIXED, _C_TYPE_T, _C_OTHER_T, _C_UTC, _C_SEQ, _C_STRLEN, _F_REG, _F_POS, _F_TYPE, _F_SEQ, _F_HS,
          _F_GRID, _NMODELS, _NST, _MOD_COURSE)


def _pctx(st, f):
    return (_NFIXED + f) if st[22 + f] < 9 else (_C_PX + f)


def isin(a_cdeg):
    """sin of an angle in centidegrees, * 2**14, integer (table + linear interpolation)."""
    a = a_cdeg % 36000
    neg = a >= 18000
    if neg:
        a -= 18000
    if a > 9000:
        a = 18000 - a
    d = a // 50  # 2 bytes a degree
    d -= d & 1
    f = a - d * 50
    s = _SIN_Q14
    v = s[d] | (s[d + 1] << 8)
    if f:
        v += (((s[d + 2] | (s[d + 3] << 8)) - v) * f + 50) // 100
    return -v if neg else v


def zigzag(v):
    return (v << 1) if v >= 0 else ((-v << 1) - 1)


def _nbits(u):
    n = 0
    while u:
        u >>= 1
        n += 1
    return n


def _wrap_course(c, pred, mod=_MOD_COURSE):
    r = (c - pred) % mod
    if r > mod // 2:
        r -= mod
    return r


def _unit(v, q):
    # value -> units of q; with q > 1 any negative value (unknown) becomes -1
    if q == 1:
        return v
    return v // q if v >= 0 else -1


def _quant(v, q, wrap=0):
    if v < 0 or q == 1:
        return v
    v = ((v + q // 2) // q) * q
    return v % wrap if wrap else v


# A record that does not fit (or is refused) is rolled back from the byte stream (mark/rollback),
# not from the models: the block is closed then (add() returns False until finish() or reset()), and
# the next block starts from fresh models, so the models of a closed block are never used again.
# (Saving each touched context to restore it cost 3.3 KB of RAM per encoder and a check per bit.)


# ---- varints (header) ---------------------------------------------------------------------
def _put_varint(out, i, u):
    # u at out[i:]; returns the index after it (out None: only counts)
    while u >= 0x80:
        if out is not None:
            out[i] = (u & 0x7F) | 0x80
        i += 1
        u >>= 7
    if out is not None:
        out[i] = u
    return i + 1


# ---- block header (docs/record-format.md): its layout is written here only (the reader,
# firmware/decoder.py decode_header, takes it from HEADER) -------------------------------------------
# Magic 'P' 'D', version, flags (a byte each); the device id (varint length + UTF-8); then these
# varints in this order, _H_* the index of each in a header list: zigzag-coded where _HDR_ZIGZAG has
# its bit, present only when the block's flags have its _HDR_FLAG bit (0: always; absent: the
# decoder's _HDR_DEFAULT).
_H_BOOT = const(0)
_H_SEQ = const(1)  # first_seq
_H_COUNT = const(2)  # records in the block
_H_UTC = const(3)  # bases: the first record's utc_s, t_ms and position (lat, lon in rounding units)
_H_T = const(4)
_H_LAT = const(5)
_H_LON = const(6)
_H_ROUND = const(7)  # _FLAG_ROUNDED: rounding step (1e-7 deg)
_H_TOL = const(8)  # _FLAG_THINNED: tolerance (m)
_H_SQ = const(9)  # _FLAG_QUANT: speed step (mm/s), course step (cdeg)
_H_CQ = const(10)
_NHDR = const(11)
_HDR_ZIGZAG = const(0x68)  # utc, lat, lon
_HDR_FLAG = bytes((0, 0, 0, 0, 0, 0, 0, _FLAG_ROUNDED, _FLAG_THINNED, _FLAG_QUANT, _FLAG_QUANT))
# the header layout firmware/decoder.py reads back (decode_header): field indices, zigzag bits, magic,
# flags (each < 256)
HEADER = bytes((_H_BOOT, _H_SEQ, _H_COUNT, _H_UTC, _H_T, _H_LAT, _H_LON, _H_ROUND, _H_TOL, _H_SQ, _H_CQ,
                _NHDR, _HDR_ZIGZAG, _MAGIC0, _MAGIC1,
                _FLAG_THINNED, _FLAG_ROUNDED, _FLAG_NO_POS, _FLAG_QUANT))


def _put_header(out, flags, device, h):
    """Writes the header of a block with these flags, device id (bytes) and header values h at the
    start of out; returns its length (out None: only measures it)."""
    if out is not None:
        out[0] = _MAGIC0
        out[1] = _MAGIC1
        out[2] = VERSION
        out[3] = flags
    k = _put_varint(out, 4, len(device))
    if out is not None:
        out[k:k + len(device)] = device
    k += len(device)
    for i in range(_NHDR):
        if not _HDR_FLAG[i] or flags & _HDR_FLAG[i]:
            k = _put_varint(out, k, zigzag(h[i]) if (_HDR_ZIGZAG >> i) & 1 else h[i])
    return k


def _bad(name, v):
    raise ValueError("record field %s: bad value %r" % (name, v))


_LIM = 1 << 62  # |field| < _LIM (a big int on MicroPython: both bounds made once, never per record)
_NLIM = -_LIM


def _base(name, seq, t, utc):
    """Prediction base of a plain int field, the same for encoder and decoder: the record's own seq for
    `trip`, its time for time fields; None: the field's previous value is the base."""
    if name == "trip":
        return seq
    if name.endswith("t_ms"):
        return t
    if name.endswith("utc_s"):
        return utc
    return None


class BlockEncoder:
    """Collects records into one self-contained block of at most max_bytes bytes.

    add(record) -> bool: False when the record does not fit: finish this block (it takes no more
    records: add() returns False until finish() or reset()), then add it to the next one. A record
    refused with ValueError (bad field) closes the block the same way unless it was the first.
    privacy: 'off' | 'no_positions' | 'rounded' (round_e7 = quantisation step, default 0.01 deg).
    tolerance_m > 0 enables bounded-error mode: pos records that the straight line through the
    previous two kept positions predicts within tolerance_m metres are dropped."""

    def __init__(self, device, boot, max_bytes=512, privacy="off", round_e7=100000, tolerance_m=0,
                 speed_q_mmps=1, course_q_cdeg=1):
        if not isinstance(device, str) or not device or len(device) > 64:
            raise ValueError("device: 1..64 characters expected")
        if boot < 0:
            raise ValueError("boot: must be >= 0")
        if privacy not in ("off", "no_positions", "rounded"):
            raise ValueError("privacy: one of off, no_positions, rounded")
        if round_e7 < 1 or tolerance_m < 0:
            raise ValueError("round_e7 >= 1 and tolerance_m >= 0 required")
        if speed_q_mmps < 1 or speed_q_mmps > 10000 or course_q_cdeg < 1 or 36000 % course_q_cdeg:
            raise ValueError("speed_q_mmps: 1..10000; course_q_cdeg: a divisor of 36000")
        if max_bytes < 64:
            raise ValueError("max_bytes: at least 64")
        self.device = device
        self.boot = boot
        self.max_bytes = max_bytes
        self.flags = (_FLAG_NO_POS if privacy == "no_positions" else 0) | (
            _FLAG_ROUNDED if privacy == "rounded" else 0) | (_FLAG_THINNED if tolerance_m > 0 else 0) | (
            _FLAG_QUANT if speed_q_mmps > 1 or course_q_cdeg > 1 else 0)
        self.speed_q = speed_q_mmps
        self.course_q = course_q_cdeg
        self.round_e7 = round_e7 if privacy == "rounded" else 1
        self.tolerance_m = tolerance_m
        self._dev = device.encode()
        self._w = RangeEncoder(max_bytes, _NMODELS, _init_models)
        # per-block state, allocated once and refilled by _start(): the header values (_H_*), the
        # predictor state and, per field of FIELDS, the last value of a plain int field (course:
        # last value + 1, 0 = none)
        self._h = [0] * _NHDR
        self._st = [0] * _NST
        self._prev = [0] * len(FIELDS)
        self._vals = [0] * 6  # a pos record's fields (_encode_pos)
        self.dropped = 0  # pos records dropped by bounded-error / privacy mode (all blocks)
        self._thin = None  # (t, lat, lon) of the last two kept positions for bounded-error mode
        self._start()

    def _start(self):
        self.count = 0
        self.first_seq = -1
        self.last_seq = -1
        self._hdr = None
        self._budget = 0
        self._closed = False
        self._w.reset()
        st = self._st
        for i in range(_NST):
            st[i] = 0
        prev = self._prev
        for i in range(len(prev)):
            prev[i] = 0

    def reset(self):
        """Start a new block (after finish())."""
        self._start()

    # state indices
    # 0 seq, 1 t, 2 utc, 3 lat, 4 lon, 5 have_pos(0/1/2), 6 p1_t, 7 p1_lat, 8 p1_lon, 9 p0_t, 10 p0_lat,
    # 11 p0_lon, 12 p1_speed, 13 p1_course, 14 p1_hdop, 15 p1_sats

    def _q(self, v):
        if self.flags & _FLAG_NO_POS:
            return 0
        q = self.round_e7
        if q == 1:
            return v
        return ((v + q // 2) // q) * q

    def _keep_pos(self, rec):
        tol = self.tolerance_m
        th = self._thin
        lat = rec.get("lat_e7")
        lon = rec.get("lon_e7")
        t = rec.get("t_ms")
        if not (isinstance(lat, int) and isinstance(lon, int) and isinstance(t, int)):
            return True  # keep: the encoder then names the bad field
        if th is None or th[0] is None:
            return True
        (t1, a1, o1), (t0, a0, o0) = th[1], th[0]
        dt0 = t1 - t0
        if dt0 <= 0:
            return True
        pa = a1 + (a1 - a0) * (t - t1) / dt0
        po = o1 + (o1 - o0) * (t - t1) / dt0
        import math

        dy = (lat - pa) * 0.011132
        dx = (lon - po) * 0.011132 * math.cos(lat * 1.7453292519943295e-09)
        return dx * dx + dy * dy > tol * tol

    def add(self, rec):
        try:
            code = TYPE_NAMES.index(rec["type"])
        except (KeyError, ValueError):
            raise ValueError("record: unknown or missing type %r" % rec.get("type"))
        if code == 0:
            if self.flags & _FLAG_NO_POS:
                self.dropped += 1
                return True
            if self.tolerance_m > 0 and not self._keep_pos(rec):
                self.dropped += 1
                return True
        seq = rec.get("seq")
        if not isinstance(seq, int) or seq < 0 or seq >= _LIM:
            _bad("seq", seq)
        if self._closed:
            return False  # a record did not fit: this block takes no more (finish() it)
        w = self._w
        first = self._hdr is None
        if first:
            self.count = 0
            self.first_seq = -1
            self.last_seq = -1
            self._begin(rec, seq)
        w.mark()
        err = None
        try:
            self._encode(rec, code, seq)
            fits = not w.over and w.size() <= self._budget
        except ValueError as e:
            fits = False
            err = e
        except MemoryError:
            # half a record is in the stream (a heap too full for one of its values): the stream goes
            # back to before it and the block is closed, as for a record that does not fit; the caller
            # sees the MemoryError (the record was not added)
            if first:
                self._start()
            else:
                w.rollback()
                self._closed = True
            raise
        if not fits:
            if first:
                self._start()  # the block is still empty: as new (fresh models and predictors)
            else:
                # the stream goes back to before this record; the models and predictors it changed
                # are not restored, so the block is closed (see the note above BlockEncoder)
                w.rollback()
                self._closed = True
            if err is not None:
                raise err
            if first:
                raise ValueError("record seq %d does not fit in a %d-byte block" % (seq, self.max_bytes))
            return False
        self.count += 1
        if first:
            self.first_seq = seq
        self.last_seq = seq
        if code == 0 and self.tolerance_m > 0:
            p = (rec["t_ms"], rec["lat_e7"], rec["lon_e7"])
            self._thin = (None, p) if self._thin is None else (self._thin[1], p)
        return True

    def _begin(self, rec, seq):
        st = self._st
        t = rec.get("t_ms", 0)
        utc = rec.get("utc_s", -1)
        if not isinstance(t, int) or t < 0 or t >= _LIM:
            _bad("t_ms", t)
        if not isinstance(utc, int) or utc < -1 or utc >= _LIM:
            _bad("utc_s", utc)
        lat = 0
        lon = 0
        c = TYPE_NAMES.index(rec["type"])
        for i in range(FIRST[c], FIRST[c + 1]):
            v = rec.get(FIELDS[i])
            if KINDS[i] == _K_LAT and isinstance(v, int):
                lat = self._q(v)
            elif KINDS[i] == _K_LON and isinstance(v, int):
                lon = self._q(v)
                break
        q = self.round_e7
        # header values; the count is written at finish(): room for the largest kept here
        self._hdr = self._header_values(seq, utc, t, lat // q, lon // q)
        self._budget = self.max_bytes - _put_header(None, self.flags, self._dev, self._hdr) - 4
        self._hdr[_H_COUNT] = 0
        st[0] = seq - 1
        st[1] = t
        st[2] = utc
        st[3] = lat // q
        st[4] = lon // q
        st[5] = 0

    def _header_values(self, seq, utc, t, lat_q, lon_q):
        # the count is written at finish(): until then room for the largest a block can hold
        h = self._h
        h[_H_BOOT] = self.boot
        h[_H_SEQ] = seq
        h[_H_COUNT] = self.max_bytes * 8
        h[_H_UTC] = utc
        h[_H_T] = t
        h[_H_LAT] = lat_q
        h[_H_LON] = lon_q
        h[_H_ROUND] = self.round_e7
        h[_H_TOL] = self.tolerance_m
        h[_H_SQ] = self.speed_q
        h[_H_CQ] = self.course_q
        return h

    def _encode(self, rec, code, seq):
        w = self._w
        st = self._st
        t = rec.get("t_ms")
        if not isinstance(t, int) or t < 0 or t >= _LIM:
            _bad("t_ms", t)
        utc = rec.get("utc_s")
        if not isinstance(utc, int) or utc < -1 or utc >= _LIM:
            _bad("utc_s", utc)
        # a regular fix: pos after a pos, next seq, utc_s as predicted, hdop and sats unchanged
        regular = code == 0 and st[5] and seq == st[0] + 1 and utc == _pos_utc_pred(st)
        # type: 1 regular fix, 01 pos, 00 + 4 bits other types
        w.bit(_F_REG, 1 if regular else 0)
        if not regular:
            w.bit(_F_POS, 1 if code == 0 else 0)
            if code:
                node = 1
                for sh in (3, 2, 1, 0):
                    b = (code >> sh) & 1
                    w.bit(_F_TYPE + node, b)
                    node = 2 * node + b
        # seq
        d = seq - (st[0] + 1)
        if regular:
            pass
        elif d == 0:
            w.bit(_F_SEQ, 0)
        else:
            w.bit(_F_SEQ, 1)
            u = zigzag(d)
            w.uint(_C_SEQ, u - 1)
        st[0] = seq
        # time
        if code == 0 and st[5]:
            # a fix after a fix: utc_s first, then t_ms from utc_s and the mean clock offset
            if not regular:
                w.uint(_C_UTC, zigzag(utc - _pos_utc_pred(st)))
            w.uint(_C_TYPE_T, zigzag(t - _pos_t_pred(st, utc)))
        else:
            w.uint(_C_OTHER_T, zigzag(t - st[1]))
            if st[2] == -1:
                pu = -1
            else:
                pu = st[2] + (t - st[1] + 500) // 1000
            w.uint(_C_UTC, zigzag(utc - pu))
        st[1] = t
        st[2] = utc
        q = self.round_e7
        if code == 0:
            self._encode_pos(rec, t)
            return
        for i in range(FIRST[code], FIRST[code + 1]):
            name = FIELDS[i]
            kind = KINDS[i]
            v = rec.get(name)
            if v is None and name in OPTIONAL:
                v = OPTIONAL[name]
            ci = _NFIXED + i
            if kind == _K_STR:
                self._put_str(name, v, ci)
            elif kind == _K_BYTES:
                if not isinstance(v, (bytes, bytearray)):
                    _bad(name, v)
                w.uint(_C_STRLEN, len(v))
                for b in v:
                    w.raw(b, 8)
            else:
                if not isinstance(v, int) or v <= _NLIM or v >= _LIM:
                    _bad(name, v)
                if kind == _K_LAT:
                    v = self._q(v) // q
                    w.uint(ci, zigzag(v - st[3]))
                    st[3] = v
                elif kind == _K_LON:
                    v = self._q(v) // q
                    w.uint(ci, zigzag(v - st[4]))
                    st[4] = v
                elif kind == _K_COURSE:
                    if v < -1 or v > 35999:
                        _bad(name, v)
                    w.uint(ci, zigzag(_wrap_course(v + 1, self._prev[i])))
                    self._prev[i] = v + 1
                else:
                    p = _base(name, seq, t, utc)
                    if p is None:
                        p = self._prev[i]
                        self._prev[i] = v
                    w.uint(ci, zigzag(v - p))

    def _encode_pos(self, rec, t):
        # the pos record (type 0): its fields are FIELDS[0:6], contexts _NFIXED + 0..5 and _C_PX..
        w = self._w
        st = self._st
        q = self.round_e7
        vals = self._vals
        for j in range(6):
            name = FIELDS[j]
            v = rec.get(name)
            if not isinstance(v, int) or v <= _NLIM or v >= _LIM:
                _bad(name, v)
            vals[j] = v
        if vals[3] < -1 or vals[3] > 35999:
            _bad("course_cdeg", vals[3])
        lat = self._q(vals[0]) // q
        lon = self._q(vals[1]) // q
        h = st[5]
        sq = self.speed_q
        cq = self.course_q
        sp = _quant(vals[2], sq)
        co = _quant(vals[3], cq, 36000)
        vals[2] = sp
        vals[3] = co
        u = zigzag(_unit(sp, sq) - _speed_pred(st, sq))
        w.uint(_pctx(st, 0), u)
        st[22] = _nbits(u)
        u = zigzag(_wrap_course(_unit(co, cq) + 1, (_unit(st[13], cq) + 1) if h else 0, 36000 // cq + 1))
        w.uint(_pctx(st, 1), u)
        st[23] = _nbits(u)
        if h and vals[4] == st[14] and vals[5] == st[15]:
            w.bit(_F_HS, 0)  # hdop and sats unchanged
        else:
            if h:
                w.bit(_F_HS, 1)
            w.uint(_NFIXED + 4, zigzag(vals[4] - (st[14] if h else 0)))
            w.uint(_NFIXED + 5, zigzag(vals[5] - (st[15] if h else 0)))
        _predict_pos(st, t, vals[2], vals[3], q)
        pa = st[26]
        po = st[27]
        ga = go = None
        m = 0
        if q == 1:
            # a receiver's NMEA gives minutes with 4 or 5 decimals: code the index on that grid
            for m in (1000, 100):  # the grids, coarsest first (see _grid_of)
                ga = _grid_of(lat, m)
                go = _grid_of(lon, m) if ga is not None else None
                if go is not None:
                    break
            w.bit(_F_GRID, 0 if go is None else 1)
            if go is not None:
                w.bit(_F_GRID + 1, 1 if m == 1000 else 0)
        if go is None:
            ra = lat - pa
            ro = lon - po
        else:
            ra = ga - _div_round(pa * 60, m)
            ro = go - _div_round(po * 60, m)
        u = zigzag(ra)
        w.uint(_pctx(st, 2), u)
        st[24] = _nbits(u)
        u = zigzag(ro)
        w.uint(_pctx(st, 3), u)
        st[25] = _nbits(u)
        _push_pos(st, t, st[2], lat, lon, vals[2], vals[3], vals[4], vals[5])

    def _put_str(self, name, v, ci):
        if not isinstance(v, str):
            _bad(name, v)
        w = self._w
        try:
            idx = STRINGS.index(v)
            w.uint(ci, idx + 1)
        except ValueError:
            b = v.encode()
            w.uint(ci, 0)
            w.uint(_C_STRLEN, len(b))
            for c in b:
                w.raw(c, 8)

    def finish(self):
        """The block (header + records + CRC-32), a bytearray the caller owns. Call reset() (or let
        add() after finish start anew: finish() resets the encoder itself) before adding more records.
        A MemoryError leaves the block open as it was (its records kept): the caller retries."""
        return self._finish(False)

    def finish_view(self):
        """The same block, built in the encoder's own stream buffer: a memoryview valid until the next
        add() or reset(), nothing allocated for it (the Box commits it to the store at once: on a
        full heap the block's own buffer, up to block_max_bytes, was what failed at its commit)."""
        return self._finish(True)

    def _finish(self, view):
        h = self._hdr
        if h is None:  # empty block: neutral bases
            h = self._header_values(0, -1, 0, 0, 0)
        h[_H_COUNT] = self.count
        w = self._w
        w.mark()   # the stream's flush changes its last bytes: a MemoryError below goes back to here
        stream = w.finish()
        ns = len(stream)
        stream = None
        k = _put_header(None, self.flags, self._dev, h)
        n = k + ns + 4
        buf = w.buf
        if view and n > len(buf):
            view = False   # (an empty block's header alone in a tiny buffer: not the box's sizes)
        try:
            if view:
                out = buf
                res = memoryview(buf)[:n]
            else:
                out = bytearray(n)  # the block's size: filled in place, never grown
                res = out
            body = memoryview(out)[:n - 4]
        except MemoryError:
            w.rollback()
            raise
        if view:
            # the stream moves up by the header's k bytes, from its end (the two ranges overlap)
            i = ns
            while i > 0:
                i -= 1
                buf[i + k] = buf[i]
        else:
            out[k:n - 4] = memoryview(buf)[:ns]
        _put_header(out, self.flags, self._dev, h)
        struct.pack_into("<I", out, n - 4, binascii.crc32(body) & 0xFFFFFFFF)
        fs, ls, n = self.first_seq, self.last_seq, self.count
        self._start()
        # keep the description of the finished block readable until the next add()
        self.first_seq, self.last_seq, self.count = fs, ls, n
        return res


def _predict_pos(st, t, speed=-1, course=-1, q=1):
    """Predicted (lat, lon) in position units (1e-7 deg / q), into st[26], st[27] (no tuple to allocate),
    for a pos record at t whose speed and course are known. Doppler velocity (mean of the previous and
    this fix) * dt when both fixes carry speed and course; the previous position when slow or course
    unknown; else straight-line extrapolation."""
    h = st[5]
    if h == 0:
        st[26] = st[3]
        st[27] = st[4]
        return
    dt1 = t - st[6]
    # the fixes' own epochs (utc_s) say how far apart they were better than their arrival times
    if st[2] >= 0 and st[17] >= 0 and st[2] > st[17]:
        d = 1000 * (st[2] - st[17])
        if -500 <= d - dt1 <= 500:
            dt1 = d
    s1 = st[12]
    c1 = st[13]
    if speed >= 0 and s1 >= 0 and course >= 0 and c1 >= 0 and dt1 > 0:
        n = (s1 * isin(c1 + 9000) + speed * isin(course + 9000)) * dt1  # cos = sin(+90 deg)
        e = (s1 * isin(c1) + speed * isin(course)) * dt1
        # mm = v * dt / 1000; 1e-7 deg of latitude = 11.132 mm; the sum of two velocities * 2**14 -> / 32768
        den = 32768 * 11132 * q
        dlat = _div_round(n, den)
        cl = isin((st[7] * q) // 100000 + 9000)
        if cl < 50:
            cl = 50
        dlon = _div_round(e * 16384, den * cl)
        st[26] = st[7] + dlat
        st[27] = st[8] + dlon
        return
    if h == 1 or (0 <= speed < _SLOW_MMPS) or dt1 <= 0:
        st[26] = st[7]
        st[27] = st[8]
        return
    dt0 = st[6] - st[9]
    if dt0 <= 0:
        st[26] = st[7]
        st[27] = st[8]
        return
    pa = st[7] + _div_round((st[7] - st[10]) * dt1, dt0)
    po = st[8] + _div_round((st[8] - st[11]) * dt1, dt0)
    st[26] = pa
    st[27] = po


# NMEA arc-minute grids (coarsest first, as _encode_pos tries them): minutes * 1e4 (M = 1000) and * 1e5
# (M = 100); a grid index G is 1e-7 deg sign(G) * ((|G| * M + 30) // 60), what firmware/nmea.py makes of
# ddmm.mmmm(m)


def _grid_e7(g, m):
    return (g * m + 30) // 60 if g >= 0 else -((-g * m + 30) // 60)


def _grid_of(e7, m):
    # the grid index whose position is e7, or None when e7 is off that grid
    g0 = _div_round(e7 * 60, m)
    if _grid_e7(g0, m) == e7:
        return g0
    if _grid_e7(g0 - 1, m) == e7:  # three tests, not a loop over a tuple: nothing allocated
        return g0 - 1
    if _grid_e7(g0 + 1, m) == e7:
        return g0 + 1
    return None


def _div_round(a, b):
    # integer a / b rounded to nearest, b > 0, identical on both runtimes
    if a >= 0:
        return (a + b // 2) // b
    return -((-a + b // 2) // b)


def _speed_pred(st, sq):
    # pos speed prediction in units of the speed step: the previous speed plus half the last change
    h = st[5]
    if not h:
        return 0
    v1 = _unit(st[12], sq)
    if h > 1 and st[12] >= 0 and st[16] >= 0:
        return v1 + (v1 - _unit(st[16], sq)) // 2
    return v1


def _pos_utc_pred(st):
    # utc_s of a fix after a fix: the last utc_s + the last fix interval in whole seconds (1 with one fix)
    if st[2] == -1:
        return -1
    return st[2] + ((st[6] - st[9] + 500) // 1000 if st[5] > 1 else 1)


def _pos_t_pred(st, utc):
    # t_ms of a fix after a fix: when utc_s is known and moved on, ref_t + 1000 * (utc - ref_utc) + the mean
    # offset of the previous fixes' t_ms from their utc second (arrival jitter averages out); else the
    # previous interval repeated (1000 ms with one previous fix)
    if utc >= 0 and st[18] and utc != st[17]:
        return st[19] + 1000 * (utc - st[20]) + ((st[21] + 4) >> 3)
    return st[6] + (st[6] - st[9] if st[5] > 1 else 1000)


def _push_pos(st, t, utc, lat, lon, speed, course, hdop, sats):
    if utc >= 0 and (not st[5] or utc != st[17]):
        if not st[18]:
            st[18] = 1
            st[19] = t
            st[20] = utc
            st[21] = 0
        else:
            o = t - st[19] - 1000 * (utc - st[20])
            st[21] += o - ((st[21] + 4) >> 3)
    st[17] = utc
    st[16] = st[12]
    st[9] = st[6]
    st[10] = st[7]
    st[11] = st[8]
    st[6] = t
    st[7] = lat
    st[8] = lon
    st[3] = lat
    st[4] = lon
    st[12] = speed
    st[13] = course
    st[14] = hdop
    st[15] = sats
    if st[5] < 2:
        st[5] += 1
