# Adaptive binary range coder (LZMA-style), the generic half of the record codec (firmware/codec.py
# holds what the bits mean; docs/record-format.md the format). Pure: bytes in, bytes out. The box only
# encodes: the decoder (RangeDecoder) is host side, in firmware/decoder.py, not in the box's image.
#
# Integers only and every intermediate < 2**29, so MicroPython on a 32-bit board keeps them small ints
# (no heap allocation). Probabilities: 12-bit estimate p0 = P(bit == 0) * 4096 per model, updated by
# p0 += (4096 - p0) >> 4 after a 0, p0 -= p0 >> 4 after a 1 (stays within 15..4081).
# Window: low < 2**28, range in [2**20, 2**28]; a byte leaves from bits 27..20 when range < 2**20.
# Models: an integer context c owns models c * NINT .. c * NINT + NINT - 1 (uint(c, u)); a coder's user
# numbers its other (flag) models after its integer contexts.
from hw.compat import const, zeros

RTOP = const(1 << 28)
RBOT = const(1 << 20)  # (RTOP, RBOT, NPRE, NINT: public for firmware/decoder.py)
_RMASK = const(RBOT - 1)
NPRE = const(20)  # unary bit-length models per integer context; lengths >= 19 share the last
# per integer context: NPRE bit-length prefix models, then the models of the bit below the leading one,
# one per bit length 2 .. NPRE - 1 (lengths >= NPRE - 1 share the last; lengths 0 and 1 have no such bit):
# the model of length n is c * NINT + NPRE - 2 + min(n, NPRE - 1)
NINT = const(2 * NPRE - 2)


def init_int_models(p, k0):
    """Priors of the integer contexts from their typical residual bit length k0[c] (a hint only: the
    models adapt within a few records)."""
    for c in range(len(k0)):
        k = k0[c]
        b = c * NINT
        for i in range(NPRE):
            p[b + i] = 300 if i < k else (1300 if i == k else (2600 if i == k + 1 else 3300))
        for i in range(b + NPRE, b + NINT):
            p[i] = 2048


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
        self.range = RTOP
        self.over = False
        self._init(self.p)

    def _carry(self):
        self.low -= RTOP
        buf = self.buf
        i = self.n - 1
        if i >= len(buf):
            return  # overflowed: this record is rolled back anyway
        while buf[i] == 0xFF:
            buf[i] = 0
            i -= 1
        buf[i] += 1

    def _shift(self):
        while self.range < RBOT:
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
            if low >= RTOP:
                self._carry()
        else:
            r = bound
            self.range = r
            p[i] = p0 + ((4096 - p0) >> 4)
        if r < RBOT:
            self._shift()

    def raw(self, v, k):
        # k equiprobable bits of v, MSB first, at most 8 at a time
        while k > 0:
            take = 8 if k > 8 else k
            k -= take
            r = self.range >> take
            self.low += ((v >> k) & ((1 << take) - 1)) * r
            self.range = r
            if self.low >= RTOP:
                self._carry()
            if r < RBOT:
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
        last = b + NPRE - 1
        r = self.range
        low = self.low
        for k in range(n + 1):  # n ones, then the closing zero
            i = b + k if k < NPRE - 1 else last
            p0 = p[i]
            bound = (r >> 12) * p0
            if k < n:
                low += bound
                r -= bound
                p[i] = p0 - (p0 >> 4)
                if low >= RTOP:
                    self.low = low
                    self._carry()
                    low = self.low
            else:
                r = bound
                p[i] = p0 + ((4096 - p0) >> 4)
            if r < RBOT:
                self.low = low
                self.range = r
                self._shift()
                low = self.low
                r = self.range
        self.low = low
        self.range = r
        if n >= 2:
            self.bit(b + NPRE - 2 + (n if n < NPRE else NPRE - 1), (u >> (n - 2)) & 1)
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
        if v >= RTOP:
            self.low = v
            self._carry()
            v = self.low
        n = self.n
        self.buf[n] = v >> 20
        n += 1
        while n > 0 and self.buf[n - 1] == 0:
            n -= 1
        return memoryview(self.buf)[:n]
