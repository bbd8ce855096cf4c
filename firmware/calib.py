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
# 1-sigma tilt of gravity read through an unknown sensor bias (50 mg: phone-class parts reach 80)
_BIAS_RAD = 0.05
_EXC_MG2 = 400.0   # a regressor needs a spread of >= 20 mg rms over the pairs to be informative


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a, b):
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _unit(v):
    n = math.sqrt(_dot(v, v))
    if n <= 0:
        return None
    return [v[0] / n, v[1] / n, v[2] / n]


def _horiz(v, up):
    d = _dot(v, up)
    return [v[0] - d * up[0], v[1] - d * up[1], v[2] - d * up[2]]


def _quad(M, v):
    return _dot(v, [_dot(M[0], v), _dot(M[1], v), _dot(M[2], v)])


def angle_deg(a, b):
    na = math.sqrt(_dot(a, a))
    nb = math.sqrt(_dot(b, b))
    if na <= 0 or nb <= 0:
        return 180.0
    c = _dot(a, b) / (na * nb)
    c = 1.0 if c > 1.0 else (-1.0 if c < -1.0 else c)
    return math.degrees(math.acos(c))


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
        # what every lag's fit shares: the count and the GNSS regressors' moments (lag 0's slots),
        # and which regressors are informative. None: no lag is solvable.
        s = self._s
        n = s[_S_N]
        if n < 6:
            return None
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
            return None
        return n, ma, ml, nma, nml, caa, cal, cll, use_a, use_l, det

    def _fit(self, li, sh):
        # -> (X, Y, c, rss, dof, var_x, var_y, res, mm, ma, ml) for lag index li (sh: _shared());
        # X or Y None when not informative
        if sh is None:
            return None
        n, ma, ml, nma, nml, caa, cal, cll, use_a, use_l, det = sh
        s = self._s
        o = li * _NL
        m0 = s[o + _S_M] / n
        m1 = s[o + _S_M + 1] / n
        m2 = s[o + _S_M + 2] / n
        mm = [m0, m1, m2]
        q = o + _S_AM
        cam = [s[q] - nma * m0, s[q + 1] - nma * m1, s[q + 2] - nma * m2]
        q = o + _S_LM
        clm = [s[q] - nml * m0, s[q + 1] - nml * m1, s[q + 2] - nml * m2]
        q = o + _S_MM
        n0 = n * m0
        n1 = n * m1
        # Cmm, upper triangle (rows 0, 1, 2)
        r00 = s[q] - n0 * m0
        r01 = s[q + 3] - n0 * m1
        r02 = s[q + 4] - n0 * m2
        r11 = s[q + 1] - n1 * m1
        r12 = s[q + 5] - n1 * m2
        r22 = s[q + 2] - n * m2 * m2
        X = Y = None
        vx = vy = 0.0
        if use_a and use_l:
            X = [(cll * cam[0] - cal * clm[0]) / det, (cll * cam[1] - cal * clm[1]) / det,
                 (cll * cam[2] - cal * clm[2]) / det]
            Y = [(caa * clm[0] - cal * cam[0]) / det, (caa * clm[1] - cal * cam[1]) / det,
                 (caa * clm[2] - cal * cam[2]) / det]
            k = 3
            vx = cll / det
            vy = caa / det
        elif use_a:
            X = [cam[0] / caa, cam[1] / caa, cam[2] / caa]
            k = 2
            vx = 1.0 / caa
        else:
            Y = [clm[0] / cll, clm[1] / cll, clm[2] / cll]
            k = 2
            vy = 1.0 / cll
        # residual covariance (symmetric): Cmm - X Cam' - Y Clm', entry (i, j) for j >= i
        if X is not None:
            x0 = X[0]
            x1 = X[1]
            r00 -= x0 * cam[0]
            r01 -= x0 * cam[1]
            r02 -= x0 * cam[2]
            r11 -= x1 * cam[1]
            r12 -= x1 * cam[2]
            r22 -= X[2] * cam[2]
        if Y is not None:
            y0 = Y[0]
            y1 = Y[1]
            r00 -= y0 * clm[0]
            r01 -= y0 * clm[1]
            r02 -= y0 * clm[2]
            r11 -= y1 * clm[1]
            r12 -= y1 * clm[2]
            r22 -= Y[2] * clm[2]
        res = [[r00, r01, r02], [r01, r11, r12], [r02, r12, r22]]
        rss = r00 + r11 + r22
        if rss < 0:
            rss = 0.0
        # the intercept c is needed for the best lag only: _intercept(fit) from (mm, ma, ml)
        return X, Y, None, rss, n - k, vx, vy, res, mm, ma, ml

    def _rss_of(self, li, sh):
        # _fit(li, sh)[3] alone: the trace of the residual covariance (its diagonal only, each
        # entry by the same operations as in _fit, so the same float); None when not solvable
        if sh is None:
            return None
        n, ma, ml, nma, nml, caa, cal, cll, use_a, use_l, det = sh
        s = self._s
        o = li * _NL
        m0 = s[o + _S_M] / n
        m1 = s[o + _S_M + 1] / n
        m2 = s[o + _S_M + 2] / n
        q = o + _S_AM
        a0 = s[q] - nma * m0
        a1 = s[q + 1] - nma * m1
        a2 = s[q + 2] - nma * m2
        q = o + _S_LM
        l0 = s[q] - nml * m0
        l1 = s[q + 1] - nml * m1
        l2 = s[q + 2] - nml * m2
        q = o + _S_MM
        r00 = s[q] - n * m0 * m0
        r11 = s[q + 1] - n * m1 * m1
        r22 = s[q + 2] - n * m2 * m2
        if use_a and use_l:
            r00 -= (cll * a0 - cal * l0) / det * a0
            r11 -= (cll * a1 - cal * l1) / det * a1
            r22 -= (cll * a2 - cal * l2) / det * a2
            r00 -= (caa * l0 - cal * a0) / det * l0
            r11 -= (caa * l1 - cal * a1) / det * l1
            r22 -= (caa * l2 - cal * a2) / det * l2
        elif use_a:
            r00 -= a0 / caa * a0
            r11 -= a1 / caa * a1
            r22 -= a2 / caa * a2
        else:
            r00 -= l0 / cll * l0
            r11 -= l1 / cll * l1
            r22 -= l2 / cll * l2
        rss = r00 + r11 + r22
        if rss < 0:
            rss = 0.0
        return rss

    def _intercept(self, fit):
        X, Y = fit[0], fit[1]
        mm, ma, ml = fit[8], fit[9], fit[10]
        c = [0.0, 0.0, 0.0]
        ref = self._ref
        for j in range(3):
            c[j] = mm[j] + ref[j] - (X[j] * ma if X else 0.0) - (Y[j] * ml if Y else 0.0)
        return c

    def solve(self, up_still=None, min_pairs=10):
        """Best lag and the axes. up_still: unit 'up' from stopped windows (None: use the intercept).
        Sets fwd, up (unit vectors, box axes), sigma_deg (1-sigma forward error), lag_ms,
        consistent (the longitudinal and lateral estimates agree, scales plausible); returns
        sigma_deg (-1 when not solvable)."""
        self.fwd = None
        self.sigma_deg = -1.0
        self.consistent = False
        if self.pairs < min_pairs:
            self.info = "pairs"
            return -1.0
        best = -1
        best_rss = 0.0
        fits = None
        sh = self._shared()
        for li in range(self.nl):
            r = self._rss_of(li, sh)
            if r is None:
                self._rss[li] = -1.0
                continue
            self._rss[li] = r
            # compare lags by the residual per degree of freedom (the same pairs for every lag)
            if best < 0 or r < best_rss:
                best = li
                best_rss = r
        if best < 0:
            self.info = "excitation"
            return -1.0
        fits = self._fit(best, sh)   # the whole fit for the best lag only
        X, Y, _c, rss, dof, vx, vy, res = fits[:8]
        self.lag_ms = best * LAG_STEP_MS
        if best == self.nl - 1 and self.nl > 1:
            # the best lag is the largest searched: the true one may lie beyond the bank
            self.info = "lag_edge"
            return -1.0
        up = up_still if up_still is not None else _unit(self._intercept(fits))
        if up is None or dof <= 0:
            self.info = "up"
            return -1.0
        up = self._dyn_up(X, Y, res, dof, vx, vy, up)
        self.up = up
        comb = self._combine(fits, up)
        if comb is None:
            self.info = "excitation"
            return -1.0
        fwd, var, ok = comb
        # lag uncertainty: every lag whose residual is within the noise of the best one
        # (likelihood-ratio chi2 < 4 on the residual per axis) is plausible; the angle between its
        # forward axis and the best lag's is added to the error
        s0 = rss / (3.0 * dof)
        spread = 0.0
        for li in range(self.nl):
            r = self._rss[li]
            if li == best or r < 0 or (r - rss) / s0 >= CHI2:
                continue
            other = self._combine(self._fit(li, sh), up)
            if other is not None:
                d = angle_deg(fwd, other[0])
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

    def _dyn_up(self, X, Y, res, dof, vx, vy, up0):
        # Gravity read while stopped (or the intercept) carries the sensor's bias: 40 mg, a LIS3DH's
        # typical zero-g offset, tilts it by 2.3 deg. The forward and left axes from the regression
        # are bias-free (the intercept takes the bias), so up = X x Y is too; the two are combined by
        # inverse variance (the bias as a 1.5 deg 1-sigma prior on the gravity direction: 26 mg).
        w0 = 1.0 / (_BIAS_RAD * _BIAS_RAD)
        self.up_sigma_deg = math.degrees(_BIAS_RAD)
        if X is None or Y is None:
            return up0
        nx = math.sqrt(_dot(X, X))
        ny = math.sqrt(_dot(Y, Y))
        if nx <= 0 or ny <= 0:
            return up0
        u = _unit(_cross(X, Y))
        if u is None or _dot(u, up0) < 0.9:
            return up0   # not a right-handed frame near gravity: leave it to the consistency check
        v = _quad(res, up0) / dof
        var = v * vx / (nx * nx) + v * vy / (ny * ny)
        w1 = 1.0 / var if var > 1e-8 else 1e8
        g = _unit([w0 * up0[j] + w1 * u[j] for j in range(3)])
        if g is None:
            return up0
        self.up_sigma_deg = math.degrees(1.0 / math.sqrt(w0 + w1))
        return g

    def _combine(self, fits, up):
        # forward from X and from Y x up, by inverse variance -> (unit fwd, variance rad^2, ok).
        # The angle of an axis in the horizontal plane is disturbed by the residual across it (in
        # the plane): the vertical residual (road bumps) does not count.
        X, Y, _c, rss, dof, vx, vy, res = fits[:8]
        ests = []            # (unit forward, variance rad^2, scale)
        if X is not None:
            xh = _horiz(X, up)
            nx = math.sqrt(_dot(xh, xh))
            if nx > 0:
                xu = _unit(xh)
                ests.append((xu, _quad(res, _cross(up, xu)) / dof * vx / (nx * nx), nx))
        if Y is not None:
            yh = _horiz(Y, up)
            ny = math.sqrt(_dot(yh, yh))
            if ny > 0:
                yu = _unit(yh)
                yx = _cross(yu, up)
                ests.append((_unit(yx), _quad(res, yx) / dof * vy / (ny * ny), ny))
        if not ests:
            return None
        w = 0.0
        f = [0.0, 0.0, 0.0]
        ok = True
        n_low = 0
        for u, var, sc in ests:
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
            w += wi
            for j in range(3):
                f[j] += wi * u[j]
        if n_low == len(ests):
            ok = False   # nothing but attenuated estimates: no axis
            for u, var, sc in ests:
                wi = 1.0 / (var if var > 0 else 1e-8)
                w += wi
                for j in range(3):
                    f[j] += wi * u[j]
        if len(ests) == 2:
            # a forward/lateral swap, or a wrong lag, makes the two estimates disagree
            d = angle_deg(ests[0][0], ests[1][0])
            if d > 3.0 * math.degrees(math.sqrt(ests[0][1] + ests[1][1])) + 3.0:
                ok = False
        fwd = _unit(_horiz(f, up))
        if fwd is None:
            return None
        return fwd, 1.0 / w, ok
