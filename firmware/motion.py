# Motion on the box: mount auto-calibration, harsh events and crash detection.
#
# Three units (see docs/motion.md): this one, the feed loop and its state; firmware/calib.py, the mount
# calibration (lag bank); firmware/classify.py, the classification of what was held while uncalibrated.
# - feed(): the per-sample hot path. Integers only, preallocated arrays only, no allocation
#   (proved under micropython.heap_lock() by tests/mp/mp_motion.py). It low-passes the samples,
#   rotates them into the vehicle frame with an integer Q14 matrix, runs the event state machines,
#   the crash detector and its pre-trigger ring, and sums 250 ms windows for the calibration.
#   Whatever it finds is written into preallocated int queues.
# - poll() / on_fix(): not hot (called after each FIFO read and at the GNSS rate). They drain the
#   queues, update the calibration with floats, and emit events as dicts through on_event.
#   Events are emitted ONLY from poll() and on_fix(), never from feed().
import math

from firmware.calib import LagCalib, angle_deg
from hw.compat import byte_view, bytes_of, const, zeros

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(calib_forget_pairs=0, calib_lag_max_ms=0, calib_min_quality=0, calibrating=0,
         corner_min_speed_kmh=0, crash_min_ms=0, crash_post_ms=0, crash_pre_ms=0, crash_threshold_mg=0,
         explained_by_gnss=0, harsh_accel_mps2=0, harsh_brake_mps2=0, harsh_corner_mps2=0, harsh_hyst_pct=0,
         harsh_lp_hz=0, harsh_max_dur_ms=0, harsh_min_dur_ms=0, harsh_min_speed_kmh=0, held_overflow=0,
         moving_act_mg=0, recalibrations=0, speed_end_mmps=0, speed_start_mmps=0, uncalibrated=0,
         windows_dropped=0)

# event kind codes in the queue
_K_ACCEL = const(1)
_K_BRAKE = const(2)
_K_LEFT = const(3)
_K_RIGHT = const(4)
_K_CAND = const(5)   # candidate seen before calibration: box-frame vectors, classified later

KIND_NAMES = ("", "harsh_accel", "harsh_brake", "harsh_corner_left", "harsh_corner_right", "unclassified")

# event queue record layout (ints)
_Q_KIND = const(0)
_Q_T = const(1)
_Q_DUR = const(2)
_Q_PEAK = const(3)
_Q_MEAN = const(4)
_Q_SP0 = const(5)
_Q_SP1 = const(6)
_Q_LAT = const(7)
_Q_LON = const(8)
_Q_CRS = const(9)
_Q_MB = const(10)    # mean box-frame horizontal vector (3), candidates only
_Q_PB = const(13)    # peak box-frame horizontal vector (3), candidates only
_Q_SEEN = const(10)  # GNSS-only records: 1 when the accelerometer watched the whole manoeuvre (gravity known)
_Q_G0 = const(11)    # GNSS-only records: start and end of the speed change on the GNSS time line
_Q_G1 = const(12)
_QF = const(16)
_QN = const(8)       # queue slots

# channel state layout (two channels: 0 longitudinal / calibrating magnitude, 1 lateral)
_C_ACT = const(0)    # 0 idle, +1/-1 active with that sign
_C_T0 = const(1)
_C_N = const(2)
_C_SUM = const(3)
_C_PEAK = const(4)
_C_SP0 = const(5)
_C_LAT = const(6)
_C_LON = const(7)
_C_CRS = const(8)
_C_SVX = const(9)
_C_SVY = const(10)
_C_PVX = const(11)
_C_PVY = const(12)
_C_LAST = const(13)  # time of the last sample above the off threshold
_CF = const(14)
# candidates (calibrating) use channel 0 and these slots, unused then: the time of the peak (in place
# of _C_SUM) and the horizontal vector at the start (channel 1's _C_SVX/_C_SVY; channel 1 is idle)
_C_TPK = const(3)
_C_SX0 = const(23)
_C_SY0 = const(24)

# window queue layout: t_end, sx, sy, sz, activity, n
_WF = const(6)
# 16 windows (4 s): poll() drains them after every feed() of a FIFO read (at most 32 samples, 1-2 windows
# at 100 Hz); the queue only bridges a caller that polls late (counters['windows_dropped'] beyond that).
# It was 64 (16 s, 1.1 KB more heap) for no caller that needs it.
_WN = const(16)
_SPN = const(24)     # stopped windows waiting for the fixes (6 s)
_SPF = const(5)      # their rows: t_end, sx, sy, sz, n
# fix history: a ring of _FHN (t_ms, speed_mmps) int pairs, then its count and oldest pair's index
_FHN = const(40)
_FHC = const(80)     # = 2 * _FHN
_FHH = const(81)

_MG_PER_MPS2 = 1000.0 / 9.80665
_PAIR_MIN_MS = const(950)    # forward regression baseline between fixes (any fix rate)
_PAIR_MAX_MS = const(2500)   # longer gaps restart the baseline
_LOW_MIN_PAIRS = const(8)    # pairs at speed before one below 2 m/s (a stop, a launch) is taken
_Q14 = const(16384)
_QUIET_Q8 = const(80 << 8)  # baseline band: 80 mg
_CLIP = const(16000)   # LIS3DH full scale at +-16 g: keeps every product a small int on 32-bit ports

# crash confirmation (speeds from the GNSS fixes around the impact, mm/s and ms)
_CONFIRM_BEFORE_MS = const(2500)   # the last fix at most this long before the impact gives the speed before
_CONFIRM_SETTLE_MS = const(1000)   # fixes this soon after it may still carry the speed before (receiver lag)
# fixes from then up to this long after it (= the post-trigger window) give the speed after
_CONFIRM_AFTER_MS = const(5000)
_CONFIRM_REST_MMPS = const(2000)   # slower than 2 m/s before the impact: standing (fitting, parked)
_CONFIRM_STOP_MMPS = const(1500)   # after: the car stopped
_CONFIRM_DV_MMPS = const(2500)     # or its speed changed by >= 2.5 m/s (9 km/h) ...; or by >= 40 %

# settings (ints, fixed at init) in one array, Motion._p: one attribute, not 23 (the instance dict
# of <= 73 names fits a 73-slot table, 1168 B, not 97 slots, 1552 B, and the rehash at boot)
_P_THR_ACC = const(0)
_P_THR_BRK = const(1)
_P_THR_COR = const(2)
_P_OFF_ACC = const(3)
_P_OFF_BRK = const(4)
_P_OFF_COR = const(5)
_P_THR_MIN2 = const(6)
_P_OFF_MIN2 = const(7)
_P_GATE_LONG = const(8)
_P_GATE_COR = const(9)
_P_MIN_DUR = const(10)
_P_MAX_DUR = const(11)
_P_K = const(12)
_P_KB = const(13)
_P_CTHR2 = const(14)
_P_CMIN_N = const(15)
_P_POST_N = const(16)
_P_RING_N = const(17)
_P_CALIB_MIN_Q = const(18)
_P_KNOCK_WINDOWS = const(19)
_P_STILL_MMPS = const(20)
_P_MOVING_ACT = const(21)
_P_WIN_N = const(22)
_PN = const(23)

# crash detector states
_CR_ARMED = const(0)
_CR_POST = const(1)
_CR_READY = const(2)   # ring frozen, waiting for poll() to build the record
_CR_REARM = const(3)   # waiting for the magnitude to drop below the threshold

DEFAULTS = {
    "harsh_accel_mps2": 2.5,
    "harsh_brake_mps2": 2.7,
    "harsh_corner_mps2": 3.4,
    "harsh_min_speed_kmh": 10,
    "corner_min_speed_kmh": 30,
    "harsh_min_dur_ms": 500,
    "harsh_max_dur_ms": 15000,
    "harsh_hyst_pct": 80,
    "harsh_lp_hz": 2,
    "crash_threshold_mg": 3000,
    "crash_min_ms": 30,
    "crash_pre_ms": 5000,
    "crash_post_ms": 5000,
    "calib_min_quality": 60,
    "knock_deg": 15,
    "knock_ms": 2000,
    "still_mmps": 500,
    "moving_act_mg": 40,
    "calib_lag_max_ms": 2500,
    "calib_forget_pairs": 600,
}


def _norm(v):
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    if n <= 0:
        return None
    return [v[0] / n, v[1] / n, v[2] / n]


def _fho(fh, j):
    # offset of the fix history's j-th pair (0: the oldest)
    return 2 * ((fh[_FHH] + j) % _FHN)


def _wrap180(d):
    while d > 180.0:
        d -= 360.0
    while d < -180.0:
        d += 360.0
    return d


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a, b):
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


class Motion:
    def __init__(self, rate_hz=100, cfg=None, on_event=None, state=None):
        if not isinstance(rate_hz, int) or rate_hz < 10 or rate_hz > 1000:
            raise ValueError("rate_hz: expected an int in 10..1000, got %r" % (rate_hz,))
        from array import array

        # every name first: the attribute table grows to its final 73 slots now, before the buffers (its
        # outgrown tables are freed here, not left as holes between Motion's long-lived blocks). The
        # instance dict holds 71 names in its 73-slot table (1168 B on the 64-bit VM); a 74th grows it to
        # 97 slots (1552 B, both tables live at once during the rehash, at boot): settings go into _p,
        # state into an array, values only the setup reads are its locals
        self._R = self._anchor = self._base = self._basis_g = self._ccrs = self._cdur_n = self._ch = None
        self._clat = self._clon = self._cmiss = self._cover = self._cpeak2 = self._cpost = None
        self._cpost_done = self._crs = self._csp0 = self._csp1 = self._cst = self._ct0 = None
        self._cvalid = self._evq = self._evq_head = self._evq_n = self._fh = self._filled = self._g = None
        self._ga = self._ga_n = self._gdrive = self._gdrive_n = self._gh = self._gs = self._gs_n = None
        self._gspan = self._gvec = self._gx = self._held = self._knock_deg = self._knock_n = None
        self._lat = self._lc = self._lon = self._lp = self._mode = self._p = self._prev_fix = None
        self._restored_q = self._ring = self._rp = self._solved = self._sp_h = self._sp_n = None
        self._spd = self._spd_slope = self._spd_t = self._spq = self._t_feed = self._w = self._wq = None
        self._wq_head = self._wq_n = self._xvec = self.calib_commit = self.calib_err_deg = None
        self.calib_lag_ms = self.calib_quality = self.calib_state = self.counters = self.moving = None
        self.on_event = self.rate_hz = None
        self.rate_hz = rate_hz
        self.on_event = on_event
        self.counters = {"shocks": 0, "queue_full": 0, "held_overflow": 0, "too_long": 0, "gated": 0,
                         "weak": 0, "recalibrations": 0, "knocks": 0, "windows_dropped": 0,
                         "fix_pairs": 0, "gnss_only": 0, "explained_by_gnss": 0}
        # the settings (boot-only code, firmware/motion_setup.py: loaded for this and unloaded after)
        import sys

        from firmware import motion_setup as ms

        p = self._p = zeros("i", _PN)
        lag_max_ms, forget_pairs = ms.settings(self, p, rate_hz, cfg)

        # --- hot-path state (all preallocated) ---
        # the crash ring first (6 KB at 100 Hz: the largest block Motion needs, before its small ones
        # and before the lag bank's: grown 512 B at a time, it needs free heap after it)
        self._ring = zeros("h", 3 * p[_P_RING_N])  # no list of n ints, no n-byte zero buffer first
        self._lc = LagCalib(lag_max_ms, forget_pairs)
        # firmware/classify.py loads with the first Motion, after the ring (a module's load leaves
        # garbage, holes the ring's growth would not pass): a box without an accelerometer never
        # classifies anything and does not carry it on its heap (its users import it where they
        # call it: no global)
        from firmware import classify  # noqa: F401
        self._lp = array("i", [0] * (7))              # two-stage IIR, Q8: s1 x,y,z, s2 x,y,z; [6]: 1 seeded
        self._R = array("i", [0] * (9))               # rows: vehicle x, y, z in box axes, Q14
        self._g = array("i", [0] * (3))               # gravity (mg, box axes) for the crash magnitude
        # Q8 baselines of the two channels (slope, camber); [2]: box ms since which candidates are detected
        # without a break (-1 none; a slot here, not an attribute: one name less on the box's heap)
        self._base = array("i", [0, 0, -1])
        self._mode = 0                        # 0 no gravity, 1 gravity only (candidates), 2 calibrated
        self._ch = zeros("i", 2 * _CF)
        self._evq = zeros("i", _QN * _QF)
        self._evq_head = 0
        self._evq_n = 0
        self._rp = 0                          # next write index (samples)
        self._filled = 0
        self._cst = _CR_ARMED
        self._cover = 0
        self._cmiss = 0
        self._ct0 = 0
        self._cpeak2 = 0
        self._cpost = 0
        self._cdur_n = 0
        self._csp0 = -1
        self._csp1 = -1
        self._clat = 0
        self._clon = 0
        self._ccrs = -1
        self._cvalid = 0
        self._cpost_done = 0
        p[_P_WIN_N] = max(1, rate_hz // 4)
        # sx, sy, sz, act, n of the open window; [5], [6]: windows in a row above / below the moving level
        self._w = array("i", [0] * (7))
        self._wq = zeros("i", _WN * _WF)  # grown in place: no list of n ints, no zero buffer first
        self._wq_head = 0
        self._wq_n = 0
        self.moving = -1
        # latest fix, read by the hot path
        self._spd = -1
        self._spd_t = 0
        self._spd_slope = 0         # mm/s per s between the last two fixes
        self._lat = 0
        self._lon = 0
        self._crs = -1

        # --- calibration (floats, not hot) ---
        self.calib_state = "uncalibrated"
        self.calib_quality = 0
        self.calib_err_deg = -1.0   # estimated 1-sigma error of the forward axis
        self._held = []             # candidates waiting for calibration (max _QN)
        self._gh = []               # GNSS-only harsh events waiting for calibration (max _QN)
        self._gx = None             # GNSS-only event under way (see _gnss_harsh)
        self._gspan = []            # (t0, t1) of the GNSS-only events of this trip (max _QN)
        # stopped windows waiting for the fixes to confirm: a ring of _SPN rows (t_end, sx, sy, sz, n)
        self._spq = zeros("i", _SPF * _SPN)
        self._reset_calib()
        self._prev_fix = None       # (t_ms, speed_mmps, course_cdeg)
        # recent valid fixes (t_ms, speed_mmps), >= ~0.45 s apart: the last _FHN in a ring of ints
        # (330 B; a list of 40 tuples was ~1.8 KB)
        self._fh = zeros("i", 2 * _FHN + 2)
        self._t_feed = 0            # box time of the end of the last feed() chunk
        if state:
            ms.restore(self, state)
        del ms
        del sys.modules["firmware.motion_setup"]
        import firmware

        del firmware.motion_setup

    # ------------------------------------------------------------------ calibration state
    def _reset_calib(self):
        self._gs = [0.0, 0.0, 0.0]   # sum of still window means
        self._gs_n = 0
        self._ga = [0.0, 0.0, 0.0]   # sum of all window means
        self._ga_n = 0
        self._gdrive = None          # slow EMA of driving windows (mismatch check)
        self._gdrive_n = 0
        self._gvec = None            # unit gravity ("up") in box axes
        self._xvec = None            # unit forward in box axes
        self._basis_g = None         # gravity the current R was built with
        self._knock_n = 0
        self._anchor = None          # (t_ms, speed_mmps, course_cdeg) opening the baseline
        self._solved = -1
        self._sp_h = 0               # stopped windows waiting (ring _spq): oldest row, rows held
        self._sp_n = 0
        self._lc.reset()             # lag bank of forward/lateral regressions (firmware/calib.py)
        self.calib_lag_ms = -1
        self.calib_commit = None     # (t_ms, sigma_deg, lag_ms) of the last commit
        self._restored_q = 0

    def state(self):
        """Persistable dict of ints and strings."""
        return {"v": 1, "calib_state": self.calib_state, "quality": self.calib_quality,
                "R": list(self._R), "recal": self.counters["recalibrations"]}

    def _set_R(self, xv, gv, mode):
        if xv is None:
            # arbitrary horizontal basis for candidate detection
            ref = [1.0, 0.0, 0.0]
            if abs(gv[0]) > 0.7:
                ref = [0.0, 1.0, 0.0]
            xv = _norm(_cross(_cross(gv, ref), gv))
        else:
            xv = _norm([xv[i] - _dot(xv, gv) * gv[i] for i in range(3)])
        yv = _cross(gv, xv)
        R = self._R
        for j in range(3):
            R[j] = int(round(xv[j] * _Q14))
            R[3 + j] = int(round(yv[j] * _Q14))
            R[6 + j] = int(round(gv[j] * _Q14))
            self._g[j] = int(round(gv[j] * 1000))
        if mode != self._mode or self._basis_g is None or angle_deg(self._basis_g, gv) > 1.0:
            if self._base[2] < 0 or self._ch[_C_ACT] != 0 or self._ch[_CF + _C_ACT] != 0:
                # the accelerometer's watch (re)starts: a manoeuvre under way is lost with the reset
                self._base[2] = self._t_feed
            self._base[0] = 0
            self._base[1] = 0
            for i in range(2 * _CF):
                self._ch[i] = 0
        self._basis_g = gv
        self._mode = mode

    def _recalibrate(self, seed):
        self.counters["recalibrations"] += 1
        self._reset_calib()
        self._mode = 0
        self._base[2] = -1
        for i in range(2 * _CF):
            self._ch[i] = 0
        self.calib_state = "uncalibrated"
        self.calib_quality = 0
        self.calib_err_deg = -1.0
        if seed is not None:
            self._gs = [seed[0], seed[1], seed[2]]
            self._gs_n = 1

    # ------------------------------------------------------------------ hot path
    def feed(self, t0_ms, xyz_mg, n):
        """n samples (x,y,z interleaved, mg, box axes) from t0_ms, spaced 1000/rate_hz ms.
        Integer-only, allocation-free. Emits nothing: call poll() (or on_fix) afterwards."""
        rate = self.rate_hz
        k = self._p[_P_K]
        kb = self._p[_P_KB]
        lp = self._lp
        self._t_feed = t0_ms + n * 1000 // rate
        if not lp[6] and n > 0:
            for j in range(3):
                v = xyz_mg[j]
                lp[j] = v << 8
                lp[3 + j] = v << 8
            lp[6] = 1
        # per-sample state in locals (attribute and array reads cost more than the arithmetic);
        # written back after the loop, and the window sums before _close_window reads them
        s1x = lp[0]
        s1y = lp[1]
        s1z = lp[2]
        s2x = lp[3]
        s2y = lp[4]
        s2z = lp[5]
        R = self._R
        r0 = R[0]
        r1 = R[1]
        r2 = R[2]
        r3 = R[3]
        r4 = R[4]
        r5 = R[5]
        g = self._g
        gx = g[0]
        gy = g[1]
        gz = g[2]
        mode = self._mode
        ring = self._ring
        rp = self._rp
        ring_n = self._p[_P_RING_N]
        rlen = 3 * ring_n
        filled = self._filled
        cthr2 = self._p[_P_CTHR2]
        cst = self._cst
        w = self._w
        wn = self._p[_P_WIN_N]
        wx = w[0]
        wy = w[1]
        wz = w[2]
        wa = w[3]
        wc = w[4]
        base = self._base
        b0 = base[0]
        b1 = base[1]
        ch = self._ch
        act0 = ch[_C_ACT]         # the channels' active flags, read again after _channel/_candidate
        act1 = ch[_CF + _C_ACT]
        cover = self._cover
        # an idle channel stays idle below its start thresholds: _channel / _candidate are only
        # called when they have something to do
        on_acc = self._p[_P_THR_ACC]
        on_brk = -self._p[_P_THR_BRK]
        on_cor = self._p[_P_THR_COR]
        on_cor_n = -on_cor
        thr_min2 = self._p[_P_THR_MIN2]
        for i in range(n):
            j = 3 * i
            x = xyz_mg[j]
            y = xyz_mg[j + 1]
            z = xyz_mg[j + 2]
            if x > _CLIP:
                x = _CLIP
            elif x < -_CLIP:
                x = -_CLIP
            if y > _CLIP:
                y = _CLIP
            elif y < -_CLIP:
                y = -_CLIP
            if z > _CLIP:
                z = _CLIP
            elif z < -_CLIP:
                z = -_CLIP
            t = t0_ms + (i * 1000) // rate
            # --- crash: pre-trigger ring and raw dynamic magnitude
            if cst != _CR_READY:
                ring[rp] = x
                ring[rp + 1] = y
                ring[rp + 2] = z
                rp += 3
                if rp >= rlen:
                    rp = 0
                if filled < ring_n:
                    filled += 1
            dx = x - gx
            dy = y - gy
            dz = z - gz
            m2 = dx * dx + dy * dy + dz * dz
            if cst == _CR_ARMED:
                if m2 >= cthr2:
                    if cover == 0:
                        self._ct0 = t
                        self._cpeak2 = 0
                        self._csp0 = self._speed_at(t)
                    cover += 1
                    self._cover = cover
                    self._cmiss = 0
                    if m2 > self._cpeak2:
                        self._cpeak2 = m2
                    if cover >= self._p[_P_CMIN_N]:
                        # trigger: keep post_n more samples, then freeze the ring
                        self._cst = cst = _CR_POST
                        self._cpost = self._p[_P_POST_N]
                        self._cpost_done = self._p[_P_POST_N]
                        self._cdur_n = cover
                        self._clat = self._lat
                        self._clon = self._lon
                        self._ccrs = self._crs
                        # samples before the trigger that the ring will still hold
                        self._cvalid = filled + self._p[_P_POST_N]
                        if self._cvalid > ring_n:
                            self._cvalid = ring_n
                elif cover:
                    self._cmiss += 1
                    if self._cmiss > 1:
                        self._cover = cover = 0
            elif cst == _CR_POST:
                if m2 >= cthr2:
                    self._cdur_n += 1
                    if m2 > self._cpeak2:
                        self._cpeak2 = m2
                self._cpost -= 1
                if self._cpost <= 0:
                    self._cst = cst = _CR_READY
                    self._csp1 = self._speed_at(t)
            elif cst == _CR_REARM:
                if m2 < cthr2:
                    self._cst = cst = _CR_ARMED
                    self._cover = cover = 0
            # --- two-stage low-pass (Q8)
            s1x += ((x << 8) - s1x) >> k
            s1y += ((y << 8) - s1y) >> k
            s1z += ((z << 8) - s1z) >> k
            s2x += (s1x - s2x) >> k
            s2y += (s1y - s2y) >> k
            s2z += (s1z - s2z) >> k
            fx = s2x >> 8
            fy = s2y >> 8
            fz = s2z >> 8
            # --- calibration window sums and activity (|x - fx| + ..., without abs() calls)
            wx += x
            wy += y
            wz += z
            d = x - fx
            wa += d if d >= 0 else -d
            d = y - fy
            wa += d if d >= 0 else -d
            d = z - fz
            wa += d if d >= 0 else -d
            wc += 1
            if wc >= wn:
                w[0] = wx
                w[1] = wy
                w[2] = wz
                w[3] = wa
                w[4] = wc
                self._close_window(t)
                wx = wy = wz = wa = wc = 0
            if mode == 0:
                continue
            # --- vehicle frame (mode 2) or gravity-aligned horizontal basis (mode 1)
            vx = (r0 * fx + r1 * fy + r2 * fz) >> 14
            vy = (r3 * fx + r4 * fy + r5 * fz) >> 14
            # baselines follow slow offsets (road grade, camber, residual tilt) only while the
            # channel is quiet; manoeuvres and long curves pull them 16x slower
            if act0 == 0:
                d = (vx << 8) - b0
                if -_QUIET_Q8 < d < _QUIET_Q8:
                    b0 += d >> kb
                else:
                    b0 += d >> (kb + 4)
            if act1 == 0:
                d = (vy << 8) - b1
                if -_QUIET_Q8 < d < _QUIET_Q8:
                    b1 += d >> kb
                else:
                    b1 += d >> (kb + 4)
            vx -= b0 >> 8
            vy -= b1 >> 8
            if cst == _CR_POST or cst == _CR_READY:
                # an impact is not a harsh manoeuvre: no events while a crash is being recorded
                ch[_C_ACT] = act0 = 0
                ch[_CF + _C_ACT] = act1 = 0
            elif mode == 2:
                if act0 != 0 or vx >= on_acc or vx <= on_brk:
                    self._channel(0, vx, t)
                    act0 = ch[_C_ACT]
                if act1 != 0 or vy >= on_cor or vy <= on_cor_n:
                    self._channel(1, vy, t)
                    act1 = ch[_CF + _C_ACT]
            elif act0 != 0 or vx * vx + vy * vy >= thr_min2:
                self._candidate(vx, vy, t)
                act0 = ch[_C_ACT]
        lp[0] = s1x
        lp[1] = s1y
        lp[2] = s1z
        lp[3] = s2x
        lp[4] = s2y
        lp[5] = s2z
        w[0] = wx
        w[1] = wy
        w[2] = wz
        w[3] = wa
        w[4] = wc
        base[0] = b0
        base[1] = b1
        self._rp = rp
        self._filled = filled

    def _close_window(self, t):
        w = self._w
        if self._wq_n >= _WN:
            self._wq_head = (self._wq_head + 1) % _WN
            self._wq_n -= 1
            self.counters["windows_dropped"] += 1
        o = ((self._wq_head + self._wq_n) % _WN) * _WF
        q = self._wq
        q[o] = t
        q[o + 1] = w[0]
        q[o + 2] = w[1]
        q[o + 3] = w[2]
        q[o + 4] = w[3]
        q[o + 5] = w[4]
        self._wq_n += 1
        act = w[3] // w[4]
        if act >= self._p[_P_MOVING_ACT]:
            w[5] += 1
            w[6] = 0
            if w[5] >= 2:
                self.moving = 1
        else:
            w[6] += 1
            w[5] = 0
            if w[6] >= 12:
                self.moving = 0
        w[0] = 0
        w[1] = 0
        w[2] = 0
        w[3] = 0
        w[4] = 0

    def _channel(self, c, v, t):
        ch = self._ch
        o = c * _CF
        act = ch[o + _C_ACT]
        if c == 0:
            on_p = self._p[_P_THR_ACC]
            on_n = self._p[_P_THR_BRK]
            off_p = self._p[_P_OFF_ACC]
            off_n = self._p[_P_OFF_BRK]
        else:
            on_p = self._p[_P_THR_COR]
            on_n = self._p[_P_THR_COR]
            off_p = self._p[_P_OFF_COR]
            off_n = self._p[_P_OFF_COR]
        if act == 0:
            if v >= on_p:
                act = 1
            elif v <= -on_n:
                act = -1
            else:
                return
            ch[o + _C_ACT] = act
            ch[o + _C_T0] = t
            ch[o + _C_N] = 0
            ch[o + _C_SUM] = 0
            ch[o + _C_PEAK] = 0
            ch[o + _C_SP0] = self._speed_at(t)
            ch[o + _C_LAT] = self._lat
            ch[o + _C_LON] = self._lon
            ch[o + _C_CRS] = self._crs
        a = v * act
        off = off_p if act > 0 else off_n
        if a >= off:
            ch[o + _C_N] += 1
            ch[o + _C_SUM] += a
            if a > ch[o + _C_PEAK]:
                ch[o + _C_PEAK] = a
            ch[o + _C_LAST] = t
            if t - ch[o + _C_T0] > self._p[_P_MAX_DUR]:
                # sustained offset, not a manoeuvre (bad mounting, towing on a slope...)
                self.counters["too_long"] += 1
                ch[o + _C_ACT] = 0
            return
        # end of the event
        ch[o + _C_ACT] = 0
        dur = t - ch[o + _C_T0]
        if dur < self._p[_P_MIN_DUR]:
            return
        sp0 = ch[o + _C_SP0]
        sp1 = self._speed_at(t)
        # the speed gate is applied in _drain_events, once a fix after the event end is known
        if c == 0:
            kind = _K_ACCEL if act > 0 else _K_BRAKE
        else:
            kind = _K_LEFT if act > 0 else _K_RIGHT
        q = self._q_slot()
        if q < 0:
            return
        e = self._evq
        e[q + _Q_KIND] = kind
        e[q + _Q_T] = ch[o + _C_T0]
        e[q + _Q_DUR] = dur
        e[q + _Q_PEAK] = ch[o + _C_PEAK]
        e[q + _Q_MEAN] = ch[o + _C_SUM] // ch[o + _C_N]
        e[q + _Q_SP0] = sp0
        e[q + _Q_SP1] = sp1
        e[q + _Q_LAT] = ch[o + _C_LAT]
        e[q + _Q_LON] = ch[o + _C_LON]
        e[q + _Q_CRS] = ch[o + _C_CRS]

    def _speed_at(self, t):
        # speed at box time t (mm/s) extrapolated from the last fix with the fix-to-fix slope
        # (at most 1.5 s ahead); -1 unknown. Integer, no allocation.
        v = self._spd
        if v < 0:
            return -1
        dt = t - self._spd_t
        if dt > 1500:
            dt = 1500
        elif dt < 0:
            dt = 0
        v += self._spd_slope * dt // 1000
        return v if v > 0 else 0

    def _gate_ok(self, sp0, sp1, dur, c):
        # speed gates. Longitudinal (c 0): the faster of the start and end speeds reaches the gate
        # (a launch starts at 0). Cornering (c 1): the part of the event above the gate speed
        # (speed interpolated linearly between start and end) lasts the minimum duration, so a
        # bend entered while braking below the gate does not count. Unknown speed: pass.
        if c == 0:
            hi = sp0 if sp0 > sp1 else sp1
            return hi < 0 or hi >= self._p[_P_GATE_LONG]
        gate = self._p[_P_GATE_COR]
        lo = sp0
        hi = sp1
        if lo > hi:
            lo = sp1
            hi = sp0
        if hi < 0:
            return True
        if lo < 0:
            return hi >= gate
        if lo >= gate:
            return True
        if hi < gate:
            return False
        return dur * (hi - gate) // (hi - lo) >= self._p[_P_MIN_DUR]

    def _q_slot(self):
        if self._evq_n >= _QN:
            self.counters["queue_full"] += 1
            return -1
        q = ((self._evq_head + self._evq_n) % _QN) * _QF
        self._evq_n += 1
        return q

    def _candidate(self, vx, vy, t):
        # calibrating: detect on the horizontal magnitude, keep the box-frame vectors
        ch = self._ch
        m2 = vx * vx + vy * vy
        if ch[_C_ACT] == 0:
            if m2 < self._p[_P_THR_MIN2]:
                return
            ch[_C_ACT] = 1
            ch[_C_T0] = t
            ch[_C_N] = 0
            ch[_C_SVX] = 0
            ch[_C_SVY] = 0
            ch[_C_PEAK] = 0
            ch[_C_SP0] = self._speed_at(t)
            ch[_C_LAT] = self._lat
            ch[_C_LON] = self._lon
            ch[_C_CRS] = self._crs
            ch[_C_SX0] = vx
            ch[_C_SY0] = vy
        if m2 >= self._p[_P_OFF_MIN2]:
            ch[_C_N] += 1
            ch[_C_SVX] += vx
            ch[_C_SVY] += vy
            if m2 > ch[_C_PEAK]:
                ch[_C_PEAK] = m2
                ch[_C_PVX] = vx
                ch[_C_PVY] = vy
                ch[_C_TPK] = t
            if t - ch[_C_T0] > self._p[_P_MAX_DUR]:
                self.counters["too_long"] += 1
                ch[_C_ACT] = 0
            return
        ch[_C_ACT] = 0
        dur = t - ch[_C_T0]
        if dur < self._p[_P_MIN_DUR]:
            return
        q = self._q_slot()
        if q < 0:
            return
        e = self._evq
        R = self._R
        nn = ch[_C_N]
        mx = ch[_C_SVX] // nn
        my = ch[_C_SVY] // nn
        px = ch[_C_PVX]
        py = ch[_C_PVY]
        e[q + _Q_KIND] = _K_CAND
        e[q + _Q_T] = ch[_C_T0]
        e[q + _Q_DUR] = dur
        # a candidate's peak and mean fields carry, until it is classified, the time of its peak (ms
        # after the start) and its start vector (box axes, scaled into +-511 mg, 10 bits each): a
        # braked bend is two events, each one timed by the axis that started it or peaked
        e[q + _Q_PEAK] = ch[_C_TPK] - ch[_C_T0]
        sx = ch[_C_SX0]
        sy = ch[_C_SY0]
        b0 = (sx * R[0] + sy * R[3]) >> 14
        b1 = (sx * R[1] + sy * R[4]) >> 14
        b2 = (sx * R[2] + sy * R[5]) >> 14
        mm = b0 if b0 >= 0 else -b0
        d = b1 if b1 >= 0 else -b1
        if d > mm:
            mm = d
        d = b2 if b2 >= 0 else -b2
        if d > mm:
            mm = d
        if mm > 511:
            b0 = b0 * 511 // mm
            b1 = b1 * 511 // mm
            b2 = b2 * 511 // mm
        e[q + _Q_MEAN] = (b0 + 512) | ((b1 + 512) << 10) | ((b2 + 512) << 20)
        e[q + _Q_SP0] = ch[_C_SP0]
        e[q + _Q_SP1] = self._speed_at(t)
        e[q + _Q_LAT] = ch[_C_LAT]
        e[q + _Q_LON] = ch[_C_LON]
        e[q + _Q_CRS] = ch[_C_CRS]
        for j in range(3):
            e[q + _Q_MB + j] = (mx * R[j] + my * R[3 + j]) >> 14
            e[q + _Q_PB + j] = (px * R[j] + py * R[3 + j]) >> 14

    # ------------------------------------------------------------------ not hot
    def poll(self):
        """Drain the hot-path queues: update the calibration and emit events (and a finished crash
        record) through on_event. Call after each feed(); cheap when nothing is pending."""
        if self._wq_n:
            self._drain_windows()
            self._update_calib()
        self._drain_events()

    def on_fix(self, fix):
        """GNSS fix (t_ms, valid, speed_mmps, course_cdeg, lat_e7, lon_e7), 1-10 Hz."""
        self._drain_windows()
        valid = fix.valid and fix.speed_mmps >= 0
        if fix.valid:
            self._lat = fix.lat_e7
            self._lon = fix.lon_e7
            self._crs = fix.course_cdeg
            slope = 0
            if self._spd >= 0 and fix.speed_mmps >= 0 and 0 < fix.t_ms - self._spd_t <= 2500:
                slope = (fix.speed_mmps - self._spd) * 1000 // (fix.t_ms - self._spd_t)
                if slope > 10000:
                    slope = 10000
                elif slope < -10000:
                    slope = -10000
            self._spd_slope = slope
            self._spd = fix.speed_mmps
            self._spd_t = fix.t_ms
            if fix.speed_mmps >= 0:
                fh = self._fh
                n = fh[_FHC]
                if n >= 2 and fix.t_ms - fh[_fho(fh, n - 2)] < 450:
                    o = _fho(fh, n - 1)   # replaces the last one
                else:
                    if n >= _FHN:   # full: the oldest goes
                        fh[_FHH] = (fh[_FHH] + 1) % _FHN
                        n -= 1
                    o = _fho(fh, n)
                    fh[_FHC] = n + 1
                fh[o] = fix.t_ms
                fh[o + 1] = fix.speed_mmps
        else:
            self._spd = -1
            self._spd_slope = 0
        self._confirm_still(fix, valid)
        self._fix_pair(fix, valid)
        self._update_calib()
        self._gnss_harsh(fix, valid)
        self._drain_events()

    # ------------------------------------------------------------------ GNSS-only fallback
    def _gnss_harsh(self, fix, valid):
        # While uncalibrated, harsh acceleration / braking from the GNSS Doppler speed: the speed
        # change over the last ~1 s of fixes (1-10 Hz), with the same thresholds, hysteresis,
        # minimum duration and speed gate as the accelerometer channels. The events are held like
        # the accelerometer's candidates: the calibration, if it comes, classifies the candidates
        # and these are dropped; at trip end (flush) they are emitted marked src='gnss', and the
        # candidates they explain are not reported as `unclassified`.
        if self._mode == 2 or not valid:
            self._gx = None
            return
        fh = self._fh
        rt = -1   # the reference fix: the newest ~1 s or more before this one
        for i in range(fh[_FHC] - 2, -1, -1):
            o = _fho(fh, i)
            if fix.t_ms - fh[o] >= _PAIR_MIN_MS - 100:
                rt = fh[o]
                rv = fh[o + 1]
                break
        if rt < 0 or fix.t_ms - rt > _PAIR_MAX_MS:
            self._gx = None
            return
        a = (fix.speed_mmps - rv) * 1000 // (fix.t_ms - rt) * 1000 // 9807   # mg
        if fix.speed_mmps < self._p[_P_GATE_LONG] or rv < self._p[_P_GATE_LONG]:
            # the speed gate holds for the whole difference (as the truth gates each instant): the
            # last second of a stop, where a receiver's speed drops to 0, is not a harsh brake
            a = 0
        gx = self._gx
        if gx is None:
            if a >= self._p[_P_THR_ACC]:
                sign = 1
            elif a <= -self._p[_P_THR_BRK]:
                sign = -1
            else:
                return
            # [sign, t0, t_last, peak, sum, n, sp0, lat, lon, crs]
            self._gx = gx = [sign, rt, fix.t_ms, 0, 0, 0, rv, fix.lat_e7, fix.lon_e7, fix.course_cdeg]
        sign = gx[0]
        v = a * sign
        # no hysteresis here: the GNSS speed's noise (0.1-0.3 m/s per fix, up to 10 overlapping ~1 s
        # differences a second) would keep a brisk but normal stop above 80 % of the threshold
        if v >= (self._p[_P_THR_ACC] if sign > 0 else self._p[_P_THR_BRK]):
            gx[2] = fix.t_ms
            if v > gx[3]:
                gx[3] = v
            gx[4] += v
            gx[5] += 1
            return
        self._gx = None
        dur = gx[2] - gx[1]
        if dur < self._p[_P_MIN_DUR] or dur > self._p[_P_MAX_DUR]:
            return
        if gx[5] < 2 and fix.t_ms - gx[1] < 2 * _PAIR_MIN_MS:
            # at 5-10 Hz one difference above the threshold is not enough: it must hold over a
            # second difference (at 1 Hz each difference is a whole, independent second)
            return
        sp1 = self._fix_speed(gx[2])
        if sp1 is None:
            sp1 = fix.speed_mmps
        if not self._gate_ok(gx[6], sp1, dur, 0):
            self.counters["gated"] += 1
            return
        rec = [0] * _QF
        rec[_Q_KIND] = _K_ACCEL if sign > 0 else _K_BRAKE
        rec[_Q_T] = gx[1] - self._lag()   # on the accelerometer's time line
        rec[_Q_DUR] = dur
        rec[_Q_PEAK] = gx[3]
        rec[_Q_MEAN] = gx[4] // gx[5]
        rec[_Q_SP0] = gx[6]
        rec[_Q_SP1] = sp1
        rec[_Q_LAT] = gx[7]
        rec[_Q_LON] = gx[8]
        rec[_Q_CRS] = gx[9]
        # the accelerometer (gravity known) watched the whole time the manoeuvre can have been felt,
        # 0..lag_max before the fixes: its candidates say whether it was harsh (speed noise is not)
        a = gx[1] - (self._lc.nl - 1) * 125 - 250
        rec[_Q_SEEN] = 1 if self._mode and 0 <= self._base[2] <= a else 0
        rec[_Q_G0] = gx[1]
        rec[_Q_G1] = gx[2]
        if len(self._gh) >= _QN:
            self.counters["held_overflow"] += 1
            old = self._gh.pop(0)
            if len(self._gspan) >= _QN:
                self._gspan.pop(0)
            self._gspan.append((old[_Q_G0], old[_Q_G1]))
            self._emit(old, "gnss")
        self._gh.append(rec)
        self.counters["gnss_only"] += 1

    def _fix_pair(self, fix, valid):
        # One regression sample per ~1 s baseline of valid fixes, whatever the fix rate: the speed
        # difference between fixes 100 ms apart (10 Hz) is mostly speed noise, so pairs are formed
        # between an anchor fix and the first valid fix >= _PAIR_MIN_MS later; the pairs do not
        # overlap (independent residuals). Straight stretches and bends both count: the bend's
        # lateral acceleration (course rate x speed) is the second regressor (firmware/calib.py).
        pf = self._prev_fix
        self._prev_fix = (fix.t_ms, fix.speed_mmps, fix.course_cdeg) if valid else None
        an = self._anchor
        if not valid or an is None or pf is None or fix.t_ms - pf[0] > _PAIR_MAX_MS \
                or fix.t_ms <= pf[0]:
            self._anchor = self._prev_fix   # (re)start a baseline here
            return
        dt_ms = fix.t_ms - an[0]
        if dt_ms < _PAIR_MIN_MS:
            return
        self._anchor = self._prev_fix
        if dt_ms > _PAIR_MAX_MS:
            return
        dt = dt_ms / 1000.0
        v1 = an[1] / 1000.0
        v2 = fix.speed_mmps / 1000.0
        if v1 < 0 or v2 < 0 or an[2] < 0 or fix.course_cdeg < 0:
            return
        dc = _wrap180((fix.course_cdeg - an[2]) / 100.0)
        if abs(dc) > 45.0:
            return   # too sharp for a mean over the interval
        if (v1 <= 2.0 or v2 <= 2.0) and (v1 + v2 < 1.0 or abs(dc) > 10.0 or self._lc.pairs < _LOW_MIN_PAIRS):
            # below 2 m/s the course is unreliable: only a straight stop or launch (the strongest
            # longitudinal excitation of a town drive; a stopped receiver repeats its last course),
            # and only after pairs at speed (parked at start-up, a receiver reports speeds of up to
            # 3 m/s the accelerometer does not see: the GENIVI drive)
            return
        a_lat = -math.radians(dc) / dt * (v1 + v2) / 2 * _MG_PER_MPS2
        a = (v2 - v1) / dt * _MG_PER_MPS2
        if self._lc.pair(an[0], fix.t_ms, a, a_lat):
            self.counters["fix_pairs"] += 1

    def _drain_windows(self):
        q = self._wq
        spd = self._spd
        while self._wq_n:
            o = self._wq_head * _WF
            n = q[o + 5]
            m = [q[o + 1] / n, q[o + 2] / n, q[o + 3] / n]
            act = q[o + 4] // n
            self._wq_head = (self._wq_head + 1) % _WN
            self._wq_n -= 1
            self._lc.window(q[o], q[o + 1], q[o + 2], q[o + 3], n)
            still = (0 <= spd < self._p[_P_STILL_MMPS]) or (spd < 0 and act < self._p[_P_MOVING_ACT] // 2)
            gv = self._gvec
            if still and spd >= 0:
                # stopped by the last fix, but the fixes lag the accelerometer (GNSS lag, up to a fix
                # period): a launch's first seconds would tilt gravity (and could pass for a knock).
                # The window waits until fixes show the car still stopped well after it.
                if self._sp_n >= _SPN:
                    if self._still_window(self._sp_pop()):
                        continue
                r = self._spq
                k = ((self._sp_h + self._sp_n) % _SPN) * _SPF
                for j in range(5):
                    r[k + j] = q[o + j] if j < 4 else n
                self._sp_n += 1
            elif still:
                if self._still_window(m):
                    continue
            else:
                self._knock_n = 0
                if self._gdrive is None:
                    self._gdrive = list(m)
                else:
                    for j in range(3):
                        self._gdrive[j] += (m[j] - self._gdrive[j]) / 240.0
                self._gdrive_n += 1
                if (gv is not None and self._gdrive_n > 480 and self.calib_state == "calibrated"
                        and angle_deg(self._gdrive, gv) > self._knock_deg):
                    # sustained mismatch while driving: the box moved
                    self.counters["knocks"] += 1
                    self._recalibrate(None)
                    self._gdrive = list(m)
                    continue
            for j in range(3):
                self._ga[j] += m[j]
            self._ga_n += 1

    def _still_window(self, m):
        # a window taken while stopped: knock check, then into the gravity sum. True: recalibrated.
        gv = self._gvec
        if gv is not None and self._gs_n >= 8 and angle_deg(m, gv) > self._knock_deg:
            self._knock_n += 1
            if self._knock_n >= self._p[_P_KNOCK_WINDOWS]:
                self.counters["knocks"] += 1
                self._recalibrate(m)
                return True
            return False   # do not mix a suspicious window into gravity
        self._knock_n = 0
        for j in range(3):
            self._gs[j] += m[j]
        self._gs_n += 1
        return False

    def _confirm_still(self, fix, valid):
        # pending stopped windows: those older than the lag horizon before a still fix are stopped
        # for sure; a moving fix discards the ones inside the horizon (the car was already moving)
        if not valid or not self._sp_n:
            return
        horizon = fix.t_ms - (self._lc.nl * 125 + 1200)
        moving = fix.speed_mmps >= self._p[_P_STILL_MMPS]
        while self._sp_n and self._spq[self._sp_h * _SPF] <= horizon:
            if self._still_window(self._sp_pop()):
                return
        if moving:
            self._sp_n = 0

    def _sp_pop(self):
        # the oldest stopped window waiting: its mean (mg, box axes), as _drain_windows computed it
        r = self._spq
        k = self._sp_h * _SPF
        n = r[k + 4]
        self._sp_h = (self._sp_h + 1) % _SPN
        self._sp_n -= 1
        return [r[k + 1] / n, r[k + 2] / n, r[k + 3] / n]

    def _update_calib(self):
        # gravity ("up" in box axes): stopped windows, else (driving from the start) the
        # regression's intercept, else the mean of all windows (candidates only)
        still_up = None
        if self._gs_n >= 8:
            still_up = _norm(self._gs)
        gv = still_up
        if gv is None and self._ga_n >= 8:
            gv = _norm(self._ga)
        if gv is None:
            return
        xv = None
        q = 0
        err = -1.0
        lc = self._lc
        key = lc.pairs * 2 + (1 if still_up is not None else 0)
        if key != self._solved:
            # a new pair or the first stopped gravity: solve again (9 small fits, ~1 Hz)
            self._solved = key
            lc.solve(still_up)
        sig = lc.sigma_deg if lc.fwd is not None else -1.0
        if sig >= 0:
            err = sig
            # the lag bank's up: stopped gravity (or the intercept) refined by the bias-free X x Y
            gv = lc.up
            # quality 100 - 16 x sigma (degrees): 60, the default commit level, is sigma 2.5 deg,
            # a 2-sigma forward error of 5 degrees (sigma includes the lag uncertainty and only
            # counts while both the longitudinal and lateral estimates agree: firmware/calib.py)
            q = int(100 - 16 * sig)
            if q < 0 or not lc.consistent:
                q = 0
            if still_up is None and lc.pairs < 20:
                q = q * 8 // 10   # up from the intercept needs more pairs than forward
            xv = lc.fwd
            self.calib_lag_ms = lc.lag_ms
        self._gvec = gv   # knock / re-mount checks compare with it
        n = lc.pairs
        if self._restored_q and self.calib_state == "calibrated" and (q < self._p[_P_CALIB_MIN_Q] or n < 30):
            return   # keep the persisted calibration until a fresh one is as good
        if xv is not None and q >= self._p[_P_CALIB_MIN_Q]:
            if self._mode == 1 and self._ch[_C_ACT] != 0:
                # a candidate is under way: switching frames resets the detectors and would lose
                # it. Switch once it has ended (queued, then classified with the held ones).
                return
            was = self._mode
            if self.calib_state == "calibrated" and q < self.calib_quality - 10:
                return   # a worse fit (noisy stretch) does not replace a better rotation
            self.calib_state = "calibrated"
            self.calib_quality = q
            self.calib_err_deg = err
            self._restored_q = 0
            if was != 2 or xv is not self._xvec or gv is not self._basis_g:
                # (R was last built, in mode 2, from these two vectors of the same solve when they
                # are the very objects: the same R and g, and no reset. Skipped, ~5 times a second
                # once calibrated; _restore's vectors are its own, never the lag bank's.)
                self._set_R(xv, gv, 2)
            self._xvec = xv
            if was != 2:
                self.calib_commit = (self._t_feed, err, lc.lag_ms, [self._R[i] for i in range(9)])
                from firmware import classify as _cl

                _cl.classify(self)
            return
        if self.calib_state == "calibrated":
            # keep the last good rotation; refresh gravity only
            return
        self.calib_state = "calibrating"
        self.calib_quality = q
        self.calib_err_deg = err
        self._set_R(None, gv, 1)

    def _fix_speed(self, t):
        # speed at box time t (mm/s) interpolated between the valid fixes around it (<= 2.5 s
        # apart), as the simulator's truth gates on the true speed at each instant; None if the
        # fixes do not bracket t.
        fh = self._fh
        for i in range(fh[_FHC] - 1, 0, -1):
            o = _fho(fh, i)
            t1 = fh[o]
            v1 = fh[o + 1]
            o = _fho(fh, i - 1)
            t0 = fh[o]
            v0 = fh[o + 1]
            if t0 <= t <= t1:
                if t1 - t0 > _PAIR_MAX_MS:
                    return None
                if t1 == t0:
                    return v1
                return v0 + (v1 - v0) * (t - t0) // (t1 - t0)
            if t1 < t:
                return None
        return None

    def _event_ready(self, o, force):
        # an event is finished once a fix after its end is known (speeds interpolated, not
        # extrapolated), or after 2.5 s of samples without one (GNSS lost: extrapolated speeds)
        if force:
            return True
        # the fixes describe the road lag_ms before the box receives them (GNSS lag, firmware/calib.py)
        te = self._evq[o + _Q_T] + self._evq[o + _Q_DUR] + self._lag()
        fh = self._fh
        if fh[_FHC] and fh[_fho(fh, fh[_FHC] - 1)] >= te:
            return True
        return self._t_feed - te > _PAIR_MAX_MS

    def _lag(self):
        # estimated GNSS-to-accelerometer lag (ms), 0 until the lag bank has solved once
        v = self._lc.lag_ms
        return v if v > 0 else 0

    def _drain_events(self, force=False):
        e = self._evq
        while self._evq_n:
            o = self._evq_head * _QF
            if not self._event_ready(o, force):
                break
            rec = [e[o + i] for i in range(_QF)]
            self._evq_head = (self._evq_head + 1) % _QN
            self._evq_n -= 1
            t0 = rec[_Q_T] + self._lag()
            v = self._fix_speed(t0)
            if v is not None:
                rec[_Q_SP0] = v
            v = self._fix_speed(t0 + rec[_Q_DUR])
            if v is not None:
                rec[_Q_SP1] = v
            kind = rec[_Q_KIND]
            if kind != _K_CAND and not self._gate_ok(rec[_Q_SP0], rec[_Q_SP1], rec[_Q_DUR],
                                                     0 if kind <= _K_BRAKE else 1):
                self.counters["gated"] += 1
                continue
            if rec[_Q_KIND] == _K_CAND:
                from firmware import classify as _cl

                if self._mode == 2:
                    _cl.classify(self, rec)
                else:
                    if len(self._held) >= _QN:
                        self.counters["held_overflow"] += 1
                        _cl.unclassified(self, self._held.pop(0))
                    self._held.append(rec)
            else:
                self._emit(rec)
        if self._cst == _CR_READY:
            self._emit_crash()

    def _emit(self, rec, src=None):
        if self.on_event is None:
            return
        ev = {"type": KIND_NAMES[rec[_Q_KIND]], "t_ms": rec[_Q_T], "dur_ms": rec[_Q_DUR],
              "peak_mg": rec[_Q_PEAK], "mean_mg": rec[_Q_MEAN],
              "speed_start_mmps": rec[_Q_SP0], "speed_end_mmps": rec[_Q_SP1],
              "lat_e7": rec[_Q_LAT], "lon_e7": rec[_Q_LON], "course_cdeg": rec[_Q_CRS]}
        if src is not None:
            ev["src"] = src   # 'gnss': detected from the GNSS speed alone (no calibration)
        self.on_event(ev)

    def flush(self):
        """Emit pending events, and candidates still waiting for the calibration as
        `unclassified` (trip end, power going). A crash still recording its post-trigger samples
        is closed with what it has (a collision often cuts the power: it must not be lost)."""
        self.poll()
        if self._cst == _CR_POST:
            self._cpost_done = self._p[_P_POST_N] - self._cpost
            # the configured pre-trigger time plus the post-trigger samples it got
            self._cvalid = self._p[_P_RING_N] - self._p[_P_POST_N] + self._cpost_done
            if self._cvalid > self._filled:
                self._cvalid = self._filled
            self._cst = _CR_READY
            self._csp1 = self._speed_at(self._t_feed)
        self._drain_events(True)
        from firmware import classify as _cl

        _cl.flush(self)

    def close(self):
        """Power going (after flush()): the crash ring goes back to the heap. No feed() after this;
        the calibration, its state() and the counters stay readable."""
        self._ring = None

    def _emit_crash(self):
        n = self._cvalid
        pre_n = n - self._cpost_done
        dt_ms = 1000 / self.rate_hz
        confirmed, sp0, sp1 = self._crash_confirmed(self._ct0)
        ev = {"type": "crash", "t_ms": self._ct0, "dur_ms": int(self._cdur_n * dt_ms),
              "peak_mg": int(math.sqrt(self._cpeak2)), "mean_mg": 0,
              "speed_start_mmps": sp0, "speed_end_mmps": sp1,
              "lat_e7": self._clat, "lon_e7": self._clon, "course_cdeg": self._ccrs,
              "trace": None, "rate_hz": self.rate_hz, "pre_ms": int(pre_n * dt_ms)}
        if confirmed:
            # the trace (int16 x, y, z, little-endian; 6 KB at 100 Hz) is the frozen ring itself, put
            # in time order in place (rotated left to its oldest sample): no 6 KB block at the crash,
            # when the heap is fullest. On the box it is the ring's memory: valid until the next
            # feed(), the consumer encodes or copies it at once (the Box: into its crash record)
            rn = self._p[_P_RING_N]
            start = (self._rp // 3 - n) % rn   # rp points at the oldest sample of the frozen ring
            if start:
                self._ring_rotate(6 * start)
            ev["trace"] = bytes_of(self._ring, 6 * n)
        else:
            # a spike without a collision's speed change (pothole, kerb, dropped box, door slam):
            # an event record `shock`, not a crash
            self.counters["shocks"] += 1
            ev["type"] = "shock"
            del ev["trace"]
            del ev["rate_hz"]
            del ev["pre_ms"]
        self._cst = _CR_REARM
        self._cover = 0
        self._filled = 0
        if self.on_event is not None:
            self.on_event(ev)

    def _ring_rotate(self, d):
        # the ring's bytes rotated left by d (a multiple of 6) in place, c bytes at a time through a
        # small buffer; each copy moves a chunk into the one before it (never overlapping)
        rb = byte_view(self._ring, 6 * self._p[_P_RING_N])
        ln = len(rb)
        tmp = bytearray(768)   # 128 samples
        while d > 0:
            c = 768 if d > 768 else d
            tmp[:c] = rb[:c]
            i = 0
            while i + c < ln:
                e = i + 2 * c if i + 2 * c < ln else ln
                rb[i:e - c] = rb[i + c:e]
                i += c
            rb[ln - c:] = tmp[:c]
            d -= c

    def _crash_confirmed(self, t0):
        """(crash?, speed before, speed after) for an impact at box time t0, from the GNSS speeds
        around it. A collision changes the vehicle's speed within a few seconds: it stops, loses a
        large part of its speed, or (hit while standing) is pushed. A spike with the speed unchanged
        is a shock. Speeds unknown (no fix around: tunnel, antenna torn off, power gone): crash, so
        recall never depends on the GNSS."""
        v0 = -1
        vmin = -1
        vmax = -1
        fh = self._fh
        for i in range(fh[_FHC]):
            o = _fho(fh, i)
            t = fh[o]
            v = fh[o + 1]
            if t <= t0:
                if t0 - t <= _CONFIRM_BEFORE_MS:
                    v0 = v
            elif _CONFIRM_SETTLE_MS < t - t0 <= _CONFIRM_AFTER_MS:
                if vmin < 0 or v < vmin:
                    vmin = v
                if v > vmax:
                    vmax = v
        if v0 < 0:
            v0 = self._csp0
        if v0 < 0 or vmin < 0:
            return True, v0, self._csp1 if vmin < 0 else vmin
        if v0 < _CONFIRM_REST_MMPS:
            return vmax - v0 >= _CONFIRM_DV_MMPS, v0, vmax  # standing: a crash only if pushed away
        drop = v0 - vmin
        return (vmin <= _CONFIRM_STOP_MMPS or drop >= _CONFIRM_DV_MMPS or drop * 10 >= v0 * 4), v0, vmin
