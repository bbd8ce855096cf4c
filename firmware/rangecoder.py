# Adaptive binary range coder (LZMA-style), the generic half of the record codec (firmware/codec.py
# holds what the bits mean; docs/record-format.md the format). Pure: bytes in, bytes out.
#
# Integers only and every intermediate < 2**29, so MicroPython on a 32-bit board keeps them small ints
# (no heap allocation). Probabilities: 12-bit estimate p0 = P(bit == 0) * 4096 per model, updated by
# p0 += (4096 - p0) >> 4 after a 0, p0 -= p0 >> 4 after a 1 (stays within 15..4081).
# Window: low < 2**28, range in [2**20, 2**28]; a byte leaves from bits 27..20 when range < 2**20.
# Models: an integer context c owns models c * NINT .. c * NINT + NINT - 1 (uint(c, u)); a coder's user
# numbers its other (flag) models after its integer contexts.
from hw.compat import const, zeros

# Integers only and every intermediate < 2**29, so MicroPython on a 32-bit board keeps them small ints
# (no heap allocation). Probabilities: 12-bit estimate p0 = P(bit == 0) * 4096 per model, updated by
# p0 += (4096 - p0) >> 4 after a 0, p0 -= p0 >> 4 after a 1 (stays within 15..4081).
# Window: low < 2**28, range in [2**20, 2**28]; a byte leaves from bits 27..20 when range < 2**20.
_RTOP = const(1 << 28)
_RBOT = const(1 << 20)
_RMASK = const(_RBOT - 1)
_NPRE = const(20)  # unary bit-length models per integer context; lengths >= 19 share the last
NINT = const(2 * _NPRE)  # per integer context: bit-length prefix models + first-mantissa-bit models


class CodecError(Exception):
    """Damaged or unsupported block. .offset is the byte offset of the damage (or -1).
    (firmware.codec's error: defined here, where the decoder first meets damage.)"""

    def __init__(self, msg, offset=-1):
        super().__init__("%s at byte offset %d" % (msg, offset) if offset >= 0 else msg)
        self.offset = offset


def init_int_models(p, k0):
    """Priors of the integer contexts from their typical residual bit length k0[c] (a hint only: the
    models adapt within a few records)."""
    for c in range(len(k0)):
        k = k0[c]
        b = c * NINT
        for i in range(_NPRE):
            p[b + i] = 300 if i < k else (1300 if i == k else (2600 if i == k + 1 else 3300))
            p[b + _NPRE + i] = 2048


class RangeEncoder:
    """Codes into a buffer of nbytes bytes with nmodels adaptive models; init(p) sets their priors
    (at every reset()). A stream longer than the buffer sets .over (its record is rolled back)."""

    def __init__(self, nbytes, nmodels, init):
        self.buf = bytearray(nbytes)
        self.p = zeros("H", nmodels)
        self._init = init
        self.reset()
        self.mark()

    def reset(self):
        self.n = 0  # bytes out
        self.low = 0
        self.range = _RTOP
        self.over = False
        self._init(self.p)

    def _carry(self):
        self.low -= _RTOP
        buf = self.buf
        i = self.n - 1
        if i >= len(buf):
            return  # overflowed: this record is rolled back anyway
        while buf[i] == 0xFF:
            buf[i] = 0
            i -= 1
        buf[i] += 1

    def _shift(self):
        while self.range < _RBOT:
            n = self.n
            if n < len(self.buf):
                self.buf[n] = self.low >> 20
            else:
                self.over = True
            self.n = n + 1
            self.low = (self.low & _RMASK) << 8
            self.range <<= 8

    def bit(self, i, b):
        p = self.p
        p0 = p[i]
        r = self.range
        bound = (r >> 12) * p0
        if b:
            low = self.low + bound
            self.low = low
            r -= bound
            self.range = r
            p[i] = p0 - (p0 >> 4)
            if low >= _RTOP:
                self._carry()
        else:
            r = bound
            self.range = r
            p[i] = p0 + ((4096 - p0) >> 4)
        if r < _RBOT:
            self._shift()

    def raw(self, v, k):
        # k equiprobable bits of v, MSB first, at most 8 at a time
        while k > 0:
            take = 8 if k > 8 else k
            k -= take
            r = self.range >> take
            self.low += ((v >> k) & ((1 << take) - 1)) * r
            self.range = r
            if self.low >= _RTOP:
                self._carry()
            if r < _RBOT:
                self._shift()

    def uint(self, c, u):
        # u >= 0 in integer context c: bit length n in unary (adaptive), the bit below the leading one
        # (adaptive, per n), the other n - 2 bits raw. The adaptive bits are bit() written out with
        # range and low in locals.
        n = 0
        x = u
        while x:
            x >>= 1
            n += 1
        p = self.p
        b = c * NINT
        last = b + _NPRE - 1
        r = self.range
        low = self.low
        for k in range(n + 1):  # n ones, then the closing zero
            i = b + k if k < _NPRE - 1 else last
            p0 = p[i]
            bound = (r >> 12) * p0
            if k < n:
                low += bound
                r -= bound
                p[i] = p0 - (p0 >> 4)
                if low >= _RTOP:
                    self.low = low
                    self._carry()
                    low = self.low
            else:
                r = bound
                p[i] = p0 + ((4096 - p0) >> 4)
            if r < _RBOT:
                self.low = low
                self.range = r
                self._shift()
                low = self.low
                r = self.range
        self.low = low
        self.range = r
        if n >= 2:
            self.bit(b + _NPRE + (n if n < _NPRE else _NPRE - 1), (u >> (n - 2)) & 1)
            if n > 2:
                self.raw(u, n - 2)

    def mark(self):
        """Remember the state to roll the current record back to (one at a time, nothing allocated).
        A later carry can change only the last byte before a run of 0xFF bytes and turn the run to
        zeros, so that byte and where it stands are all there is to save."""
        i = self.n - 1
        buf = self.buf
        if i >= len(buf):
            i = len(buf) - 1
        while i >= 0 and buf[i] == 0xFF:
            i -= 1
        if i < 0:
            i = 0
        self._mk_n = self.n
        self._mk_low = self.low
        self._mk_range = self.range
        self._mk_i = i
        self._mk_b = buf[i]

    def rollback(self):
        """Back to the state of the last mark()."""
        buf = self.buf
        i = self._mk_i
        buf[i] = self._mk_b
        for j in range(i + 1, min(self._mk_n, len(buf))):
            buf[j] = 0xFF
        self.n = self._mk_n
        self.low = self._mk_low
        self.range = self._mk_range
        self.over = False

    def size(self):
        # bytes of the stream if finished now (the flush adds one byte at most)
        return self.n + 1

    def finish(self):
        """The record stream: flush the one byte that fixes a value in [low, low + range), then drop
        trailing zero bytes (a decoder reads zeros past the end)."""
        v = (self.low + _RMASK) & ~_RMASK
        if v >= _RTOP:
            self.low = v
            self._carry()
            v = self.low
        n = self.n
        self.buf[n] = v >> 20
        n += 1
        while n > 0 and self.buf[n - 1] == 0:
            n -= 1
        return memoryview(self.buf)[:n]


class RangeDecoder:
    """Reads the stream data[start:end] (zeros past its end) with nmodels models whose priors init(p) sets."""

    def __init__(self, data, start, end, nmodels, init):
        self.data = data
        self.start = start
        self.end = end
        self.k = start + 3  # the next byte comes from bits 4..7 of data[k] and 0..3 of data[k + 1]
        self.p = zeros("H", nmodels)
        init(self.p)
        self.range = _RTOP
        c = 0
        for j in range(4):
            c = (c << 8) | self._byte(start + j)
        self.code = c >> 4

    def _byte(self, i):
        return self.data[i] if i < self.end else 0

    def _shift(self):
        while self.range < _RBOT:
            k = self.k
            self.code = (((self.code << 8) & (_RTOP - 1)) | ((self._byte(k) & 15) << 4)
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
        if self.range < _RBOT:
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
            if r < _RBOT:
                self._shift()
        return v

    def uint(self, c):
        b = c * NINT
        last = b + _NPRE - 1
        n = 0
        while self.bit(b + n if n < _NPRE - 1 else last):
            n += 1
            if n > 63:
                raise CodecError("record data damaged (integer too long)", self.pos())
        if n < 2:
            return n
        u = 2 | self.bit(b + _NPRE + (n if n < _NPRE else _NPRE - 1))
        if n > 2:
            u = (u << (n - 2)) | self.raw(n - 2)
        return u
