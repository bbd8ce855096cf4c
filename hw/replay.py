# Replay backend: serves a recorded trace (docs/trace-format.md) through the hardware contract.
# Runs unchanged on MicroPython (unix VM) and CPython. Only json, binascii, array, errno and, for gzip,
# deflate (MicroPython) / gzip (CPython). The trace is read line by line, never whole.
#
#   s = ReplaySession("drive.jsonl.gz", chunk_seed=1)
#   s.clock       VirtualClock (ms since trace start)
#   s.gnss_uart   ReplayUART: any(), read(n), readinto(buf[, n]), write(b)  (machine.UART semantics:
#                 read/readinto return None when nothing is available)
#   s.i2c         LIS3DHModel: readfrom_mem_into, readfrom_mem, writeto_mem (register-level LIS3DH)
#   s.power       ReplayPower: ignition() 0/1, supply_mv(); `recorded` 0 when the trace has no power
#                 stream (then ignition() reads 1 and supply_mv() the header's nominal_mv or 12600)
#   s.advance(t_ms); s.done; s.header; s.duration_ms
import errno
from array import array

from hw.compat import IS_MICROPYTHON, VirtualClock, const, zeros
from hw.trace_format import (  # noqa: F401  (FORMAT, VERSION, TraceError: part of the replay API)
    FORMAT,
    VERSION,
    LineReader,
    TraceError,
    gnss_bytes,
    open_trace,
    parse_header,
    parse_line,
)

_WHO_AM_I = const(0x0F)
_CTRL_REG1 = const(0x20)
_CTRL_REG4 = const(0x23)
_CTRL_REG5 = const(0x24)
_STATUS_REG = const(0x27)
_OUT_X_L = const(0x28)
_OUT_Z_H = const(0x2D)
_FIFO_CTRL_REG = const(0x2E)
_FIFO_SRC_REG = const(0x2F)
_CTRL_REG3 = const(0x22)
_INT1_CFG = const(0x30)
_INT1_SRC = const(0x31)
_INT1_THS = const(0x32)
_INT1_DURATION = const(0x33)
_DEPTH = const(32)
_THS_MG = (16, 32, 62, 186)  # INT1_THS LSB by full scale (LIS3DH datasheet)

_ODR_HZ = (0, 1, 10, 25, 50, 100, 200, 400, 1600, 1344)
_SENS_HR = (1, 2, 4, 12)
_SENS_NORMAL = (4, 8, 16, 48)
_SENS_LP = (16, 32, 64, 192)


def _flat_samples(mg, lineno):
    """An accel line's samples [[x, y, z], ...] (mg) -> array('h') (or 'i' past 16 bits) x, y, z
    interleaved, made as soon as the line is parsed: 6 bytes per sample instead of a list (~64 bytes
    each, in the MicroPython VM's 32-byte blocks), so a 1 s line waiting to be played does not hold
    6 KB of small blocks spread among the firmware's (`paydbox replay --board-heap`)."""
    if not isinstance(mg, list):
        raise TraceError("trace line %d: field 'mg' is not a list" % lineno)
    small = True  # every value fits 16 bits (the LIS3DH's +-16 g is +-16000 mg): half the block
    for smp in mg:
        if not isinstance(smp, list) or len(smp) != 3:
            raise TraceError("trace line %d: field 'mg' has a sample that is not [x, y, z]" % lineno)
        for v in smp:
            if not -32768 <= v <= 32767:
                small = False
    out = zeros("h" if small else "i", 3 * len(mg))
    k = 0
    for smp in mg:
        out[k] = smp[0]
        out[k + 1] = smp[1]
        out[k + 2] = smp[2]
        k += 3
    return out


def _garble(chunk):
    """What a UART at the wrong baud rate makes of bytes: a deterministic scramble, no line structure."""
    out = bytearray(len(chunk))
    for i in range(len(chunk)):
        out[i] = (chunk[i] * 167 + 91) & 0xFF
    return out


class ReplayUART:
    """GNSS UART: bytes of a trace line become available at their time plus their time on the wire
    (10 bits per byte at `baudrate`), never faster, in pseudo-random chunks (deterministic for the
    seed; a chunk is available when its last byte is in). The RX ring buffer holds `rxbuf` bytes;
    bytes arriving when it is full are dropped and counted in `overflows`, as on a real UART."""

    def __init__(self, clock, baudrate=9600, seed=1, rxbuf=4096, max_chunk=48):
        if baudrate <= 0:
            raise ValueError("baudrate: %r must be > 0" % (baudrate,))
        self.baudrate = baudrate
        self._clock = clock
        self._rng = (seed % 2147483646) + 1
        self._max_chunk = max_chunk
        self._wire_bits = 0  # wire cursor in bit times (1/baud s)
        self._pend = []  # [avail_ms, bytes] chunks in order
        self._ph = 0
        self.due_ms = -1  # availability time of the next pending chunk (-1 none)
        self._ring = bytearray(rxbuf)
        self._size = rxbuf
        self._head = 0  # write index
        self._tail = 0  # read index
        self._n = 0
        self.overflows = 0
        self.rx_bytes = 0  # bytes delivered into the ring
        self.tx_bytes = 0
        self.tx = bytearray()  # what the firmware wrote (first 4096 bytes)
        self.rx_baud = baudrate  # the receiving side's rate (init(baudrate=))

    def init(self, baudrate=None, **_kw):
        """machine.UART.init: the box's receive baud rate. Bytes sent at the trace's rate but
        sampled at another arrive as garbage (framing errors), as on a real UART."""
        if baudrate is not None:
            if baudrate <= 0:
                raise ValueError("baudrate: %r must be > 0" % (baudrate,))
            self.rx_baud = baudrate

    def _rand_chunk(self):
        self._rng = self._rng * 48271 % 2147483647
        return 1 + self._rng % self._max_chunk

    def _queue(self, t_ms, data):
        baud = self.baudrate
        start = (t_ms * baud + 999) // 1000
        if start < self._wire_bits:
            start = self._wire_bits
        n = len(data)
        pos = 0
        pend = self._pend
        while pos < n:
            c = self._rand_chunk()
            if c > n - pos:
                c = n - pos
            end_bits = start + 10 * (pos + c)
            pend.append([(end_bits * 1000 + baud - 1) // baud, data[pos : pos + c]])
            pos += c
        self._wire_bits = start + 10 * n
        if self.due_ms < 0 and self._ph < len(pend):
            self.due_ms = pend[self._ph][0]

    def _deliver(self, now):
        pend = self._pend
        ph = self._ph
        np_ = len(pend)
        size = self._size
        while ph < np_ and pend[ph][0] <= now:
            chunk = pend[ph][1]
            ph += 1
            if self.rx_baud != self.baudrate:
                chunk = _garble(chunk)
            k = len(chunk)
            self.rx_bytes += k
            free = size - self._n
            if k > free:
                self.overflows += k - free
                k = free
            if k == 0:
                continue
            h = self._head
            first = size - h
            if first >= k:
                self._ring[h : h + k] = chunk[:k]
            else:
                self._ring[h:size] = chunk[:first]
                self._ring[0 : k - first] = chunk[first:k]
            self._head = (h + k) % size
            self._n += k
        if ph:  # drop delivered chunks at once (bounded heap on MicroPython)
            del pend[:ph]
            ph = 0
            np_ = len(pend)
        self._ph = ph
        self.due_ms = pend[ph][0] if ph < np_ else -1

    def pending(self):
        """Bytes queued on the wire, not yet available."""
        return len(self._pend) - self._ph

    def any(self):
        if 0 <= self.due_ms <= self._clock.now:
            self._deliver(self._clock.now)
        return self._n

    def readinto(self, buf, n=-1):
        if 0 <= self.due_ms <= self._clock.now:
            self._deliver(self._clock.now)
        k = len(buf) if n < 0 or n > len(buf) else n
        if k > self._n:
            k = self._n
        if k == 0:
            return None
        ring = self._ring
        t = self._tail
        size = self._size
        if IS_MICROPYTHON:  # no slices: they allocate; readinto stays allocation-free
            for i in range(k):
                buf[i] = ring[t]
                t += 1
                if t == size:
                    t = 0
        else:
            first = size - t
            if first >= k:
                buf[0:k] = ring[t : t + k]
            else:
                buf[0:first] = ring[t:size]
                buf[first:k] = ring[0 : k - first]
            t = (t + k) % size
        self._tail = t
        self._n -= k
        return k

    def read(self, n=-1):
        if 0 <= self.due_ms <= self._clock.now:
            self._deliver(self._clock.now)
        k = self._n if n < 0 or n > self._n else n
        if k == 0:
            return None
        buf = bytearray(k)
        self.readinto(buf, k)
        return bytes(buf)

    def write(self, b):
        n = len(b)
        self.tx_bytes += n
        room = 4096 - len(self.tx)
        if room > 0:
            self.tx.extend(b[:room])
        return n


class LIS3DHModel:
    """Register-level model of an ST LIS3DH on I2C at `address` (absent: every access raises
    OSError ENODEV, like a NACK). Trace samples (mg) enter the 32-level FIFO at their times, resampled
    to the configured ODR (an accumulator keeps or repeats samples when the ODR differs from the trace
    rate), converted to left-justified raw counts for the configured range and resolution with
    saturation. Stream mode: a full FIFO drops the oldest sample (`dropped`), OVRN stays set while full.
    FIFO mode: a full FIFO stops collecting. Bypass: OUT_* show the latest sample, the FIFO is empty.
    FIFO_SRC: WTM when the count exceeds FTH, OVRN when 32 samples are held (FSS then reads 31),
    EMPTY when none. Reading OUT_Z_H with the FIFO enabled pops one sample; auto-increment (bit 7 of
    the sub-address) rolls from OUT_Z_H back to OUT_X_L in FIFO mode, so a burst reads n samples."""

    def __init__(self, clock, present=True, address=0x18):
        self._clock = clock
        self.present = 1 if present else 0
        self.address = address
        self.regs = bytearray(0x40)
        self.regs[_WHO_AM_I] = 0x33
        self.regs[_CTRL_REG1] = 0x07
        self._fifo = array("h", [0] * (3 * _DEPTH))
        self._fh = 0  # index (sample) of the oldest
        self._fn = 0  # samples held
        self._out = array("h", [0, 0, 0])  # output registers when not popping from the FIFO
        self.dropped = 0
        self.samples_in = 0
        self._pend = []  # [t0_ms, rate_hz, samples, next_index]
        self._ph = 0
        self.due_ms = -1
        self._acc = 0
        self._bits = 10
        self._sens = 16
        self._fs_max = 511
        self._odr = 0
        self.int1 = 0  # INT1 pin level (interrupt generator 1 routed to it)
        self.activities = 0  # accel_int lines that fired INT1
        self._update_mode()

    def activity(self, peak_mg, dur_ms):
        """An `accel_int` trace line: high-pass filtered acceleration peaking at peak_mg, above the
        trace's floor for dur_ms. Fires INT1 when generator 1 is armed (CTRL_REG3 I1_IA1, INT1_CFG
        high events, ODR not power-down) and the peak is above INT1_THS for at least INT1_DURATION."""
        r = self.regs
        if not (r[_CTRL_REG3] & 0x40) or not (r[_INT1_CFG] & 0x2A) or self._odr == 0:
            return
        ths = r[_INT1_THS] * _THS_MG[(r[_CTRL_REG4] >> 4) & 3]
        if peak_mg > ths and dur_ms * self._odr >= (r[_INT1_DURATION] & 0x7F) * 1000:
            self.int1 = 1
            self.activities += 1

    # -- trace side ------------------------------------------------------------------------------
    def _queue(self, t_ms, rate, samples):
        # samples: array of x, y, z (mg) interleaved (_flat_samples)
        self._pend.append([t_ms, rate, samples, 0])
        if self.due_ms < 0:
            self._set_due()

    def _set_due(self):
        pend = self._pend
        if self._ph < len(pend):
            c = pend[self._ph]
            self.due_ms = c[0] + c[3] * 1000 // c[1]
        else:
            self.due_ms = -1

    def pending(self):
        return len(self._pend) - self._ph

    def _deliver(self, now):
        pend = self._pend
        np_ = len(pend)
        ph = self._ph
        while ph < np_:
            c = pend[ph]
            t0 = c[0]
            rate = c[1]
            samples = c[2]
            i = c[3]
            ns = len(samples) // 3
            while i < ns and t0 + i * 1000 // rate <= now:
                k = 3 * i
                i += 1
                odr = self._odr
                if odr == 0:
                    continue
                self._acc += odr
                while self._acc >= rate:
                    self._acc -= rate
                    self._push(samples[k], samples[k + 1], samples[k + 2])
            c[3] = i
            if i < ns:
                break
            ph += 1
        if ph:  # drop consumed chunks at once: a parsed 1 s chunk is ~5 KB of heap on MicroPython
            del pend[:ph]
            ph = 0
        self._ph = ph
        self._set_due()

    def _raw(self, mg):
        sens = self._sens
        c = (2 * mg + sens) // (2 * sens)  # round to nearest
        m = self._fs_max
        if c > m:
            c = m
        elif c < -m - 1:
            c = -m - 1
        return c << (16 - self._bits)

    def _push(self, x, y, z):
        self.samples_in += 1
        # _raw() inlined (hot: once per sample and axis)
        sens2 = 2 * self._sens
        m = self._fs_max
        sh = 16 - self._bits
        rx = (2 * x + self._sens) // sens2
        rx = m if rx > m else (-m - 1 if rx < -m - 1 else rx)
        rx <<= sh
        ry = (2 * y + self._sens) // sens2
        ry = m if ry > m else (-m - 1 if ry < -m - 1 else ry)
        ry <<= sh
        rz = (2 * z + self._sens) // sens2
        rz = m if rz > m else (-m - 1 if rz < -m - 1 else rz)
        rz <<= sh
        out = self._out
        out[0] = rx
        out[1] = ry
        out[2] = rz
        fm = self.regs[_FIFO_CTRL_REG] >> 6
        if not (self.regs[_CTRL_REG5] & 0x40) or fm == 0:
            return
        if self._fn == _DEPTH:
            if fm == 1:  # FIFO mode: stops when full
                self.dropped += 1
                return
            self._fh = (self._fh + 1) % _DEPTH  # stream: the oldest is lost
            self._fn -= 1
            self.dropped += 1
        j = 3 * ((self._fh + self._fn) % _DEPTH)
        f = self._fifo
        f[j] = rx
        f[j + 1] = ry
        f[j + 2] = rz
        self._fn += 1

    # -- register side ---------------------------------------------------------------------------
    def _update_mode(self):
        r1 = self.regs[_CTRL_REG1]
        r4 = self.regs[_CTRL_REG4]
        self._odr = _ODR_HZ[r1 >> 4] if (r1 >> 4) < len(_ODR_HZ) else 0
        fs = (r4 >> 4) & 3
        if r4 & 0x08:
            self._bits = 12
            self._sens = _SENS_HR[fs]
        elif r1 & 0x08:
            self._bits = 8
            self._sens = _SENS_LP[fs]
        else:
            self._bits = 10
            self._sens = _SENS_NORMAL[fs]
        self._fs_max = (1 << (self._bits - 1)) - 1

    def _fifo_on(self):
        return (self.regs[_CTRL_REG5] & 0x40) and (self.regs[_FIFO_CTRL_REG] >> 6) != 0

    def _check(self, addr):
        if not self.present or addr != self.address:
            raise OSError(errno.ENODEV, "ENODEV")
        if 0 <= self.due_ms <= self._clock.now:
            self._deliver(self._clock.now)

    def _reg(self, r):
        if _OUT_X_L <= r <= _OUT_Z_H:
            k = (r - _OUT_X_L) >> 1
            if self._fn and self._fifo_on():
                v = self._fifo[3 * self._fh + k]
            else:
                v = self._out[k]
            if r & 1:
                return (v >> 8) & 0xFF
            return v & 0xFF
        if r == _FIFO_SRC_REG:
            n = self._fn
            fth = self.regs[_FIFO_CTRL_REG] & 0x1F
            v = 0x80 if n > fth else 0
            if n == _DEPTH:
                return v | 0x40 | 0x1F
            if n == 0:
                return v | 0x20
            return v | n
        if r == _STATUS_REG:
            return 0x08 if self._fn else 0
        if r == _INT1_SRC:
            v = 0x6A if self.int1 else 0  # IA | XH | YH | ZH (the model does not tell the axes apart)
            if self.regs[_CTRL_REG5] & 0x08:
                self.int1 = 0  # latched (LIR_INT1): cleared by this read
            return v
        return self.regs[r]

    def _pop_after_z(self):
        if self._fn and self._fifo_on():
            j = 3 * self._fh
            f = self._fifo
            out = self._out
            out[0] = f[j]
            out[1] = f[j + 1]
            out[2] = f[j + 2]
            self._fh = (self._fh + 1) % _DEPTH
            self._fn -= 1

    def readfrom_mem_into(self, addr, memaddr, buf):
        self._check(addr)
        inc = memaddr & 0x80
        r = memaddr & 0x7F
        fifo_on = self._fifo_on()
        nb = len(buf)
        if inc and fifo_on and r == _OUT_X_L and nb % 6 == 0:
            # fast path of the generic loop below for FIFO bursts: pop, then emit the 6 bytes
            f = self._fifo
            out = self._out
            j = 0
            while j < nb:
                if self._fn:
                    k = 3 * self._fh
                    out[0] = f[k]
                    out[1] = f[k + 1]
                    out[2] = f[k + 2]
                    self._fh = (self._fh + 1) % _DEPTH
                    self._fn -= 1
                v = out[0]
                buf[j] = v & 0xFF
                buf[j + 1] = (v >> 8) & 0xFF
                v = out[1]
                buf[j + 2] = v & 0xFF
                buf[j + 3] = (v >> 8) & 0xFF
                v = out[2]
                buf[j + 4] = v & 0xFF
                buf[j + 5] = (v >> 8) & 0xFF
                j += 6
            return
        for i in range(nb):
            if r >= 0x40:
                buf[i] = 0
            else:
                buf[i] = self._reg(r)
            if r == _OUT_Z_H:
                self._pop_after_z()
            if inc:
                if r == _OUT_Z_H and fifo_on:
                    r = _OUT_X_L
                else:
                    r += 1

    def readfrom_mem(self, addr, memaddr, nbytes):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        self._check(addr)
        inc = memaddr & 0x80
        r = memaddr & 0x7F
        for i in range(len(buf)):
            self._write(r, buf[i])
            if inc:
                r += 1

    def _write(self, r, v):
        if r < 0x1E or r >= 0x40 or r in (_STATUS_REG, _FIFO_SRC_REG, _INT1_SRC) or _OUT_X_L <= r <= _OUT_Z_H:
            return  # read-only / reserved: ignored
        self.regs[r] = v
        if r == _CTRL_REG1 or r == _CTRL_REG4:
            self._update_mode()
        if r == _FIFO_CTRL_REG and (v >> 6) == 0:
            self._fn = 0  # bypass resets the FIFO
            self._fh = 0
        if r == _CTRL_REG5:
            if v & 0x80:  # BOOT: reload trimming; registers keep their values in this model
                self.regs[r] = v & 0x7F
            if not (v & 0x40):
                self._fn = 0
                self._fh = 0


class ReplayPower:
    def __init__(self, hdr):
        self.recorded = 1 if hdr is not None else 0
        nominal = 12600
        if isinstance(hdr, dict) and isinstance(hdr.get("nominal_mv"), int):
            nominal = hdr["nominal_mv"]
        self._mv = nominal
        self._ign = 1

    def ignition(self):
        return self._ign

    def supply_mv(self):
        return self._mv


class ReplaySession:
    def __init__(self, trace_path, chunk_seed=1, rxbuf=4096, on_truth=None):
        self.path = trace_path
        self._r = LineReader(open_trace(trace_path))
        line = self._r.readline()
        if line is None:
            raise TraceError("trace line 1: empty file, no header")
        self.header = h = parse_header(line)
        d = h.get("duration_s")
        if d is not None and (not isinstance(d, (int, float)) or d < 0):
            raise TraceError("trace line 1: field 'duration_s' is %r, expected a number >= 0" % (d,))
        self.duration_ms = int(d * 1000 + 0.5) if d is not None else -1
        g = h.get("gnss") or {}
        baud = g.get("baud", 9600)
        if not isinstance(baud, int) or baud <= 0:
            raise TraceError("trace line 1: field 'gnss.baud' is %r, expected an int > 0" % (baud,))
        a = h.get("accel")
        self.clock = VirtualClock(0)
        self.gnss_uart = ReplayUART(self.clock, baud, chunk_seed, rxbuf)
        addr = 0x18
        if isinstance(a, dict) and isinstance(a.get("address"), int):
            addr = a["address"]
        self.i2c = LIS3DHModel(self.clock, present=a is not None, address=addr)
        self.power = ReplayPower(h.get("power"))
        self.gnss_on = 1  # the receiver's main supply (gnss_power); off: the UART receives nothing
        self.sleeps = 0
        self.on_truth = on_truth
        self.lines = 1
        self.last_event_ms = 0
        self._next = None
        self._next_t = 0
        self._eof = False
        self._fetch()
        self.advance(0)

    def _fetch(self):
        while True:
            raw = self._r.readline_padded()
            if raw is None:
                self._next = None
                self._eof = True
                self._r.close()
                return
            self.lines = self._r.lineno
            if not raw:  # blank line
                continue
            t_ms, s, o = parse_line(raw, self._r.lineno)
            if s == "accel":
                o["mg"] = _flat_samples(o.get("mg"), self._r.lineno)
            if t_ms < self._next_t:
                raise TraceError(
                    "trace line %d: field 't' goes back in time (%d ms < %d ms)"
                    % (self._r.lineno, t_ms, self._next_t)
                )
            self._next_t = t_ms
            self._next = (s, o)
            return

    def _dispatch(self, t_ms, s, o):
        ln = self._r.lineno
        if s == "gnss":
            b = gnss_bytes(o, ln)
            if self.gnss_on:
                self.gnss_uart._queue(t_ms, b)
        elif s == "accel_int":
            mg = o.get("mg")
            d = o.get("dur_ms", 0)
            if not isinstance(mg, int) or not isinstance(d, int):
                raise TraceError("trace line %d: accel_int line needs int 'mg' (and 'dur_ms')" % ln)
            self.i2c.activity(mg, d)
        elif s == "accel":
            mg = o.get("mg")
            rate = o.get("rate")
            if not isinstance(rate, (int, float)) or rate <= 0:
                raise TraceError("trace line %d: field 'rate' is %r, expected a number > 0" % (ln, rate))
            if mg:
                self.i2c._queue(t_ms, int(rate + 0.5), mg)
            end = t_ms + len(mg) // 3 * 1000 // int(rate + 0.5)
            if end > self.last_event_ms:
                self.last_event_ms = end
        elif s == "power":
            mv = o.get("mv")
            ign = o.get("ign")
            if not isinstance(mv, int) or ign not in (0, 1):
                raise TraceError("trace line %d: power line needs int 'mv' and 'ign' 0/1" % ln)
            self.power._mv = mv
            self.power._ign = ign
        elif s == "truth":
            if self.on_truth is not None:
                self.on_truth(t_ms, o)
        if t_ms > self.last_event_ms:
            self.last_event_ms = t_ms

    def advance(self, t_ms):
        """Move the clock to t_ms (never backwards) and deliver every stream event up to it."""
        clock = self.clock
        if t_ms < clock.now:
            raise ValueError("advance: t_ms %d is before now %d" % (t_ms, clock.now))
        clock.now = t_ms
        while self._next is not None and self._next_t <= t_ms:
            s, o = self._next
            self._dispatch(self._next_t, s, o)
            self._fetch()
        u = self.gnss_uart
        if 0 <= u.due_ms <= t_ms:
            u._deliver(t_ms)
        m = self.i2c
        if 0 <= m.due_ms <= t_ms:
            m._deliver(t_ms)

    def gnss_power(self, on):
        """The receiver's main supply. Off: bytes on the wire and in the ring are gone, and trace
        lines are not queued (a receiver that is off sends nothing)."""
        on = 1 if on else 0
        if not on and self.gnss_on:
            u = self.gnss_uart
            del u._pend[:]
            u._ph = 0
            u.due_ms = -1
            u._n = u._head = u._tail = 0
        self.gnss_on = on

    def sleep(self, ms, ign=1, accel=1):
        """The board's sleep: the clock jumps to the first wake-up: the ignition line at 1 (ign armed),
        INT1 of the accelerometer (accel armed) or the timer after ms. Trace lines on the way are
        played at their times. Returns "ign", "accel" or "timer"."""
        self.sleeps += 1
        clock = self.clock
        end = clock.now + ms
        why = "timer"
        m = self.i2c
        if ign and self.power._ign:
            why = "ign"
            end = clock.now
        elif accel and m.int1:
            why = "accel"
            end = clock.now
        while self._next is not None and self._next_t <= end and why == "timer":
            t = self._next_t
            if t > clock.now:
                clock.now = t
            s, o = self._next
            self._dispatch(t, s, o)
            self._fetch()
            if ign and self.power._ign:
                why = "ign"
            elif accel and m.int1:
                why = "accel"
        if why == "timer":
            clock.now = end
        self.advance(clock.now)
        return why

    @property
    def done(self):
        return self._next is None and self.gnss_uart.due_ms < 0 and self.i2c.due_ms < 0

    def next_event_ms(self):
        """Time of the next thing that happens (a trace line, a UART chunk, an accel sample); -1 if none."""
        best = -1
        if self._next is not None:
            best = self._next_t
        for d in (self.gnss_uart.due_ms, self.i2c.due_ms):
            if d >= 0 and (best < 0 or d < best):
                best = d
        return best
