# Event classification of the manoeuvres the motion feed loop held while the mount was not calibrated.
#
# Not hot: called by firmware/motion.py (Motion) when the calibration commits (classify without a record),
# for a candidate finished once calibrated (classify) and at trip end (flush). The feed loop (feed()) and
# the calibration (firmware/calib.py) live beside it; this unit decides what a held record is:
# - a candidate (a horizontal manoeuvre seen with gravity known, forward not): projected on the
#   vehicle axes, each axis whose peak reaches its threshold is an event (a braked bend is a harsh
#   brake and a harsh corner);
# - a GNSS-only event (a harsh speed change from the fixes): kept where the accelerometer could not
#   judge it, dropped where it watched and saw nothing harsh (speed noise), merged with the candidate
#   it explains.
# Records are Motion's event-queue rows (lists of ints); the layout is motion.py's (_Q_*, _K_*), the
# same values here (a test compares them: MicroPython's const() names do not cross modules).
import math

from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(explained_by_gnss=0, gnss_unconfirmed=0)

_K_ACCEL = const(1)
_K_BRAKE = const(2)
_K_LEFT = const(3)
_K_RIGHT = const(4)
_K_CAND = const(5)
_Q_KIND = const(0)
_Q_T = const(1)
_Q_DUR = const(2)
_Q_PEAK = const(3)   # candidates: time of the peak (ms after the start) until classified
_Q_MEAN = const(4)   # candidates: start vector (box axes, 10 bits each, +512) until classified
_Q_SP0 = const(5)
_Q_SP1 = const(6)
_Q_MB = const(10)
_Q_PB = const(13)
_Q_SEEN = const(10)  # GNSS-only records: the accelerometer watched the whole manoeuvre
_Q_G0 = const(11)
_Q_G1 = const(12)
_QF = const(16)      # queue row length and slots (motion.py's event queue)
_QN = const(8)
_P_THR_ACC = const(0)   # Motion._p: the thresholds (mg)
_P_THR_BRK = const(1)
_P_THR_COR = const(2)
_Q14 = const(16384)
_LAG_STEP_MS = const(125)


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def classify(m, rec=None):
    """A candidate in the vehicle frame (m calibrated): each axis whose peak reaches its threshold is an
    event; with both, the axis that started the candidate keeps its start time, the other is timed at
    the candidate's peak. Emitted through m._emit. Without rec: the calibration committed, every held
    record is judged (_commit). (Names the feed loop calls are few: each is a qstr on the box's heap.)"""
    if rec is None:
        _commit(m)
        return
    R = m._R
    xv = [R[j] / _Q14 for j in range(3)]
    yv = [R[3 + j] / _Q14 for j in range(3)]
    mb = rec[_Q_MB:_Q_MB + 3]
    pb = rec[_Q_PB:_Q_PB + 3]
    tpk = rec[_Q_PEAK]
    p = rec[_Q_MEAN]
    sb = [(p & 1023) - 512, ((p >> 10) & 1023) - 512, ((p >> 20) & 1023) - 512]
    pl = _dot(pb, xv)
    pt = _dot(pb, yv)
    rl = abs(pl) / (m._p[_P_THR_ACC] if pl >= 0 else m._p[_P_THR_BRK])
    rt = abs(pt) / m._p[_P_THR_COR]
    if rl < 1.0 and rt < 1.0:
        m.counters["weak"] += 1
        return
    both = rl >= 1.0 and rt >= 1.0
    lat_first = abs(_dot(sb, yv)) / m._p[_P_THR_COR] > abs(_dot(sb, xv)) / m._p[_P_THR_ACC]
    for c in (0, 1):
        if (rl if c == 0 else rt) < 1.0:
            continue
        if not m._gate_ok(rec[_Q_SP0], rec[_Q_SP1], rec[_Q_DUR], c):
            m.counters["gated"] += 1
            continue
        ev = list(rec)
        if c == 0:
            ev[_Q_KIND] = _K_ACCEL if pl >= 0 else _K_BRAKE
            ev[_Q_PEAK] = int(abs(pl))
            ev[_Q_MEAN] = int(abs(_dot(mb, xv)))
        else:
            ev[_Q_KIND] = _K_LEFT if pt >= 0 else _K_RIGHT
            ev[_Q_PEAK] = int(abs(pt))
            ev[_Q_MEAN] = int(abs(_dot(mb, yv)))
        if both and (c == 1) != lat_first:
            ev[_Q_T] = rec[_Q_T] + tpk
            ev[_Q_DUR] = rec[_Q_DUR] - tpk
        m._emit(ev)


def _unconfirmed(m):
    # counters['gnss_unconfirmed'], created here (the key's string lives in this unit only)
    c = m.counters
    c["gnss_unconfirmed"] = c.get("gnss_unconfirmed", 0) + 1


def _pending(m, a, b):
    # a candidate over [a, b] still in the feed loop's queue (finished, waiting for a fix after its end):
    # not held yet, judged after the commit
    e = m._evq
    for k in range(m._evq_n):
        o = ((m._evq_head + k) % _QN) * _QF
        if e[o + _Q_KIND] == _K_CAND and e[o + _Q_T] <= b and e[o + _Q_T] + e[o + _Q_DUR] >= a:
            return True
    return False


def _commit(m):
    """The calibration committed: the accelerometer's held candidates are classified; the GNSS-only
    events held meanwhile describe the same manoeuvres with less precision and are dropped - unless no
    candidate was there and the accelerometer could not have seen one (gravity not yet known, e.g.
    right after a re-mount): those are emitted, src 'gnss'."""
    lag_max = (m._lc.nl - 1) * _LAG_STEP_MS
    for g in m._gh:
        a = g[_Q_G0] - lag_max - 1000
        b = g[_Q_G1] + 1000
        covered = False
        for rec in m._held:
            if rec[_Q_T] <= b and rec[_Q_T] + rec[_Q_DUR] >= a:
                covered = True
                break
        if covered:
            continue
        if g[_Q_SEEN] and not _pending(m, a, b):
            _unconfirmed(m)   # the accelerometer saw nothing harsh: speed noise
        else:
            # gravity unknown then, or its candidate is still queued (a launch into a bend, timed by its
            # lateral peak, can be gated as a slow corner: the GNSS speed keeps the acceleration)
            m._emit(g, "gnss")
    m._gh = []
    m._gspan = []
    m._gx = None
    held = m._held
    m._held = []
    for rec in held:
        classify(m, rec)


def explain(m, a, b):
    """A GNSS-only event over [a, b] (GNSS time line) explains at most one held candidate: the one, among
    those that can be the same manoeuvre given the GNSS lag (the accelerometer sees it 0..lag_max
    earlier), whose centre is closest to the event's, shifted by the lag estimate. True when it
    explained (removed) one."""
    lag_max = (m._lc.nl - 1) * _LAG_STEP_MS
    lag = m._lc.lag_ms if m._lc.lag_ms >= 0 else lag_max // 2
    held = m._held
    best = -1
    bd = 0
    for i in range(len(held)):
        rec = held[i]
        t0 = rec[_Q_T]
        t1 = t0 + rec[_Q_DUR]
        if t1 + lag_max + 250 < a or t0 > b + 250:
            continue
        d = abs((t0 + t1) // 2 + lag - (a + b) // 2)
        if best < 0 or d < bd:
            best = i
            bd = d
    if best < 0:
        return False
    held.pop(best)
    m.counters["explained_by_gnss"] += 1
    return True


def unclassified(m, rec):
    """A candidate that could not be classified: emitted as `unclassified` with its magnitudes."""
    mb = rec[_Q_MB:_Q_MB + 3]
    pb = rec[_Q_PB:_Q_PB + 3]
    rec[_Q_KIND] = _K_CAND
    rec[_Q_PEAK] = int(math.sqrt(_dot(pb, pb)))
    rec[_Q_MEAN] = int(math.sqrt(_dot(mb, mb)))
    m._emit(rec)


def flush(m):
    """Trip end while not calibrated: the GNSS-only events go out (src 'gnss') and each explains the
    candidate of the same manoeuvre; one the accelerometer watched without a candidate is speed noise
    (multipath in an urban canyon: 0.25 m/s per fix) and is dropped; the candidates left are
    `unclassified`."""
    gh = m._gh
    m._gh = []
    for a, b in m._gspan:   # GNSS-only events already emitted (held overflow)
        explain(m, a, b)
    for rec in gh:
        if explain(m, rec[_Q_G0], rec[_Q_G1]) or not rec[_Q_SEEN]:
            m._emit(rec, "gnss")
        else:
            _unconfirmed(m)
    held = m._held
    m._held = []
    for rec in held:
        unclassified(m, rec)
    m._gspan = []
