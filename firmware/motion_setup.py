# Motion's boot-only code: its settings from the configuration (validated) and a persisted calibration
# restored. Loaded by Motion.__init__ and unloaded after it (firmware/runner.py setup_gnss's pattern):
# the functions and messages here are not on the box's heap while it drives.
import math

from firmware.motion import _MG_PER_MPS2, DEFAULTS, _norm
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(calib_forget_pairs=0, calib_lag_max_ms=0, calib_min_quality=0, calib_state=0,
         corner_min_speed_kmh=0, crash_min_ms=0, crash_post_ms=0, crash_pre_ms=0, crash_threshold_mg=0,
         harsh_accel_mps2=0, harsh_brake_mps2=0, harsh_corner_mps2=0, harsh_hyst_pct=0, harsh_lp_hz=0,
         harsh_max_dur_ms=0, harsh_min_dur_ms=0, harsh_min_speed_kmh=0, moving_act_mg=0, uncalibrated=0)

# Motion._p's slots (firmware/motion.py; tests/test_motion_units.py checks they agree)
_P_CALIB_MIN_Q = const(18)
_P_CMIN_N = const(15)
_P_CTHR2 = const(14)
_P_GATE_COR = const(9)
_P_GATE_LONG = const(8)
_P_K = const(12)
_P_KB = const(13)
_P_KNOCK_WINDOWS = const(19)
_P_MAX_DUR = const(11)
_P_MIN_DUR = const(10)
_P_MOVING_ACT = const(21)
_P_OFF_ACC = const(3)
_P_OFF_BRK = const(4)
_P_OFF_COR = const(5)
_P_OFF_MIN2 = const(7)
_P_POST_N = const(16)
_P_RING_N = const(17)
_P_STILL_MMPS = const(20)
_P_THR_ACC = const(0)
_P_THR_BRK = const(1)
_P_THR_COR = const(2)
_P_THR_MIN2 = const(6)
_Q14 = const(16384)


def _cfg(cfg, key):
    if cfg is not None:
        try:
            if key in cfg:
                return cfg[key]
        except TypeError:
            pass
    return DEFAULTS[key]


def _shift_for(samples):
    # smallest k with 2**k >= samples, rounded to the nearest power of two
    k = 0
    while (1 << (k + 1)) <= samples:
        k += 1
    if samples - (1 << k) > (1 << (k + 1)) - samples:
        k += 1
    return k


def settings(m, p, rate_hz, cfg):
    """Motion m's settings into p (Motion._p) and m._knock_deg; returns the lag bank's
    (calib_lag_max_ms, calib_forget_pairs). ValueError naming the setting when one is out of range."""
    # thresholds
    p[_P_THR_ACC] = int(_cfg(cfg, "harsh_accel_mps2") * _MG_PER_MPS2 + 0.5)
    p[_P_THR_BRK] = int(_cfg(cfg, "harsh_brake_mps2") * _MG_PER_MPS2 + 0.5)
    p[_P_THR_COR] = int(_cfg(cfg, "harsh_corner_mps2") * _MG_PER_MPS2 + 0.5)
    for name, v in (("harsh_accel_mps2", p[_P_THR_ACC]), ("harsh_brake_mps2", p[_P_THR_BRK]),
                    ("harsh_corner_mps2", p[_P_THR_COR])):
        if v < 20:
            raise ValueError("%s: threshold too small" % name)
    hyst = int(_cfg(cfg, "harsh_hyst_pct"))
    if hyst < 10 or hyst > 100:
        raise ValueError("harsh_hyst_pct: expected 10..100, got %r" % (hyst,))
    p[_P_OFF_ACC] = p[_P_THR_ACC] * hyst // 100
    p[_P_OFF_BRK] = p[_P_THR_BRK] * hyst // 100
    p[_P_OFF_COR] = p[_P_THR_COR] * hyst // 100
    # locals, not Motion's attributes, where only the setup reads them (its 73-slot table: motion.py)
    thr_min = min(p[_P_THR_ACC], p[_P_THR_BRK], p[_P_THR_COR])
    p[_P_THR_MIN2] = thr_min * thr_min
    off_min = thr_min * hyst // 100
    p[_P_OFF_MIN2] = off_min * off_min
    p[_P_GATE_LONG] = int(_cfg(cfg, "harsh_min_speed_kmh") * 1000000 // 3600)
    p[_P_GATE_COR] = int(_cfg(cfg, "corner_min_speed_kmh") * 1000000 // 3600)
    p[_P_MIN_DUR] = int(_cfg(cfg, "harsh_min_dur_ms"))
    p[_P_MAX_DUR] = int(_cfg(cfg, "harsh_max_dur_ms"))
    lp_hz = _cfg(cfg, "harsh_lp_hz")
    if lp_hz <= 0:
        raise ValueError("harsh_lp_hz: must be > 0")
    p[_P_K] = max(1, _shift_for(rate_hz / (2 * math.pi * lp_hz)))
    p[_P_KB] = _shift_for(10 * rate_hz)      # slope/offset baseline, tau ~10 s
    crash_mg = int(_cfg(cfg, "crash_threshold_mg"))
    if crash_mg < 1000 or crash_mg > 15000:
        raise ValueError("crash_threshold_mg: expected 1000..15000, got %r" % (crash_mg,))
    p[_P_CTHR2] = crash_mg * crash_mg
    p[_P_CMIN_N] = max(1, (int(_cfg(cfg, "crash_min_ms")) * rate_hz + 999) // 1000)
    pre_n = int(_cfg(cfg, "crash_pre_ms")) * rate_hz // 1000
    post_n = int(_cfg(cfg, "crash_post_ms")) * rate_hz // 1000
    if pre_n < 1 or post_n < 1:
        raise ValueError("crash_pre_ms/crash_post_ms: must be > 0")
    p[_P_POST_N] = post_n
    p[_P_RING_N] = pre_n + post_n
    p[_P_CALIB_MIN_Q] = int(_cfg(cfg, "calib_min_quality"))
    m._knock_deg = float(_cfg(cfg, "knock_deg"))
    p[_P_KNOCK_WINDOWS] = max(1, int(_cfg(cfg, "knock_ms")) // 250)
    p[_P_STILL_MMPS] = int(_cfg(cfg, "still_mmps"))
    p[_P_MOVING_ACT] = int(_cfg(cfg, "moving_act_mg"))
    return int(_cfg(cfg, "calib_lag_max_ms")), int(_cfg(cfg, "calib_forget_pairs"))


def restore(m, st):
    try:
        R = st["R"]
        q = int(st.get("quality", 0))
        cs = st.get("calib_state", "uncalibrated")
    except (KeyError, TypeError, AttributeError):
        raise ValueError("state: expected a dict with R, quality, calib_state")
    if len(R) != 9:
        raise ValueError("state: R must have 9 ints")
    if cs == "calibrated":
        rows = [[R[3 * i + j] / _Q14 for j in range(3)] for i in range(3)]
        m._gvec = _norm(rows[2])
        m._xvec = _norm(rows[0])
        if m._gvec is None or m._xvec is None:
            raise ValueError("state: R rows are zero")
        m._gs = [m._gvec[i] * 1000.0 * 20 for i in range(3)]
        m._gs_n = 20
        m._restored_q = q
        m.calib_quality = q
        m.calib_state = "calibrated"
        m._set_R(m._xvec, m._gvec, 2)
        for i in range(9):
            m._R[i] = int(R[i])
