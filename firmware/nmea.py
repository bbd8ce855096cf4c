# Streaming NMEA 0183 parser for the box: fed raw UART bytes, assembles one Fix per epoch.
# Runs unchanged on MicroPython and CPython. Per-byte and per-sentence paths use integers only and
# work in a preallocated line buffer (no per-sentence strings or field lists). See docs/gnss.md.
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(bad_checksum=0, date_invalid=0, no_checksum=0, time_backwards=0)

_MAXLINE = const(128)  # bytes kept from '$' to before CR/LF; longer lines are dropped (too_long)
_MAXFIELDS = const(40)
_DOLLAR = const(0x24)
_STAR = const(0x2A)
_COMMA = const(0x2C)
_CR = const(0x0D)
_LF = const(0x0A)

# 3-letter sentence formatter as a 24-bit key
_K_RMC = const(0x524D43)
_K_GGA = const(0x474741)
_K_GNS = const(0x474E53)
_K_VTG = const(0x565447)
_K_GSA = const(0x475341)

# sentence kinds (bit flags in the epoch's seen mask)
T_RMC = const(1)
T_GGA = const(2)
T_GNS = const(4)
T_VTG = const(8)
T_GSA = const(16)

_EMPTY = const(-1)  # numeric field empty
_BAD = const(-2)  # numeric field malformed
ALT_UNKNOWN = const(-1000000)
_DAY_MS = const(86400000)

# talkers we know (others with two upper-case letters are accepted too and counted in 'talker_other')
_TALKERS = (b"GP", b"GN", b"GL", b"GA", b"GB", b"BD", b"GQ", b"QZ", b"GI")

# mode indicator byte -> 1-char str (no allocation when assigning a preexisting str)
_MODE_CHARS = b"ADEFMNPRS"
_MODE_STRS = ("A", "D", "E", "F", "M", "N", "P", "R", "S")
_MODE_UNKNOWN = "-"
# GGA-equivalent fix quality for a mode indicator (when no GGA in the epoch)
_MODE_QUALITY = (1, 2, 6, 5, 7, 0, 3, 4, 8)

_COUNTER_NAMES = (
    "sentences",  # accepted (checksum ok, known type, well-formed)
    "bad_checksum",
    "no_checksum",
    "too_long",
    "truncated",  # a '$' arrived before the previous sentence ended
    "aborted",  # non-printable byte inside a sentence (binary, noise)
    "junk_bytes",  # bytes outside any sentence (binary protocols, NULs, comments)
    "unknown",  # checksum ok but sentence type/talker we do not decode (incl. proprietary)
    "malformed",  # checksum ok but a decoded field is not a number / wrong field count
    "fixes",  # epochs emitted through on_fix
    "orphan",  # VTG/GSA with no open epoch to attach to
    "late",  # timed sentence for an epoch already emitted
    "time_backwards",
    "date_jump",
    "date_invalid",  # date before min_year (GPS week rollover garbage) or impossible
    "restarts",
)


class Fix:
    """One per epoch, reused by the parser: copy what you need inside on_fix."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.t_ms = 0
        self.utc_s = -1
        self.utc_ms = 0
        self.valid = 0
        self.quality = 0
        self.lat_e7 = 0
        self.lon_e7 = 0
        self.alt_dm = ALT_UNKNOWN
        self.speed_mmps = -1
        self.course_cdeg = -1
        self.hdop_x10 = -1
        self.sats = -1
        self.mode = _MODE_UNKNOWN

    def copy_from(self, o):
        self.t_ms = o.t_ms
        self.utc_s = o.utc_s
        self.utc_ms = o.utc_ms
        self.valid = o.valid
        self.quality = o.quality
        self.lat_e7 = o.lat_e7
        self.lon_e7 = o.lon_e7
        self.alt_dm = o.alt_dm
        self.speed_mmps = o.speed_mmps
        self.course_cdeg = o.course_cdeg
        self.hdop_x10 = o.hdop_x10
        self.sats = o.sats
        self.mode = o.mode


def days_from_civil(y, m, d):
    """Days since 2000-01-01 for a proleptic Gregorian date (integer only)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m + 9 if m <= 2 else m - 3
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 730425  # 730425 = days from 0000-03-01 to 2000-01-01


_MDAYS = b"\x1f\x1d\x1f\x1e\x1f\x1e\x1f\x1f\x1e\x1f\x1e\x1f"


class NMEAParser:
    def __init__(self, on_fix=None, min_year=2019, idle_ms=100):
        if min_year < 2000 or min_year > 2079:
            raise ValueError("min_year must be 2000..2079, got %r" % (min_year,))
        # every one of the parser's 44 names first, before its buffers: its instance dict grows through
        # its smaller tables here and not to its 47 slots (752 B) between the boot's buffers (a 99K heap
        # had no hole left for it there). A name added to the parser is added here too.
        self.on_fix = self.idle_ms = self._min_days = self._line = self._len = self._fs = self._nf = None
        self._end = self._x = self._marks = self.counters = self.fix = self._s_kind = self._s_gn = None
        self._s_tod = self._s_lat = self._s_lon = self._s_haspos = self._s_status = self._s_quality = None
        self._s_sats = self._s_hdop = self._s_alt = self._s_speed = self._s_course = self._s_mode = None
        self._s_nav = self._s_days = self._open = self._seen = self._e_tod = self._e_gn_pos = None
        self._e_status = self._e_mode = self._e_nav = self._e_days = self._e_gn_kinds = None
        self._last_byte_ms = self._done_tod = self._days = self._last_tod = self._last_utc = None
        self._cand_days = self._cand_n = None
        self.on_fix = on_fix
        self.idle_ms = idle_ms
        self._min_days = days_from_civil(min_year, 1, 1)
        self._line = bytearray(_MAXLINE)
        self._len = 0  # 0: outside a sentence
        # field start offsets (<= _MAXLINE + 1: bytes; no alloc on store)
        self._fs = bytearray(_MAXFIELDS + 1)
        self._nf = 0
        self._end = 0  # offset of '*'
        # gathered by feed() while a line is stored (see _check); _nf counts the field starts so far
        self._x = 0  # XOR of line[1:_len]
        self._marks = 0  # offset of the first '*' | offset of the first comma past _MAXFIELDS << 8 (0: none)
        self.counters = {}
        for k in _COUNTER_NAMES:
            self.counters[k] = 0
        self.fix = Fix()
        # per-sentence scratch (filled by _decode)
        self._s_kind = 0
        self._s_gn = 0
        self._s_tod = -1
        self._s_lat = 0
        self._s_lon = 0
        self._s_haspos = 0
        self._s_status = -1  # RMC: 1 A, 0 V, -1 empty
        self._s_quality = -1
        self._s_sats = -1
        self._s_hdop = -1
        self._s_alt = ALT_UNKNOWN
        self._s_speed = -1
        self._s_course = -1
        self._s_mode = -1  # index into _MODE_STRS
        self._s_nav = 0  # RMC nav status byte (4.1x)
        self._s_days = -1  # RMC date: days since 2000-01-01, -1 empty, -2 invalid
        # epoch state
        self._open = 0  # an epoch is being assembled
        self._seen = 0
        self._e_tod = -1
        self._e_gn_pos = 0
        self._e_status = -1
        self._e_mode = -1
        self._e_nav = 0
        self._e_days = -1
        self._e_gn_kinds = 0  # kinds seen from the GN (combined) talker
        self._last_byte_ms = 0
        self._done_tod = -2  # time of day of the last epoch emitted on completion (-2 none)
        # timeline
        self._days = -1  # accepted current date
        self._last_tod = -1
        self._last_utc = -1
        self._cand_days = -1
        self._cand_n = 0

    # ------------------------------------------------------------------ bytes in
    def feed(self, buf, n=-1, t_ms=0):
        """Feed the first n bytes of buf (all when n < 0) received at box time t_ms."""
        if n < 0 or n > len(buf):
            n = len(buf)
        if n == 0:
            if self._open and t_ms - self._last_byte_ms >= self.idle_ms:
                self._emit()
            return
        if self._open and t_ms - self._last_byte_ms >= self.idle_ms:
            self._emit()
        self._last_byte_ms = t_ms
        line = self._line
        ln = self._len
        # the checksum and the field starts are gathered here, byte by byte, so _check needs no
        # second pass: x (XOR of line[1:ln]), nf field starts in _fs, the first '*' and the comma
        # past _MAXFIELDS (their offsets, in _marks; 0 none)
        x = self._x
        fs = self._fs
        nf = self._nf
        c = self.counters
        for i in range(n):
            b = buf[i]
            if b > _COMMA and b < 0x7F and ln and ln < _MAXLINE:
                # the common byte: inside a sentence, printable, not '$' ',' '*' (all < ',')
                line[ln] = b
                ln += 1
                x ^= b
            elif b == _DOLLAR:
                if ln > 1:
                    c["truncated"] += 1
                line[0] = b
                ln = 1
                x = 0
                nf = 1
                self._marks = 0
            elif ln == 0:
                if b != _CR and b != _LF:
                    c["junk_bytes"] += 1
            elif b == _CR or b == _LF:
                self._len = ln
                self._x = x
                self._nf = nf
                self._end_line(t_ms)
                ln = 0
            elif b < 0x20 or b > 0x7E:
                c["aborted"] += 1
                ln = 0
            elif ln >= _MAXLINE:
                c["too_long"] += 1
                ln = 0
            else:  # printable up to ',': ',' and '*' mark the line
                if b == _COMMA:
                    if nf < _MAXFIELDS:
                        fs[nf] = ln + 1
                        nf += 1
                    elif not (self._marks >> 8):
                        self._marks |= ln << 8
                elif b == _STAR and not (self._marks & 0xFF):
                    self._marks |= ln
                line[ln] = b
                ln += 1
                x ^= b
        self._len = ln
        self._x = x
        self._nf = nf

    def flush(self, t_ms=0):
        """End of input: emit the open epoch (if any)."""
        if self._open:
            self._emit()

    # ------------------------------------------------------------------ one sentence
    def _end_line(self, t_ms):
        if self._check() and self._decode():
            self.counters["sentences"] += 1
            self._merge(t_ms)

    def _check(self):
        """Checksum and field split of line[0:_len] (from what feed() or _scan() gathered). True
        when the sentence is intact. The first fault in byte order counts: a comma past _MAXFIELDS
        (malformed) or a '*' before the checksum's (bad_checksum)."""
        line = self._line
        ln = self._len
        c = self.counters
        if ln < 4 or line[ln - 3] != _STAR:
            c["no_checksum"] += 1
            return False
        h = _hexval(line[ln - 2])
        lo = _hexval(line[ln - 1])
        if h < 0 or lo < 0:
            c["bad_checksum"] += 1
            return False
        end = ln - 3
        over = self._marks >> 8
        star = self._marks & 0xFF
        if over and over < end and not (star and star < over):
            c["malformed"] += 1
            return False
        if star and star < end:
            c["bad_checksum"] += 1
            return False
        # x covers line[1:ln]: take the '*' and the two hex digits back out
        if self._x ^ _STAR ^ line[ln - 2] ^ line[ln - 1] != (h << 4) | lo:
            c["bad_checksum"] += 1
            return False
        fs = self._fs
        fs[0] = 1
        fs[self._nf] = end + 1  # sentinel: start of a virtual next field (end + 1)
        self._end = end
        return True

    def _scan(self):
        """What feed() gathers while it stores a line, for a line put into _line whole
        (parse_sentence): XOR, field starts, first '*', comma past _MAXFIELDS."""
        line = self._line
        fs = self._fs
        x = 0
        nf = 1
        star = 0
        over = 0
        for k in range(1, self._len):
            b = line[k]
            x ^= b
            if b == _COMMA:
                if nf < _MAXFIELDS:
                    fs[nf] = k + 1
                    nf += 1
                elif not over:
                    over = k
            elif b == _STAR and not star:
                star = k
        self._x = x
        self._nf = nf
        self._marks = star | (over << 8)

    def _fend(self, i):
        return self._fs[i + 1] - 1

    def _decode(self):
        """Decode the checked sentence into the _s_* scratch. False (and counted) if not used."""
        line = self._line
        c = self.counters
        fs = self._fs
        nf = self._nf
        if fs[1] - 1 != 6 or line[1] == 0x50:  # 'P' proprietary or non 5-char address
            c["unknown"] += 1
            return False
        t0 = line[1]
        t1 = line[2]
        if t0 < 0x41 or t0 > 0x5A or t1 < 0x41 or t1 > 0x5A:
            c["unknown"] += 1
            return False
        key = (line[3] << 16) | (line[4] << 8) | line[5]
        self._s_gn = 1 if (t0 == 0x47 and t1 == 0x4E) else 0
        self._s_tod = -1
        self._s_haspos = 0
        self._s_status = -1
        self._s_quality = -1
        self._s_sats = -1
        self._s_hdop = -1
        self._s_alt = ALT_UNKNOWN
        self._s_speed = -1
        self._s_course = -1
        self._s_mode = -1
        self._s_nav = 0
        self._s_days = -1
        ok = True
        if key == _K_RMC:
            if nf < 10:
                ok = False
            else:
                self._s_kind = T_RMC
                ok = self._time(1) and self._pos(3)
                s = self._char(2)
                if s == 0x41:
                    self._s_status = 1
                elif s == 0x56:
                    self._s_status = 0
                elif s != 0:
                    ok = False
                v = self._fixed(7, 3)
                if v == _BAD:
                    ok = False
                elif v >= 0:
                    self._s_speed = (v * 463 + 450) // 900
                v = self._fixed(8, 2)
                if v == _BAD:
                    ok = False
                elif v >= 0:
                    self._s_course = v
                if not self._date(9):
                    ok = False
                if nf > 12:
                    self._s_mode = self._modeidx(12)
                if nf > 13:
                    self._s_nav = self._char(13)
        elif key == _K_GGA:
            if nf < 10:
                ok = False
            else:
                self._s_kind = T_GGA
                ok = self._time(1) and self._pos(2)
                v = self._fixed(6, 0)
                if v == _BAD or v > 9:
                    ok = False
                self._s_quality = v
                ok = self._sats_hdop_alt() and ok
        elif key == _K_GNS:
            if nf < 10:
                ok = False
            else:
                self._s_kind = T_GNS
                ok = self._time(1) and self._pos(2)
                # mode: one char per constellation; the best one counts
                best = -1
                bq = -1
                for k in range(fs[6], self._fend(6)):
                    mi = _modeof(line[k])
                    if mi < 0:
                        ok = False
                    elif _MODE_QUALITY[mi] > bq or best < 0:
                        best = mi
                        bq = _MODE_QUALITY[mi]
                self._s_mode = best
                ok = self._sats_hdop_alt() and ok
                if nf > 13:
                    self._s_nav = self._char(13)
        elif key == _K_VTG:
            # NMEA 2.x+ VTG only: "c,T,c,M,s,N,s,K[,mode]"
            if nf < 8 or (self._char(2) != 0x54 and self._char(2) != 0):
                ok = False
            else:
                self._s_kind = T_VTG
                v = self._fixed(1, 2)
                if v == _BAD:
                    ok = False
                elif v >= 0:
                    self._s_course = v
                v = self._fixed(5, 3)
                if v == _BAD:
                    ok = False
                elif v >= 0:
                    self._s_speed = (v * 463 + 450) // 900
                else:
                    v = self._fixed(7, 3)  # km/h
                    if v == _BAD:
                        ok = False
                    elif v >= 0:
                        self._s_speed = (v * 5 + 9) // 18
                if nf > 9:
                    self._s_mode = self._modeidx(9)
        elif key == _K_GSA:
            if nf < 17:
                ok = False
            else:
                self._s_kind = T_GSA
                v = self._fixed(16, 1)
                if v == _BAD:
                    ok = False
                self._s_hdop = v
        else:
            c["unknown"] += 1
            return False
        if self._s_mode == _BAD:
            ok = False
        if not ok:
            c["malformed"] += 1
            return False
        return True

    # ------------------------------------------------------------------ field helpers (no allocation)
    def _char(self, i):
        """Single-char field: the byte, 0 when empty, -1 when longer than one char."""
        a = self._fs[i]
        e = self._fs[i + 1] - 1
        if e == a:
            return 0
        if e != a + 1:
            return -1
        return self._line[a]

    def _modeidx(self, i):
        b = self._char(i)
        if b == 0:
            return -1
        if b < 0:
            return _BAD
        mi = _modeof(b)
        return mi if mi >= 0 else _BAD

    def _fixed(self, i, nd):
        """Unsigned decimal field as int scaled by 10**nd (rounded half up); _EMPTY / _BAD."""
        line = self._line
        a = self._fs[i]
        e = self._fs[i + 1] - 1
        if a >= e:
            return _EMPTY
        v = 0
        frac = -1  # digits after the point, -1 before the point
        rnd = 0
        nd_seen = 0
        for k in range(a, e):
            b = line[k]
            if b == 0x2E:
                if frac >= 0:
                    return _BAD
                frac = 0
            elif 0x30 <= b <= 0x39:
                if frac < 0:
                    v = v * 10 + b - 0x30
                    nd_seen += 1
                    if v > 100000000:
                        return _BAD
                elif frac < nd:
                    v = v * 10 + b - 0x30
                    frac += 1
                    nd_seen += 1
                elif frac == nd:
                    rnd = 1 if b >= 0x35 else 0
                    frac += 1
            else:
                return _BAD
        if nd_seen == 0:
            return _BAD
        if frac < 0:
            frac = 0
        elif frac > nd:
            frac = nd
        while frac < nd:
            v *= 10
            frac += 1
        return v + rnd

    def _sats_hdop_alt(self):
        """Fields 7-9 shared by GGA and GNS: satellites, HDOP (x10), altitude. False if one is malformed."""
        ok = True
        v = self._fixed(7, 0)
        if v == _BAD:
            ok = False
        self._s_sats = v
        v = self._fixed(8, 1)
        if v == _BAD:
            ok = False
        self._s_hdop = v
        self._s_alt = self._alt(9)
        return ok

    def _alt(self, i):
        a = self._fs[i]
        e = self._fs[i + 1] - 1
        if a >= e:
            return ALT_UNKNOWN
        neg = self._line[a] == 0x2D
        if neg:
            self._fs[i] = a + 1
        v = self._fixed(i, 1)
        self._fs[i] = a
        if v < 0:
            return ALT_UNKNOWN
        return -v if neg else v

    def _time(self, i):
        """hhmmss[.sss] -> self._s_tod (ms of day, -1 empty). False when malformed."""
        line = self._line
        a = self._fs[i]
        e = self._fs[i + 1] - 1
        if a == e:
            self._s_tod = -1
            return True
        if e - a < 6:
            return False
        v = 0
        for k in range(a, a + 6):
            b = line[k] - 0x30
            if b < 0 or b > 9:
                return False
            v = v * 10 + b
        hh = v // 10000
        mm = (v // 100) % 100
        ss = v % 100
        if hh > 23 or mm > 59 or ss > 60:
            return False
        ms = 0
        if e > a + 6:
            if line[a + 6] != 0x2E:
                return False
            mul = 100
            for k in range(a + 7, e):
                b = line[k] - 0x30
                if b < 0 or b > 9:
                    return False
                ms += b * mul
                mul //= 10
        if ss == 60:  # leap second: fold into :59.999
            ss = 59
            ms = 999
        self._s_tod = ((hh * 60 + mm) * 60 + ss) * 1000 + ms
        return True

    def _date(self, i):
        """ddmmyy -> self._s_days (days since 2000-01-01; -1 empty; -2 not a date or before min_year)."""
        line = self._line
        a = self._fs[i]
        e = self._fs[i + 1] - 1
        if a == e:
            return True
        if e - a != 6:
            return False
        v = 0
        for k in range(a, e):
            b = line[k] - 0x30
            if b < 0 or b > 9:
                return False
            v = v * 10 + b
        d = v // 10000
        m = (v // 100) % 100
        y = v % 100
        if m < 1 or m > 12 or d < 1:
            return False
        md = _MDAYS[m - 1]
        if m == 2 and (y & 3) == 0:
            md = 29
        if d > md:
            return False
        if y >= 80:  # 1980..1999: receiver default / rollover garbage
            self._s_days = -2
            return True
        days = days_from_civil(2000 + y, m, d)
        self._s_days = days if days >= self._min_days else -2
        return True

    def _pos(self, i):
        """lat (i), N/S (i+1), lon (i+2), E/W (i+3). Sets _s_lat/_s_lon/_s_haspos. False if malformed."""
        la = self._angle(i, 2)
        lo = self._angle(i + 2, 3)
        if la == _EMPTY and lo == _EMPTY:
            return True
        if la < 0 or lo < 0 or la > 900000000 or lo > 1800000000:
            return False
        h1 = self._char(i + 1)
        h2 = self._char(i + 3)
        if h1 == 0x53:
            la = -la
        elif h1 != 0x4E:
            return False
        if h2 == 0x57:
            lo = -lo
        elif h2 != 0x45:
            return False
        self._s_lat = la
        self._s_lon = lo
        self._s_haspos = 1
        return True

    def _angle(self, i, ndeg):
        """[d]ddmm.mmmm... -> 1e-7 degrees exactly (integers: minutes kept to 1e-7 min, rounded)."""
        line = self._line
        a = self._fs[i]
        e = self._fs[i + 1] - 1
        if a >= e:
            return _EMPTY
        # find the decimal point (or end)
        p = a
        while p < e and line[p] != 0x2E:
            p += 1
        if p - a < 3 or p - a > ndeg + 2:
            return _BAD
        deg = 0
        for k in range(a, p - 2):
            b = line[k] - 0x30
            if b < 0 or b > 9:
                return _BAD
            deg = deg * 10 + b
        m7 = 0
        for k in range(p - 2, p):
            b = line[k] - 0x30
            if b < 0 or b > 9:
                return _BAD
            m7 = m7 * 10 + b
        if m7 >= 60:
            return _BAD
        nfr = 0
        for k in range(p + 1, e):
            b = line[k] - 0x30
            if b < 0 or b > 9:
                return _BAD
            if nfr < 7:
                m7 = m7 * 10 + b
                nfr += 1
        while nfr < 7:
            m7 *= 10
            nfr += 1
        # m7: minutes in 1e-7 minute; 1e-7 deg = m7 / 60
        return deg * 10000000 + (m7 + 30) // 60

    # ------------------------------------------------------------------ epoch assembly
    def _merge(self, t_ms):
        kind = self._s_kind
        if kind == T_VTG or kind == T_GSA:
            if not self._open:
                self.counters["orphan"] += 1
                return
            self._apply(kind)
            if self._complete():
                self._emit()
            return
        tod = self._s_tod
        if self._open:
            if tod != self._e_tod or (tod < 0 and (self._seen & kind)):
                self._emit()
        if not self._open:
            if tod >= 0 and tod == self._done_tod:
                self.counters["late"] += 1
                return
            self._start(t_ms, tod)
        self._apply(kind)
        if self._complete():
            self._emit()

    def _start(self, t_ms, tod):
        self.fix.clear()
        self.fix.t_ms = t_ms
        self._open = 1
        self._seen = 0
        self._e_tod = tod
        self._e_gn_pos = -1
        self._e_status = -1
        self._e_mode = -1
        self._e_nav = 0
        self._e_days = -1
        self._e_gn_kinds = 0
        self._done_tod = -2

    def _apply(self, kind):
        f = self.fix
        self._seen |= kind
        if self._s_haspos and (self._e_gn_pos < 0 or (self._s_gn and not self._e_gn_pos)):
            f.lat_e7 = self._s_lat
            f.lon_e7 = self._s_lon
            self._e_gn_pos = self._s_gn
        if self._s_speed >= 0 and (f.speed_mmps < 0 or kind == T_RMC):
            f.speed_mmps = self._s_speed
        if self._s_course >= 0 and (f.course_cdeg < 0 or kind == T_RMC):
            f.course_cdeg = self._s_course
        if self._s_gn:
            self._e_gn_kinds |= kind
        if kind == T_RMC:
            if self._e_status < 1:
                self._e_status = self._s_status
            if self._s_days != -1:
                self._e_days = self._s_days
            if self._s_nav:
                self._e_nav = self._s_nav
        if self._s_mode >= 0 and (self._e_mode < 0 or kind == T_RMC):
            self._e_mode = self._s_mode
        if kind == T_GGA or kind == T_GNS:
            if self._s_quality >= 0 and (f.quality <= 0 or self._s_gn):
                f.quality = self._s_quality
            if self._s_sats >= 0 and (f.sats < 0 or self._s_gn):
                f.sats = self._s_sats
            if self._s_hdop >= 0 and (f.hdop_x10 < 0 or self._s_gn or (self._seen & T_GSA)):
                f.hdop_x10 = self._s_hdop
            if self._s_alt != ALT_UNKNOWN and (f.alt_dm == ALT_UNKNOWN or self._s_gn):
                f.alt_dm = self._s_alt
            if kind == T_GNS and not (self._seen & T_GGA) and self._s_mode >= 0:
                f.quality = _MODE_QUALITY[self._s_mode]
        elif kind == T_GSA:
            if self._s_hdop >= 0 and f.hdop_x10 < 0:
                f.hdop_x10 = self._s_hdop

    def _complete(self):
        s = self._seen
        if not (s & T_RMC) or not (s & (T_GGA | T_GNS)):
            return False
        g = self._e_gn_kinds
        if (g & T_RMC) and not (g & (T_GGA | T_GNS)):
            return False  # GN RMC: wait for the GN GGA/GNS (receivers send GPGGA and GNGGA)
        return self.fix.speed_mmps >= 0 or self._e_status == 0

    def _emit(self):
        f = self.fix
        c = self.counters
        self._open = 0
        s = self._seen
        tod = self._e_tod
        # validity
        if s & T_RMC:
            valid = 1 if self._e_status == 1 else 0
        else:
            valid = 1 if f.quality > 0 else 0
        if self._e_mode >= 0:
            f.mode = _MODE_STRS[self._e_mode]
            if self._e_mode == 5:  # 'N'
                valid = 0
        if not (s & (T_GGA | T_GNS)):
            f.quality = _MODE_QUALITY[self._e_mode] if self._e_mode >= 0 else valid
        if self._e_gn_pos < 0:
            valid = 0
        f.valid = valid
        # time line
        self._timeline(tod)
        self._done_tod = tod if (tod >= 0 and self._complete()) else -2
        c["fixes"] += 1
        if self.on_fix is not None:
            self.on_fix(f)

    def _timeline(self, tod):
        f = self.fix
        c = self.counters
        if tod < 0:
            f.utc_s = -1
            f.utc_ms = 0
            return
        f.utc_ms = tod % 1000
        d = self._e_days
        if d == -2:
            c["date_invalid"] += 1
            d = -1
        if d >= 0 and self._days >= 0 and (d - self._days > 1 or d < self._days):
            # a date that jumps: adopt only when it persists for 3 epochs
            if d == self._cand_days:
                self._cand_n += 1
            else:
                self._cand_days = d
                self._cand_n = 1
                c["date_jump"] += 1
            if self._cand_n >= 3:
                self._days = d
                self._cand_days = -1
                self._cand_n = 0
                c["restarts"] += 1
            else:
                d = -2
        elif d >= 0:
            self._days = d
            self._cand_days = -1
            self._cand_n = 0
        elif self._days >= 0 and self._last_tod >= 0 and tod < self._last_tod - 43200000:
            self._days += 1  # midnight passed in a date-less epoch
        if d == -2:
            f.utc_s = -1
        elif self._days >= 0:
            f.utc_s = self._days * 86400 + tod // 1000
        else:
            f.utc_s = -1
        # time going backwards (same day, or vs the last known utc)
        if self._last_tod >= 0:
            if f.utc_s >= 0 and self._last_utc >= 0:
                back = (f.utc_s * 1000 + f.utc_ms) < self._last_utc
            else:
                dt = tod - self._last_tod
                back = dt < 0 and dt > -43200000
            if back:
                c["time_backwards"] += 1
                if f.utc_s >= 0 and self._last_utc >= 0:
                    big = self._last_utc - (f.utc_s * 1000 + f.utc_ms) > 2000
                else:
                    big = self._last_tod - tod > 2000
                if big:
                    c["restarts"] += 1
        self._last_tod = tod
        if f.utc_s >= 0:
            self._last_utc = f.utc_s * 1000 + f.utc_ms

    # ------------------------------------------------------------------ test / tooling hook
    def parse_sentence(self, sentence):
        """Decode one complete sentence (bytes, with or without CR/LF) without touching epoch state.
        Returns a dict of decoded fields, or None when the sentence is rejected. Allocates: tests only."""
        s = bytes(sentence).rstrip(b"\r\n")
        if len(s) > _MAXLINE or len(s) < 1 or s[0] != _DOLLAR:
            return None
        for k in range(1, len(s)):
            b = s[k]
            if b < 0x20 or b > 0x7E or b == _DOLLAR:
                return None
        self._line[0 : len(s)] = s
        self._len = len(s)
        self._scan()
        ok = self._check() and self._decode()
        self._len = 0
        if not ok:
            return None
        kinds = {T_RMC: "RMC", T_GGA: "GGA", T_GNS: "GNS", T_VTG: "VTG", T_GSA: "GSA"}
        d = {
            "type": kinds[self._s_kind],
            "talker": s[1:3].decode(),
            "tod_ms": self._s_tod,
            "lat_e7": self._s_lat if self._s_haspos else None,
            "lon_e7": self._s_lon if self._s_haspos else None,
            "speed_mmps": self._s_speed,
            "course_cdeg": self._s_course,
            "status": self._s_status,
            "quality": self._s_quality,
            "sats": self._s_sats,
            "hdop_x10": self._s_hdop,
            "alt_dm": self._s_alt,
            "days": self._s_days,
            "mode": _MODE_STRS[self._s_mode] if self._s_mode >= 0 else None,
        }
        return d


def _modeof(b):
    for k in range(9):
        if _MODE_CHARS[k] == b:
            return k
    return -1


def _hexval(b):
    if 0x30 <= b <= 0x39:
        return b - 0x30
    if 0x41 <= b <= 0x46:
        return b - 0x37
    if 0x61 <= b <= 0x66:
        return b - 0x57
    return -1


_default = None


def parse_sentence(sentence):
    """Module-level per-sentence decode hook (see NMEAParser.parse_sentence)."""
    global _default
    if _default is None:
        _default = NMEAParser()
    return _default.parse_sentence(sentence)
