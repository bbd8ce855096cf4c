# Firmware tests for firmware/calib.py (the lag bank), run under MicroPython and CPython.
# Synthetic pairs with a known mounting: the truth is the forward axis the accelerometer windows were
# built from.
import math

from firmware.calib import LagCalib, angle_deg
from mptest import assert_eq

YAW = 30.0   # the vehicle's forward axis in the box frame: yaw 30 deg about the box's z (up)
FWD = [math.cos(math.radians(YAW)), math.sin(math.radians(YAW)), 0.0]
LEFT = [-FWD[1], FWD[0], 0.0]


class LCG:
    def __init__(self, seed):
        self.s = seed

    def u(self):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s / 2147483648.0

    def g(self):
        return (self.u() + self.u() + self.u() + self.u() - 2.0) * 1.7320508


def _run(lat_noise_mg, pairs=120, seed=3, swap=False):
    """Pairs 1 s apart: the car's longitudinal / lateral acceleration a, l (mg, 150 mg rms); the
    accelerometer's windows read gravity + a * FWD + l * LEFT + 15 mg noise; the GNSS reports a
    (+ 10 mg) and l + lat_noise_mg of noise (course noise in an urban canyon). swap: the windows read
    the longitudinal on the lateral axis and back (a model that must never commit)."""
    lc = LagCalib(0, 600)
    r = LCG(seed)
    t = 0
    for _ in range(pairs):
        a = 150.0 * r.g()
        l = 150.0 * r.g()
        fa, fl = (l, a) if swap else (a, l)
        for _w in range(4):
            t += 250
            m = [fa * FWD[j] + fl * LEFT[j] + 15.0 * r.g() for j in range(3)]
            m[2] += 1000.0
            lc.window(t, int(m[0] * 25), int(m[1] * 25), int(m[2] * 25), 25)
        lc.pair(t - 1000, t, a + 10.0 * r.g(), l + lat_noise_mg * r.g())
    lc.solve([0.0, 0.0, 1.0])
    return lc


def test_clean_pairs_give_the_axis():
    lc = _run(10.0)
    assert_eq(lc.fwd is not None and lc.consistent, True, "solved (%s)" % lc.info)
    e = angle_deg(lc.fwd, FWD)
    assert_eq(e < 1.0 and lc.sigma_deg < 1.0, True, "forward error %.2f deg, sigma %.2f" % (e, lc.sigma_deg))


def test_a_noise_dominated_lateral_regressor_does_not_block_the_axis():
    # lateral GNSS noise of 3x the signal attenuates the lateral scale to ~0.1 (errors in variables):
    # not a wrong model; forward comes from the longitudinal estimate, whose sigma carries the lateral
    # acceleration the GNSS no longer explains (~150 mg across it: ~5 deg at 120 pairs)
    lc = _run(450.0)
    assert_eq(lc.fwd is not None and lc.consistent, True, "consistent (%s)" % lc.info)
    e = angle_deg(lc.fwd, FWD)
    assert_eq(0 < lc.sigma_deg < 8.0 and e < 2.0 * lc.sigma_deg, True,
              "forward error %.2f deg, sigma %.2f" % (e, lc.sigma_deg))


def test_a_swapped_frame_is_never_consistent():
    for noise in (10.0, 450.0):
        lc = _run(noise, swap=True)
        assert_eq(lc.fwd is not None and lc.consistent, False, "swap with lateral noise %d" % noise)
