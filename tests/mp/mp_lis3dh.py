# LIS3DH driver (hw/lis3dh.py) against the register-level model of hw/replay.py; MicroPython + CPython.
import json
import os

from hw.lis3dh import LIS3DH
from hw.replay import ReplaySession
from mptest import assert_eq, assert_raises, heap_locked

_N = [0]
# this run's own paths: the CPython and MicroPython runs of a script may run at once (pytest -n)
_TAG = "".join("%02x" % b for b in os.urandom(4))


def _trace(streams, accel=True, dur=10.0):
    _N[0] += 1
    path = "/tmp/paydbox_mp_lis3dh_%s_%d.jsonl" % (_TAG, _N[0])
    h = {"format": "paydbox-trace", "version": 1, "device": {"id": "t"}, "duration_s": dur,
         "gnss": {"baud": 9600}}
    if accel:
        h["accel"] = {"chip": "lis3dh", "rate_hz": 100, "unit": "mg"}
    f = open(path, "w")
    f.write(json.dumps(h) + "\n")
    for o in streams:
        f.write(json.dumps(o) + "\n")
    f.close()
    return path


def _accel(t, samples, rate=100):
    return {"t": t, "s": "accel", "rate": rate, "mg": samples}


def test_config_registers():
    s = ReplaySession(_trace([_accel(0.0, [[0, 0, 1000]])]))
    LIS3DH(s.i2c, odr_hz=100, range_g=8, hires=True, watermark=16)
    r = s.i2c.regs
    assert_eq(r[0x20], 0x57, "CTRL_REG1 100 Hz xyz")
    assert_eq(r[0x23], 0x80 | 0x20 | 0x08, "CTRL_REG4 BDU FS=8g HR")
    assert_eq(r[0x24], 0x40, "CTRL_REG5 FIFO_EN")
    assert_eq(r[0x2E], 0x80 | 16, "FIFO_CTRL stream wtm 16")
    LIS3DH(s.i2c, odr_hz=400, range_g=2, hires=False, lowpower=True, watermark=0)
    assert_eq(r[0x20], 0x7F, "CTRL_REG1 400 Hz LPen xyz")
    assert_eq(r[0x23], 0x80, "CTRL_REG4 2g no HR")
    assert_raises(ValueError, LIS3DH, s.i2c, 0x18, 123)
    assert_raises(ValueError, LIS3DH, s.i2c, 0x18, 100, 3)


# inputs [1000, -2500, 123] mg; expected mg after the chip (round to nearest digit, saturate)
_CASES = [
    (2, True, False, [1000, -2048, 123]),  # 1 mg/digit, 12 bit: -2048..2047
    (4, True, False, [1000, -2500, 124]),  # 2 mg/digit
    (8, True, False, [1000, -2500, 124]),  # 4 mg/digit
    (16, True, False, [996, -2496, 120]),  # 12 mg/digit
    (2, False, False, [1000, -2048, 124]),  # normal 10 bit, 4 mg/digit: -512..511 digits
    (16, False, False, [1008, -2496, 144]),  # normal 48 mg/digit
    (16, False, True, [960, -2496, 192]),  # low power 8 bit, 192 mg/digit
    (2, False, True, [1008, -2048, 128]),  # low power 16 mg/digit, -128..127 digits
]


def test_scaling_each_range_and_mode():
    for rng, hires, lp, want in _CASES:
        s = ReplaySession(_trace([_accel(0.5, [[1000, -2500, 123]] * 5)]))
        d = LIS3DH(s.i2c, range_g=rng, hires=hires, lowpower=lp)
        s.advance(600)
        n = d.read_fifo()
        assert_eq(n, 5, "count")
        for i in range(n):
            got = [d.xyz_mg[3 * i], d.xyz_mg[3 * i + 1], d.xyz_mg[3 * i + 2]]
            assert_eq(got, want, "range %d hires %s lp %s sample %d" % (rng, hires, lp, i))


def test_overrun_drops_oldest():
    samples = [[4 * i, -4 * i, 1000] for i in range(100)]
    s = ReplaySession(_trace([_accel(0.0, samples)]))
    d = LIS3DH(s.i2c)  # configured at t=0: sample 0 (t=0) arrived before, while powered down
    s.advance(990)
    assert_eq(s.i2c.samples_in, 99, "samples into the model")
    n = d.read_fifo()
    assert_eq(n, 32, "full FIFO")
    assert_eq(d.overruns, 1, "overruns")
    assert_eq(s.i2c.dropped, 99 - 32, "dropped")
    for j in range(32):
        assert_eq(d.xyz_mg[3 * j], 4 * (68 + j), "x of sample %d (the newest 32 survive)" % j)
        assert_eq(d.xyz_mg[3 * j + 1], -4 * (68 + j), "y")
    assert_eq(d.read_fifo(), 0, "empty after the burst")
    assert_eq(d.overruns, 1, "no new overrun")


def test_steady_reading_loses_nothing():
    samples = [[i, 2 * i, 1000] for i in range(500)]
    s = ReplaySession(_trace([_accel(0.0, samples[:100]), _accel(1.0, samples[100:200]),
                              _accel(2.0, samples[200:300]),
                              _accel(3.0, samples[300:400]), _accel(4.0, samples[400:])]))
    d = LIS3DH(s.i2c, range_g=2)
    got = []
    t = 0
    while not s.done or d.count:
        t += 100
        s.advance(t)
        n = d.read_fifo()
        for j in range(n):
            got.append(d.xyz_mg[3 * j])
    assert_eq(d.overruns, 0, "overruns")
    assert_eq(got, list(range(1, 500)), "every sample once, in order")


def test_odr_resampling():
    samples = [[i, 0, 0] for i in range(100)]
    for odr, want in ((50, 49), (200, 198), (100, 99)):
        s = ReplaySession(_trace([_accel(0.0, samples)]))
        d = LIS3DH(s.i2c, odr_hz=odr, range_g=2)
        total = 0
        for k in range(1, 12):
            s.advance(k * 100)
            total += d.read_fifo()
        assert_eq(total, want, "samples at %d Hz from a 100 Hz trace" % odr)
        assert_eq(d.overruns, 0, "overruns")


class _I2CStub:
    def __init__(self, who=0x33, fail=None):
        self.who = who
        self.fail = fail

    def readfrom_mem_into(self, addr, reg, buf):
        if self.fail:
            raise OSError(self.fail)
        buf[0] = self.who

    def writeto_mem(self, addr, reg, buf):
        if self.fail:
            raise OSError(self.fail)


def test_absent_chip_oserror():
    s = ReplaySession(_trace([{"t": 0.0, "s": "gnss", "d": "$GPTXT*00\r\n"}], accel=False))
    e = assert_raises(OSError, LIS3DH, s.i2c)
    assert_eq(e.args[0], 19, "ENODEV")
    assert "0x18" in str(e.args[1]), str(e.args)
    e = assert_raises(OSError, LIS3DH, _I2CStub(who=0x32))
    assert "WHO_AM_I=0x32" in str(e.args[1]), str(e.args)
    e = assert_raises(OSError, LIS3DH, _I2CStub(fail=5))
    assert_eq(e.args[0], 5, "EIO kept")
    # wrong address: the model NACKs
    s2 = ReplaySession(_trace([_accel(0.0, [[0, 0, 1000]])]))
    assert_raises(OSError, LIS3DH, s2.i2c, 0x19)


def _rf(d):
    return d.read_fifo()


def test_read_fifo_heap_locked():
    samples = [[8 * i, -8 * i, 1000 - i] for i in range(100)]
    s = ReplaySession(_trace([_accel(0.0, samples)]))
    d = LIS3DH(s.i2c, range_g=16)  # 12 mg/digit
    d.read_fifo()  # warm up
    s.advance(200)
    n = heap_locked(_rf, d)
    assert_eq(n, 20, "samples in 200 ms")
    s.advance(520)
    n = heap_locked(_rf, d)  # a second, different length
    assert_eq(n, 32, "full")
    assert_eq(heap_locked(_rf, d), 0, "empty read")
    assert_eq(d.overruns, 1, "overrun")


def test_read_mg_bypass():
    s = ReplaySession(_trace([_accel(0.0, [[100, 200, 1000]] * 10)]))
    d = LIS3DH(s.i2c, range_g=2)
    s.i2c.writeto_mem(0x18, 0x2E, b"\x00")  # bypass: OUT_* show the latest sample
    s.advance(50)
    assert_eq(d.read_mg(), (100, 200, 1000), "single sample")
    assert_eq(d.read_mg(), (100, 200, 1000), "bypass does not pop")


def test_burst_matches_register_by_register_reads():
    samples = [[4 * i, -8 * i, 1000 + 4 * i] for i in range(20)]
    a = ReplaySession(_trace([_accel(0.0, samples)]))
    b = ReplaySession(_trace([_accel(0.0, samples)]))
    LIS3DH(a.i2c, range_g=16)
    LIS3DH(b.i2c, range_g=16)
    a.advance(150)
    b.advance(150)
    burst = bytearray(6 * 10)
    a.i2c.readfrom_mem_into(0x18, 0xA8, burst)
    split = bytearray()
    part = bytearray(3)  # not a multiple of 6: the generic path, continuing at the next register
    for k in range(20):
        b.i2c.readfrom_mem_into(0x18, 0xA8 if k % 2 == 0 else 0xAB, part)
        split.extend(part)
    assert_eq(bytes(split), bytes(burst), "same bytes")
    assert_eq(a.i2c.readfrom_mem(0x18, 0x2F, 1), b.i2c.readfrom_mem(0x18, 0x2F, 1), "same FIFO_SRC")
    assert_eq(a.i2c.readfrom_mem(0x18, 0x2F, 1)[0] & 0x1F, 5, "15 in (10..150 ms), 10 read")
