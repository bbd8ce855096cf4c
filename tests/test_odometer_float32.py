"""distance_mm with single-precision floats, as MicroPython computes on the ESP32 and RP2040 ports
(MICROPY_FLOAT_IMPL_FLOAT: a float is an IEEE single, an int operand is converted to one first).

The firmware's own function runs here with its floats replaced by F32, a float rounded to single
precision after every operation, and its math by the same functions rounded. The reference is the
same function in double precision (tests/mp/mp_odometer.py checks it against a known value). The
odometer bills integrated Doppler speed; distance_mm gates the fixes and measures the straight line
of an outage bridge and of a move while the box was off, so its error on a board is billed there."""
import math
import struct

import pytest

from firmware import odometer


def _f32(x):
    return struct.unpack("f", struct.pack("f", float(x)))[0]


class F32(float):
    def __new__(cls, x):
        return float.__new__(cls, _f32(x))

    def __neg__(self):
        return F32(-float(self))


def _binop(name):
    op = getattr(float, name)

    def f(a, b):
        return F32(op(float(a), float(F32(b))))

    return f


for _n in ("add", "sub", "mul", "truediv"):
    setattr(F32, "__%s__" % _n, _binop("__%s__" % _n))
    setattr(F32, "__r%s__" % _n, _binop("__r%s__" % _n))


class _Math32:
    pi = F32(math.pi)

    def __getattr__(self, name):
        fn = getattr(math, name)
        return lambda *a: F32(fn(*[float(x) for x in a]))


@pytest.fixture
def single_precision(monkeypatch):
    monkeypatch.setattr(odometer, "math", _Math32())
    monkeypatch.setattr(odometer, "_E7_TO_RAD", F32(math.pi / 1800000000.0))
    monkeypatch.setattr(odometer, "_EARTH_R_MM", F32(6371008800.0))


def test_the_emulation_rounds_like_a_single():
    # 2**24 + 1 is the first int a single cannot hold; 0.1 in single is 0.100000001490116...
    assert float(F32(2 ** 24 + 1)) == 2 ** 24
    assert float(F32(1) * 0.1) == 0.10000000149011612
    assert float(3 * F32(0.1)) != 3 * 0.1


# steps a box measures: 1 s at walking and motorway speed, a 5-minute outage bridge, a tow of 40 km,
# at latitudes and longitudes whose e7 values need all of a single's 24-bit mantissa and more
STEPS = [(lat, lon, dlat, dlon) for lat, lon in ((481234567, 113456789), (-337654321, -1512345678),
                                                 (645432109, 1799000000), (10000, -20000))
         for dlat, dlon in ((9, 7), (1200, 1500), (-130, 2600), (27000, -35000), (250000, 310000))]


@pytest.mark.parametrize("lat, lon, dlat, dlon", STEPS)
def test_distance_mm_keeps_its_precision_in_single_precision(single_precision, lat, lon, dlat, dlon):
    d32 = odometer.distance_mm(lat, lon, lat + dlat, lon + dlon)
    with pytest.MonkeyPatch.context() as m:  # the same function in double precision
        m.setattr(odometer, "math", math)
        m.setattr(odometer, "_E7_TO_RAD", math.pi / 1800000000.0)
        m.setattr(odometer, "_EARTH_R_MM", 6371008800.0)
        d64 = odometer.distance_mm(lat, lon, lat + dlat, lon + dlon)
    # a single's relative precision is 6e-8 (an Earth radius 6e9 mm: 0.4 m per step of a latitude in
    # radians, the error of p2 - p1); from the integer differences: 1 mm plus 1 ppm
    assert abs(d32 - d64) <= 1 + d64 // 1000000, (d32, d64)
