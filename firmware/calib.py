# Mount calibration from GNSS and the accelerometer's 250 ms windows, robust to GNSS lag.
#
# Not hot: called per 250 ms window (window()) and per GNSS fix pair (pair(), ~1 Hz), by
# firmware/motion.py. Integer window history, float32 normal-equation sums in preallocated arrays,
# sized from the configuration (lag range); nothing grows.
#
# Model, per fix pair (anchor fix at box time ta, fix at tb, ~1 s apart), for each candidate lag L:
#     m(ta - L .. tb - L) = c + a_long * X + a_lat * Y
# m: mean box-frame specific force (mg) over the accelerometer windows of the lagged interval;
# a_long = dv/dt and a_lat = -(dcourse/dt) * v (mg, vehicle frame, y left) from the GNSS fixes;
# c: gravity + sensor bias + slow offsets (intercept); X, Y: the vehicle's forward and left axes
# in box axes (3-vectors, |X| = |Y| = 1 for a perfect sensor). One least-squares problem per lag
# (sums with exponential forgetting, so a slowly drifting bias is followed by c); the lag whose
# residual is smallest is the GNSS-to-accelerometer lag. Forward comes from X and, independently,
# from Y x up (lateral information: a forward/lateral swap would make the two disagree); both are
# combined by inverse variance. See docs/motion.md.
import math

from hw.compat import const, zeros

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(inconsistent=0)

WIN_MS = const(250)
CHI2 = 9.0
LAG_STEP_MS = const(125)   # lag grid; windows are weighted by their overlap with the lagged interval
# sums: n, Sa, Sl, Saa, Sal, Sll once (the same for every lag), then per lag Sm(3), Sam(3), Slm(3),
# Smm(xx, yy, zz, xy, xz, yz): lag li's sums at li * _NL + _S_M .. li * _NL + _S_MM + 5
_NL = const(15)
_S_N = const(0)
_S_A = const(1)
_S_L = const(2)
_S_AA = const(3)
_S_AL = const(4)
_S_LL = const(5)
_S_M = const(6)
_S_AM = const(9)
_S_LM = const(12)
_S_MM = const(15)
_WF = const(5)    # window history: t_end, sx, sy, sz, n
# solve()'s scratch (array of doubles, self._w: the same floats as Python's, no list or tuple made
# while the heap is at its fullest): _shared()'s values, the combined forward (_W_F, 3) and its ok
# flag, the two estimates of _combine() (_EF each: unit forward 3, variance, scale), then two fit
# blocks (_B0: the best lag's, _B1: another lag's) of _FB each: X 3, Y 3, residual covariance 6
# (upper triangle r00 r01 r02 r11 r12 r22), mean m 3, rss, dof, var_x, var_y; then the fits' and
# _dyn_up()'s working vectors
_USE_A = const(1)   # _shared() / _fit() bits: the longitudinal regressor (X) is informative
_USE_L = const(2)   # ... the lateral one (Y)
_W_N = const(0)
_W_MA = const(1)
_W_ML = const(2)
_W_NMA = const(3)
_W_NML = const(4)
_W_CAA = const(5)
_W_CAL = const(6)
_W_CLL = const(7)
_W_DET = const(8)
_W_OK = const(9)
_W_F = const(10)
_W_E = const(13)
_EF = const(5)
_B0 = const(23)
_F_X = const(0)
_F_Y = const(3)
_F_R = const(6)
_F_M = const(12)
_F_RSS = const(15)
_F_DOF = const(16)
_F_VX = const(17)
_F_VY = const(18)
_FB = const(19)
_B1 = const(42)     # _B0 + _FB
_W_A = const(61)    # _B1 + _FB: _fit()'s centred cross moments Cam (3), then Clm (_W_L, 3)
_W_L = const(64)
_W_T = const(67)    # a vector of _dyn_up() (3)
_WN = const(70)
# 1-sigma tilt of gravity read through an unknown sensor bias (50 mg: phone-class parts reach 80)
_BIAS_RAD = 0.05
_EXC_MG2 = 400.0   # a regressor needs a spread of >= 20 mg rms over the pairs to be informative


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _unit(v):
    n = math.sqrt(_dot(v, v))
    if n <= 0:
        return None
    return [v[0] / n, v[1] / n, v[2] / n]


def _angle(a0, a1, a2, b0, b1, b2):
    # angle_deg of two vectors given by their components (no list)
    na = math.sqrt(a0 * a0 + a1 * a1 + a2 * a2)
    nb = math.sqrt(b0 * b0 + b1 * b1 + b2 * b2)
    if na <= 0 or nb <= 0:
        return 180.0
    c = (a0 * b0 + a1 * b1 + a2 * b2) / (na * nb)
    c = 1.0 if c > 1.0 else (-1.0 if c < -1.0 else c)
    return math.degrees(math.acos(c))


def angle_deg(a, b):
    return _angle(a[0], a[1], a[2], b[0], b[1], b[2])


class LagCalib:
    """Lag bank of forward/lateral regressions. lag_max_ms: largest GNSS-to-accelerometer lag
    searched (0..lag_max_ms in 125 ms steps; a best lag at the largest is refused, it may lie
    beyond); forget_pairs: memory of the sums (pairs)."""

    def __init__(self, lag_max_ms=2000, forget_pairs=600, max_pair_ms=2500):
        if lag_max_ms < 0 or lag_max_ms > 5000:
            raise ValueError("calib_lag_max_ms: expected 0..5000, got %r" % (lag_max_ms,))
        if forget_pairs < 20:
            raise ValueError("calib_forget_pairs: expected >= 20, got %r" % (forget_pairs,))
        self.nl = lag_max_ms // LAG_STEP_MS + 1
        self._lam = 1.0 - 1.0 / forget_pairs
        self._hn = (lag_max_ms + max_pair_ms) // WIN_MS + 4
        # grown in place (hw.compat.zeros): no list of n items, no zero buffer of the same size first
        self._h = zeros("i", _WF * self._hn)
        self._s = zeros("f", _S_M + _NL * self.nl)   # 21 lags: 321 floats (not 21 x 21)
        self._rss = zeros("f", self.nl)
        self._w = zeros("d", _WN)   # solve()'s scratch (_W_*, _F_*)
        self._ref = [0.0, 0.0, 0.0]
        self.reset()

    def reset(self):
        for i in range(len(self._s)):
            self._s[i] = 0.0
        self._hh = 0      # next write slot
        self._hc = 0      # windows held
        self._disorder = 0   # windows to go until the history is in time order again
        self._has_ref = False
        self.pairs = 0
        self.lag_ms = -1
        # result of the last solve()
        self.fwd = None
        self.up = None
        self.sigma_deg = -1.0
        self.fwd_sigma_deg = -1.0
        self.up_sigma_deg = -1.0
        self.consistent = False
        self.info = ""

    def window(self, t_end, sx, sy, sz, n):
        """One 250 ms window: sums of the raw samples (mg) and their count, ending at box time t_end."""
        if n <= 0:
            return
        h = self._h
        o = self._hh * _WF
        # _mean stops at the first window that ends before its interval when the history is in
        # time order; a window ending before the previous one (a FIFO burst after a fault) turns
        # that off until it has left the history (_hn windows later)
        if self._hc and t_end < h[((self._hh - 1) % self._hn) * _WF]:
            self._disorder = self._hn
        elif self._disorder:
            self._disorder -= 1
        h[o] = t_end
        h[o + 1] = sx
        h[o + 2] = sy
        h[o + 3] = sz
        h[o + 4] = n
        self._hh = (self._hh + 1) % self._hn
        if self._hc < self._hn:
            self._hc += 1

    def _mean(self, t0, t1, out):
        # mean specific force over (t0, t1]: each window (t_end - 250, t_end] counts by the share of it
        # inside the interval, so the interval need not fall on window edges (the fixes' times do not);
        # False if the history does not reach back to t0 (its oldest window starts after t0).
        # Windows are summed newest first; those outside the interval add nothing, so the walk stops
        # at the first one ending at or before t0 when the history is in time order (same sums).
        # out None: only whether there is a mean (no float made): a window overlaps the interval
        # (every window holds n >= 1 samples, so its share makes the count > 0)
        h = self._h
        hn = self._hn
        hc = self._hc
        if hc == 0 or h[((self._hh - hc) % hn) * _WF] - WIN_MS > t0:
            return False
        ordered = self._disorder == 0
        sx = sy = sz = 0.0
        n = 0.0
        o = self._hh * _WF
        end = hn * _WF
        for k in range(hc):
            o -= _WF
            if o < 0:
                o += end
            te = h[o]
            if te <= t0 and ordered:
                break
            ts = te - WIN_MS
            a = t0 if t0 > ts else ts
            b = t1 if t1 < te else te
            if b <= a:
                continue
            if out is None:
                return True
            if b - a == WIN_MS:
                # the whole window: f is 1.0 and h * 1.0 the same float as h (fewer float objects)
                sx += h[o + 1]
                sy += h[o + 2]
                sz += h[o + 3]
                n += h[o + 4]
                continue
            f = (b - a) / WIN_MS
            sx += h[o + 1] * f
            sy += h[o + 2] * f
            sz += h[o + 3] * f
            n += h[o + 4] * f
        if n <= 0:
            return False
        out[0] = sx / n
        out[1] = sy / n
        out[2] = sz / n
        return True

    def pair(self, ta, tb, a_mg, l_mg):
        """A fix pair: GNSS longitudinal / lateral acceleration (mg) over box times ta..tb.
        Returns True when it was accumulated (accelerometer windows known for every lag)."""
        # every lag's mean must exist before any is summed; they are then computed one lag at a time
        # into m (not kept: 21 lags of 3 floats were ~3.4 KB at once, the drive's largest transient)
        nl = self.nl
        for li in range(nl):
            lag = li * LAG_STEP_MS
            if not self._mean(ta - lag, tb - lag, None):
                return False
        m = [0.0, 0.0, 0.0]
        if not self._has_ref:
            # centre the sums (float32): gravity is ~1000 mg, the signal tens of mg
            self._mean(ta, tb, m)
            self._ref = list(m)
            self._has_ref = True
        s = self._s
        lam = self._lam
        # the count and the GNSS sums (n, Sa, Sl, Saa, Sal, Sll) get the same additions and decay
        # for every lag: they live once, before the lags' sums
        for i in range(len(s)):
            s[i] *= lam
        s[_S_N] += 1.0
        s[_S_A] += a_mg
        s[_S_L] += l_mg
        s[_S_AA] += a_mg * a_mg
        s[_S_AL] += a_mg * l_mg
        s[_S_LL] += l_mg * l_mg
        r = self._ref
        r0 = r[0]
        r1 = r[1]
        r2 = r[2]
        for li in range(nl):
            o = li * _NL
            lag = li * LAG_STEP_MS
            self._mean(ta - lag, tb - lag, m)
            mx = m[0] - r0
            my = m[1] - r1
            mz = m[2] - r2
            s[o + _S_M] += mx
            s[o + _S_M + 1] += my
            s[o + _S_M + 2] += mz
            s[o + _S_AM] += a_mg * mx
            s[o + _S_AM + 1] += a_mg * my
            s[o + _S_AM + 2] += a_mg * mz
            s[o + _S_LM] += l_mg * mx
            s[o + _S_LM + 1] += l_mg * my
            s[o + _S_LM + 2] += l_mg * mz
            s[o + _S_MM] += mx * mx
            s[o + _S_MM + 1] += my * my
            s[o + _S_MM + 2] += mz * mz
            s[o + _S_MM + 3] += mx * my
            s[o + _S_MM + 4] += mx * mz
            s[o + _S_MM + 5] += my * mz
        self.pairs += 1
        return True

    def _shared(self):
        # what every lag's fit shares, into the scratch (_W_N.._W_DET): the count and the GNSS
        # regressors' moments (lag 0's slots). Returns which regressors are informative: _USE_A |
        # _USE_L bits, 0 when no lag is solvable.
        s = self._s
        n = s[_S_N]
        if n < 6:
            return 0
        # no comprehensions (a closure each on MicroPython); n * a * b is (n * a) * b, so the
        # products n * a are formed once with the same floats
        ma = s[_S_A] / n
        ml = s[_S_L] / n
        nma = n * ma
        nml = n * ml
        caa = s[_S_AA] - nma * ma
        cal = s[_S_AL] - nma * ml
        cll = s[_S_LL] - nml * ml
        use_a = caa > _EXC_MG2 * n
        use_l = cll > _EXC_MG2 * n
        det = 0.0
        if use_a and use_l:
            det = caa * cll - cal * cal
            if det <= 0.05 * caa * cll:
                # the two regressors move together: keep the stronger one only
                if caa >= cll:
                    use_l = False
                else:
                    use_a = False
        if not use_a and not use_l:
            return 0
        w = self._w
        w[_W_N] = n
        w[_W_MA] = ma
        w[_W_ML] = ml
        w[_W_NMA] = nma
        w[_W_NML] = nml
        w[_W_CAA] = caa
        w[_W_CAL] = cal
        w[_W_CLL] = cll
        w[_W_DET] = det
        return (_USE_A if use_a else 0) | (_USE_L if use_l else 0)

    def _fit(self, li, sh, fo, full):
        # the fit of lag index li (sh: _shared()'s bits, its values in the scratch) into the scratch
        # at fo: X, Y (vehicle forward / left in box axes), the residual covariance (upper triangle),
        # the mean m, rss, dof, var_x, var_y (_F_*); full False: the residual's diagonal only (its
        # rss is the same float: each entry by the same operations). Returns the bits of the axes it
        # has (_USE_A: X, _USE_L: Y); 0 when not solvable. solve() runs with the heap at its fullest
        # (the GNSS fix callback), where a float is a heap block (32 B on a 64-bit port): the values
        # live in the scratch, not in ~35 float locals (1.1 KB live at once), and no list or tuple
        # is made.
        if not sh:
            return 0
        w = self._w
        s = self._s
        n = w[_W_N]
        o = li * _NL
        M = fo + _F_M
        w[M] = s[o + _S_M] / n
        w[M + 1] = s[o + _S_M + 1] / n
        w[M + 2] = s[o + _S_M + 2] / n
        # the centred cross moments with the regressors: Cam (_W_A) and Clm (_W_L)
        for j in range(3):
            w[_W_A + j] = s[o + _S_AM + j] - w[_W_NMA] * w[M + j]
            w[_W_L + j] = s[o + _S_LM + j] - w[_W_NML] * w[M + j]
        # Cmm, upper triangle (r00 r01 r02 r11 r12 r22; the sums are xx yy zz xy xz yz): n m_i m_j
        # is (n * m_i) * m_j
        R = fo + _F_R
        q = o + _S_MM
        w[R] = s[q] - n * w[M] * w[M]
        w[R + 3] = s[q + 1] - n * w[M + 1] * w[M + 1]
        w[R + 5] = s[q + 2] - n * w[M + 2] * w[M + 2]
        if full:
            w[R + 1] = s[q + 3] - n * w[M] * w[M + 1]
            w[R + 2] = s[q + 4] - n * w[M] * w[M + 2]
            w[R + 4] = s[q + 5] - n * w[M + 1] * w[M + 2]
        X = fo + _F_X
        Y = fo + _F_Y
        w[fo + _F_VX] = 0.0
        w[fo + _F_VY] = 0.0
        if sh == _USE_A | _USE_L:
            det = w[_W_DET]
            for j in range(3):
                w[X + j] = (w[_W_CLL] * w[_W_A + j] - w[_W_CAL] * w[_W_L + j]) / det
                w[Y + j] = (w[_W_CAA] * w[_W_L + j] - w[_W_CAL] * w[_W_A + j]) / det
            w[fo + _F_DOF] = n - 3
            w[fo + _F_VX] = w[_W_CLL] / det
            w[fo + _F_VY] = w[_W_CAA] / det
        elif sh == _USE_A:
            for j in range(3):
                w[X + j] = w[_W_A + j] / w[_W_CAA]
            w[fo + _F_DOF] = n - 2
            w[fo + _F_VX] = 1.0 / w[_W_CAA]
        else:
            for j in range(3):
                w[Y + j] = w[_W_L + j] / w[_W_CLL]
            w[fo + _F_DOF] = n - 2
            w[fo + _F_VY] = 1.0 / w[_W_CLL]
        # residual covariance (symmetric): Cmm - X Cam' - Y Clm', entry (i, j) for j >= i; the X part
        # (k 0: bit _USE_A, with Cam) before the Y part (k 1: bit _USE_L, with Clm)
        for k in range(2):
            if not sh & (1 << k):
                continue
            A = Y if k else X
            C = _W_L if k else _W_A
            w[R] -= w[A] * w[C]
            w[R + 3] -= w[A + 1] * w[C + 1]
            w[R + 5] -= w[A + 2] * w[C + 2]
            if full:
                w[R + 1] -= w[A] * w[C + 1]
                w[R + 2] -= w[A] * w[C + 2]
                w[R + 4] -= w[A + 1] * w[C + 2]
        w[fo + _F_RSS] = w[R] + w[R + 3] + w[R + 5]
        if w[fo + _F_RSS] < 0:
            w[fo + _F_RSS] = 0.0
        # the intercept c is needed for the best lag only: _intercept()
        return sh

    def _intercept(self, xy, fo):
        # gravity + bias of the fit at fo (xy: its axes): c = m + ref - X * ma - Y * ml
        w = self._w
        ma = w[_W_MA]
        ml = w[_W_ML]
        c = [0.0, 0.0, 0.0]
        ref = self._ref
        for j in range(3):
            c[j] = w[fo + _F_M + j] + ref[j] - (w[fo + _F_X + j] * ma if xy & _USE_A else 0.0) - (
                w[fo + _F_Y + j] * ml if xy & _USE_L else 0.0)
        return c

    def solve(self, up_still=None, min_pairs=10):
        """Best lag and the axes. up_still: unit 'up' from stopped windows (None: use the intercept).
        Sets fwd, up (unit vectors, box axes, new lists each solve), sigma_deg (1-sigma forward
        error), lag_ms, consistent (the longitudinal and lateral estimates agree, scales plausible);
        returns sigma_deg (-1 when not solvable)."""
        self.fwd = None
        self.sigma_deg = -1.0
        self.consistent = False
        if self.pairs < min_pairs:
            self.info = "pairs"
            return -1.0
        best = -1
        best_rss = 0.0
        sh = self._shared()
        w = self._w
        for li in range(self.nl):
            # every lag's rss, from its fit's diagonal into the second block (the best lag is fitted
            # in full below)
            if not self._fit(li, sh, _B1, False):
                self._rss[li] = -1.0
                continue
            r = w[_B1 + _F_RSS]
            self._rss[li] = r
            # compare lags by the residual per degree of freedom (the same pairs for every lag)
            if best < 0 or r < best_rss:
                best = li
                best_rss = r
        if best < 0:
            self.info = "excitation"
            return -1.0
        xy = self._fit(best, sh, _B0, True)   # the best lag's fit, kept in the first block
        rss = w[_B0 + _F_RSS]
        dof = w[_B0 + _F_DOF]
        self.lag_ms = best * LAG_STEP_MS
        if best == self.nl - 1 and self.nl > 1:
            # the best lag is the largest searched: the true one may lie beyond the bank
            self.info = "lag_edge"
            return -1.0
        up = up_still if up_still is not None else _unit(self._intercept(xy, _B0))
        if up is None or dof <= 0:
            self.info = "up"
            return -1.0
        up = self._dyn_up(xy, up)
        self.up = up
        var = self._combine(xy, _B0, up)
        if var < 0:
            self.info = "excitation"
            return -1.0
        ok = w[_W_OK] > 0
        fwd = [w[_W_F], w[_W_F + 1], w[_W_F + 2]]
        # lag uncertainty: every lag whose residual is within the noise of the best one
        # (likelihood-ratio chi2 < 4 on the residual per axis) is plausible; the angle between its
        # forward axis and the best lag's is added to the error
        s0 = rss / (3.0 * dof)
        spread = 0.0
        for li in range(self.nl):
            r = self._rss[li]
            if li == best or r < 0 or (r - rss) / s0 >= CHI2:
                continue
            if self._combine(self._fit(li, sh, _B1, True), _B1, up) >= 0:
                d = _angle(fwd[0], fwd[1], fwd[2], w[_W_F], w[_W_F + 1], w[_W_F + 2])
                if d > spread:
                    spread = d
        self.fwd = fwd
        self.fwd_sigma_deg = math.sqrt(math.degrees(math.sqrt(var)) ** 2 + (spread / 2) ** 2)
        # the forward axis classifies the events (a lateral leak into longitudinal grows with its
        # error); up's error (bias, up_sigma_deg) barely matters once the baselines take the offsets
        self.sigma_deg = self.fwd_sigma_deg
        self.consistent = ok
        self.info = "ok" if ok else "inconsistent"
        return self.sigma_deg

    def _quad(self, fo, v0, v1, v2):
        # v' Res v, Res the fit at fo's residual covariance (symmetric, upper triangle stored): the
        # same operations as _dot(v, [_dot(row, v) for each row]) on the full matrix
        w = self._w
        R = fo + _F_R
        d0 = w[R] * v0 + w[R + 1] * v1 + w[R + 2] * v2
        d1 = w[R + 1] * v0 + w[R + 3] * v1 + w[R + 4] * v2
        d2 = w[R + 2] * v0 + w[R + 4] * v1 + w[R + 5] * v2
        return v0 * d0 + v1 * d1 + v2 * d2

    def _dyn_up(self, xy, up0):
        # Gravity read while stopped (or the intercept) carries the sensor's bias: 40 mg, a LIS3DH's
        # typical zero-g offset, tilts it by 2.3 deg. The forward and left axes from the regression
        # are bias-free (the intercept takes the bias), so up = X x Y is too; the two are combined by
        # inverse variance (the bias as a 1.5 deg 1-sigma prior on the gravity direction: 26 mg).
        # The best fit's (_B0) X and Y; X x Y is made in the scratch (_W_T), not in float locals.
        w0 = 1.0 / (_BIAS_RAD * _BIAS_RAD)
        self.up_sigma_deg = math.degrees(_BIAS_RAD)
        if xy != _USE_A | _USE_L:
            return up0
        w = self._w
        X = _B0 + _F_X
        Y = _B0 + _F_Y
        nx = math.sqrt(w[X] * w[X] + w[X + 1] * w[X + 1] + w[X + 2] * w[X + 2])
        ny = math.sqrt(w[Y] * w[Y] + w[Y + 1] * w[Y + 1] + w[Y + 2] * w[Y + 2])
        if nx <= 0 or ny <= 0:
            return up0
        # u = unit(X x Y)
        T = _W_T
        w[T] = w[X + 1] * w[Y + 2] - w[X + 2] * w[Y + 1]
        w[T + 1] = w[X + 2] * w[Y] - w[X] * w[Y + 2]
        w[T + 2] = w[X] * w[Y + 1] - w[X + 1] * w[Y]
        nc = math.sqrt(w[T] * w[T] + w[T + 1] * w[T + 1] + w[T + 2] * w[T + 2])
        if nc <= 0:
            return up0
        for j in range(3):
            w[T + j] = w[T + j] / nc
        if w[T] * up0[0] + w[T + 1] * up0[1] + w[T + 2] * up0[2] < 0.9:
            return up0   # not a right-handed frame near gravity: leave it to the consistency check
        v = self._quad(_B0, up0[0], up0[1], up0[2]) / w[_B0 + _F_DOF]
        var = v * w[_B0 + _F_VX] / (nx * nx) + v * w[_B0 + _F_VY] / (ny * ny)
        w1 = 1.0 / var if var > 1e-8 else 1e8
        g = _unit([w0 * up0[0] + w1 * w[T], w0 * up0[1] + w1 * w[T + 1], w0 * up0[2] + w1 * w[T + 2]])
        if g is None:
            return up0
        self.up_sigma_deg = math.degrees(1.0 / math.sqrt(w0 + w1))
        return g

    def _combine(self, xy, fo, up):
        # forward from X and from Y x up of the fit at fo, by inverse variance: the unit forward
        # into the scratch (_W_F), ok into _W_OK (1.0 / 0.0); returns the variance (rad^2), -1.0
        # when there is no axis. The angle of an axis in the horizontal plane is disturbed by the
        # residual across it (in the plane): the vertical residual (road bumps) does not count.
        # The estimates (unit forward, variance rad^2, scale) are made in the scratch's _W_E rows.
        if not xy:
            return -1.0
        w = self._w
        dof = w[fo + _F_DOF]
        p0 = up[0]
        p1 = up[1]
        p2 = up[2]
        ne = 0
        if xy & _USE_A:
            # X made horizontal and unit (xu, in the first row)
            X = fo + _F_X
            e = _W_E
            d = w[X] * p0 + w[X + 1] * p1 + w[X + 2] * p2
            w[e] = w[X] - d * p0
            w[e + 1] = w[X + 1] - d * p1
            w[e + 2] = w[X + 2] - d * p2
            nx = math.sqrt(w[e] * w[e] + w[e + 1] * w[e + 1] + w[e + 2] * w[e + 2])
            if nx > 0:
                for j in range(3):
                    w[e + j] = w[e + j] / nx
                # across it: up x xu
                w[e + 3] = self._quad(fo, p1 * w[e + 2] - p2 * w[e + 1], p2 * w[e] - p0 * w[e + 2],
                                      p0 * w[e + 1] - p1 * w[e]) / dof * w[fo + _F_VX] / (nx * nx)
                w[e + 4] = nx
                ne = 1
        if xy & _USE_L:
            # Y made horizontal and unit (yu, in the next row), then the forward it gives: yu x up
            Y = fo + _F_Y
            e = _W_E + ne * _EF
            d = w[Y] * p0 + w[Y + 1] * p1 + w[Y + 2] * p2
            w[e] = w[Y] - d * p0
            w[e + 1] = w[Y + 1] - d * p1
            w[e + 2] = w[Y + 2] - d * p2
            ny = math.sqrt(w[e] * w[e] + w[e + 1] * w[e + 1] + w[e + 2] * w[e + 2])
            if ny > 0:
                for j in range(3):
                    w[e + j] = w[e + j] / ny
                c0 = w[e + 1] * p2 - w[e + 2] * p1
                c1 = w[e + 2] * p0 - w[e] * p2
                c2 = w[e] * p1 - w[e + 1] * p0
                nc = math.sqrt(c0 * c0 + c1 * c1 + c2 * c2)
                if nc <= 0:
                    return -1.0   # (a unit vector cannot lie along up once made horizontal)
                w[e + 3] = self._quad(fo, c0, c1, c2) / dof * w[fo + _F_VY] / (ny * ny)
                w[e] = c0 / nc
                w[e + 1] = c1 / nc
                w[e + 2] = c2 / nc
                w[e + 4] = ny
                ne += 1
        if not ne:
            return -1.0
        wt = 0.0
        f0 = 0.0
        f1 = 0.0
        f2 = 0.0
        ok = True
        n_low = 0
        for i in range(ne):
            e = _W_E + i * _EF
            var = w[e + 3]
            sc = w[e + 4]
            if var <= 0:
                var = 1e-8
            if sc > 1.6 and var < 0.03:
                ok = False   # a well-determined scale no real accelerometer has: wrong model
            if sc < 0.6 and var < 0.03:
                # attenuated: its GNSS regressor is mostly noise (errors in variables: the course rate
                # in an urban canyon shrinks the lateral scale to 0.2). It does not steer the axis, and
                # the other estimate must carry it; it still checks against a swap below.
                n_low += 1
                continue
            wi = 1.0 / var
            wt += wi
            f0 += wi * w[e]
            f1 += wi * w[e + 1]
            f2 += wi * w[e + 2]
        if n_low == ne:
            ok = False   # nothing but attenuated estimates: no axis
            for i in range(ne):
                e = _W_E + i * _EF
                var = w[e + 3]
                wi = 1.0 / (var if var > 0 else 1e-8)
                wt += wi
                f0 += wi * w[e]
                f1 += wi * w[e + 1]
                f2 += wi * w[e + 2]
        if ne == 2:
            # a forward/lateral swap, or a wrong lag, makes the two estimates disagree
            e = _W_E + _EF
            d = _angle(w[_W_E], w[_W_E + 1], w[_W_E + 2], w[e], w[e + 1], w[e + 2])
            if d > 3.0 * math.degrees(math.sqrt(w[_W_E + 3] + w[e + 3])) + 3.0:
                ok = False
        # fwd = unit(horiz(f, up))
        d = f0 * p0 + f1 * p1 + f2 * p2
        h0 = f0 - d * p0
        h1 = f1 - d * p1
        h2 = f2 - d * p2
        nf = math.sqrt(h0 * h0 + h1 * h1 + h2 * h2)
        if nf <= 0:
            return -1.0
        w[_W_F] = h0 / nf
        w[_W_F + 1] = h1 / nf
        w[_W_F + 2] = h2 / nf
        w[_W_OK] = 1.0 if ok else 0.0
        return 1.0 / wt
