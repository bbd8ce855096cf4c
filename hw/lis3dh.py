# ST LIS3DH / LIS2DH12 3-axis accelerometer over I2C (any backend with readfrom_mem_into/writeto_mem).
# Runs unchanged on MicroPython and CPython. read_fifo() is the hot path: no allocation.
#
# Data registers are 16-bit two's complement, little-endian (BLE=0), left-justified: the top 12 bits
# in high-resolution mode, 10 bits in normal mode, 8 bits in low-power mode. One digit is worth
# (datasheet, mg/digit):      +-2g  +-4g  +-8g  +-16g
#     HR 12-bit                 1     2     4     12
#     normal 10-bit             4     8    16     48
#     low-power 8-bit          16    32    64    192
import errno
from array import array

from hw.compat import const, int16_array

_WHO_AM_I = const(0x0F)
_CTRL_REG1 = const(0x20)
_CTRL_REG2 = const(0x21)
_CTRL_REG3 = const(0x22)
_CTRL_REG4 = const(0x23)
_CTRL_REG5 = const(0x24)
_STATUS_REG = const(0x27)
_OUT_X_L = const(0x28)
_FIFO_CTRL_REG = const(0x2E)
_FIFO_SRC_REG = const(0x2F)
_REFERENCE = const(0x26)
_INT1_CFG = const(0x30)
_INT1_SRC = const(0x31)
_INT1_THS = const(0x32)
_INT1_DURATION = const(0x33)

_AUTO_INC = const(0x80)  # bit 7 of the I2C sub-address: auto-increment (rolls 0x2D -> 0x28 in FIFO mode)
_CHIP_ID = const(0x33)  # LIS3DH and LIS2DH12

# CTRL_REG1
_XYZ_EN = const(0x07)
_LPEN = const(0x08)
# CTRL_REG2: HPIS1, high-pass filtered data to the interrupt 1 generator (gravity removed)
_HPIS1 = const(0x01)
# CTRL_REG3: I1_IA1, interrupt generator 1 on the INT1 pin
_I1_IA1 = const(0x40)
# CTRL_REG5: LIR_INT1, INT1 latched until INT1_SRC is read
_LIR_INT1 = const(0x08)
# INT1_CFG: OR of the high events of X, Y, Z (XHIE | YHIE | ZHIE, AOI = 0, 6D = 0)
_INT_HIGH_OR = const(0x2A)
# INT1_SRC: IA, an interrupt is active
INT_IA = const(0x40)
# CTRL_REG4
_BDU = const(0x80)
_HR = const(0x08)
# CTRL_REG5
_FIFO_EN = const(0x40)
# FIFO_CTRL_REG
_FM_BYPASS = const(0x00)
_FM_STREAM = const(0x80)
# FIFO_SRC_REG
_SRC_WTM = const(0x80)
_SRC_OVRN = const(0x40)
_SRC_EMPTY = const(0x20)
_SRC_FSS = const(0x1F)

FIFO_DEPTH = const(32)
_VIEW_BITS = const(6)  # bursts of 1, 2, 4 .. 32 samples (FIFO_DEPTH = 32)

_ODR_CODES = {1: 1, 10: 2, 25: 3, 50: 4, 100: 5, 200: 6, 400: 7}
_RANGE_CODES = {2: 0, 4: 1, 8: 2, 16: 3}
# INT1_THS: mg per LSB, indexed by range code (ST LIS3DH datasheet DocID 17530, INT1_THS (32h))
_THS_MG = (16, 32, 62, 186)
# mg per digit after right-justifying, indexed by range code
_SENS_HR = (1, 2, 4, 12)
_SENS_NORMAL = (4, 8, 16, 48)
_SENS_LP = (16, 32, 64, 192)


class LIS3DH:
    """LIS3DH / LIS2DH12 in FIFO stream mode.

    xyz_mg: array('i', 96), x,y,z interleaved in mg, filled by read_fifo().
    overruns: FIFO_SRC reads that showed OVRN (FIFO full: the oldest samples may have been lost).
    """

    def __init__(self, i2c, address=0x18, odr_hz=100, range_g=8, hires=True, lowpower=False, watermark=16):
        if odr_hz not in _ODR_CODES:
            raise ValueError("odr_hz: %r not one of 1, 10, 25, 50, 100, 200, 400" % (odr_hz,))
        if range_g not in _RANGE_CODES:
            raise ValueError("range_g: %r not one of 2, 4, 8, 16" % (range_g,))
        if hires and lowpower:
            raise ValueError("hires and lowpower are exclusive")
        if not 0 <= watermark < FIFO_DEPTH:
            raise ValueError("watermark: %r not in 0..31" % (watermark,))
        self._i2c = i2c
        self._addr = address
        self.odr_hz = odr_hz
        self.range_g = range_g
        self.hires = 1 if hires else 0
        self.lowpower = 1 if lowpower else 0
        self.watermark = watermark
        fs = _RANGE_CODES[range_g]
        if hires:
            self._shift = 4
            self.mg_per_digit = _SENS_HR[fs]
        elif lowpower:
            self._shift = 8
            self.mg_per_digit = _SENS_LP[fs]
        else:
            self._shift = 6
            self.mg_per_digit = _SENS_NORMAL[fs]
        self.xyz_mg = array("i", bytes(4 * 3 * FIFO_DEPTH))
        self.count = 0
        self.overruns = 0
        self.reads = 0
        self._b1 = bytearray(1)
        # FIFO burst buffer: bytes for the bus, the same memory as signed 16-bit samples for the loop
        self._raw16, self._raw = int16_array(3 * FIFO_DEPTH)
        # memoryview slicing allocates on MicroPython: preallocated views of 1, 2, 4 .. 32 samples
        # (a read of n samples is one burst per bit of n), not one per count (33 views, 1.8 KB of heap)
        mv = memoryview(self._raw)
        self._views = tuple(mv[: 6 << b] for b in range(_VIEW_BITS))

        self.setup()

    def setup(self):
        """Check WHO_AM_I and write the configuration (again after the chip lost power). OSError
        when the chip does not answer."""
        address = self._addr
        lowpower = self.lowpower
        hires = self.hires
        odr_hz = self.odr_hz
        fs = _RANGE_CODES[self.range_g]
        watermark = self.watermark
        who = self._read_reg(_WHO_AM_I)
        if who != _CHIP_ID:
            raise OSError(
                errno.ENODEV,
                "LIS3DH not found at I2C 0x%02x: WHO_AM_I=0x%02x, expected 0x33" % (address, who),
            )
        self._write_reg(_CTRL_REG1, (_ODR_CODES[odr_hz] << 4) | (_LPEN if lowpower else 0) | _XYZ_EN)
        self._write_reg(_CTRL_REG2, 0)
        self._write_reg(_CTRL_REG3, 0)
        self._write_reg(_INT1_CFG, 0)
        self._write_reg(_CTRL_REG4, _BDU | (fs << 4) | (_HR if hires else 0))
        self._write_reg(_CTRL_REG5, _FIFO_EN)
        # bypass first: empties the FIFO; then stream mode with the watermark
        self._write_reg(_FIFO_CTRL_REG, _FM_BYPASS)
        self._write_reg(_FIFO_CTRL_REG, _FM_STREAM | watermark)

    def sleep_mode(self, threshold_mg, duration_ms, odr_hz=10):
        """Parked: low-power mode (8-bit) at odr_hz, FIFO off, and the activity interrupt on INT1: any
        axis of the high-pass filtered acceleration above threshold_mg for duration_ms latches INT1
        (cleared by int1_source()). Registers: CTRL_REG1 ODR|LPen|XYZ, CTRL_REG2 HPIS1, CTRL_REG4 FS,
        CTRL_REG5 LIR_INT1, INT1_THS (LSB 16/32/62/186 mg at 2/4/8/16 g), INT1_DURATION (LSB 1/ODR),
        REFERENCE read (sets the filter's reference), INT1_CFG XHIE|YHIE|ZHIE, CTRL_REG3 I1_IA1.
        Returns (INT1_THS, INT1_DURATION) as written. OSError when the chip does not answer."""
        if odr_hz not in _ODR_CODES:
            raise ValueError("odr_hz: %r not one of 1, 10, 25, 50, 100, 200, 400" % (odr_hz,))
        fs = _RANGE_CODES[self.range_g]
        lsb = _THS_MG[fs]
        ths = (threshold_mg + lsb // 2) // lsb
        ths = 1 if ths < 1 else (127 if ths > 127 else ths)
        dur = duration_ms * odr_hz // 1000
        dur = 0 if dur < 0 else (127 if dur > 127 else dur)
        self._write_reg(_CTRL_REG3, 0)
        self._write_reg(_CTRL_REG1, (_ODR_CODES[odr_hz] << 4) | _LPEN | _XYZ_EN)
        self._write_reg(_CTRL_REG2, _HPIS1)
        self._write_reg(_CTRL_REG4, _BDU | (fs << 4))
        self._write_reg(_FIFO_CTRL_REG, _FM_BYPASS)
        self._write_reg(_CTRL_REG5, _LIR_INT1)
        self._write_reg(_INT1_THS, ths)
        self._write_reg(_INT1_DURATION, dur)
        self._read_reg(_REFERENCE)
        self._write_reg(_INT1_CFG, _INT_HIGH_OR)
        self._read_reg(_INT1_SRC)
        self._write_reg(_CTRL_REG3, _I1_IA1)
        return ths, dur

    def int1_source(self):
        """INT1_SRC (IA = bit 6); reading it clears a latched interrupt."""
        return self._read_reg(_INT1_SRC)

    def power_down(self):
        """ODR 0: power-down mode (cut-off); setup() brings the chip back."""
        self._write_reg(_CTRL_REG3, 0)
        self._write_reg(_CTRL_REG1, 0)

    def _read_reg(self, reg):
        try:
            self._i2c.readfrom_mem_into(self._addr, reg, self._b1)
        except OSError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else errno.EIO
            raise OSError(code, "LIS3DH at I2C 0x%02x: no answer reading reg 0x%02x (%s)"
                          % (self._addr, reg, e))
        return self._b1[0]

    def _write_reg(self, reg, value):
        self._b1[0] = value
        try:
            self._i2c.writeto_mem(self._addr, reg, self._b1)
        except OSError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else errno.EIO
            raise OSError(code, "LIS3DH at I2C 0x%02x: no answer writing reg 0x%02x (%s)"
                          % (self._addr, reg, e))

    def read_fifo(self):
        """Burst-read every sample in the FIFO into xyz_mg; returns the count. No allocation.
        A bus fault raises OSError (the supervisor decides what to do)."""
        i2c = self._i2c
        addr = self._addr
        src = self._b1
        i2c.readfrom_mem_into(addr, _FIFO_SRC_REG, src)
        s = src[0]
        if s & _SRC_OVRN:
            self.overruns += 1
            n = FIFO_DEPTH
        elif s & _SRC_EMPTY:
            n = 0
        else:
            n = s & _SRC_FSS
        self.count = n
        if n == 0:
            return 0
        self.reads += 1
        raw = self._raw16  # little-endian, left-justified counts, already signed
        out = self.xyz_mg
        sh = self._shift
        k = self.mg_per_digit
        views = self._views
        o = 0  # values of xyz_mg filled
        b = _VIEW_BITS - 1
        while b >= 0:  # largest burst first: each pops the next 2**b samples in order
            if n & (1 << b):
                i2c.readfrom_mem_into(addr, _OUT_X_L | _AUTO_INC, views[b])
                for i in range(3 << b):
                    out[o + i] = (raw[i] >> sh) * k
                o += 3 << b
            b -= 1
        return n

    def read_mg(self):
        """One sample (x, y, z) in mg from the output registers (console / self-test only; allocates)."""
        buf = bytearray(6)
        self._i2c.readfrom_mem_into(self._addr, _OUT_X_L | _AUTO_INC, buf)
        out = []
        for i in range(3):
            v = buf[2 * i] | (buf[2 * i + 1] << 8)
            if v & 0x8000:
                v -= 0x10000
            out.append((v >> self._shift) * self.mg_per_digit)
        return (out[0], out[1], out[2])

    def status(self):
        """(FIFO_SRC, STATUS_REG) raw bytes, for the self-test."""
        return (self._read_reg(_FIFO_SRC_REG), self._read_reg(_STATUS_REG))
