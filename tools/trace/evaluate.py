"""paydbox evaluate: replay scenarios through the firmware and score the box against the ground truth.

For each scenario (a name from the simulator's suite, or a trace file with a truth stream): simulate it,
replay it through the real firmware (`tools.trace.replay.replay_trace`), compare with the truth:
distance error %, phantom metres per parked hour, event precision / recall per type (a detected event
matches a truth event of the same type when its `t` lies in [start - 2 s, end + 2 s]; each truth event
matches at most once), false events per 100 km, crash detected, calibration error, bytes per fix.
"""
import json
import math
import os
import sys
import tempfile
import time

SLACK_S = 2.0
HARSH_TYPES = ("harsh_accel", "harsh_brake", "harsh_corner_left", "harsh_corner_right")
EVENT_TYPES = HARSH_TYPES + ("crash", "overspeed", "idle", "towing", "shock")
TARGETS = {
    "distance_error_pct": 0.5,        # |error| per drive
    "parked_drift_m_per_h": 10.0,
    "event_precision": 0.95,
    "event_recall": 0.95,
    "false_events_per_100km": 1.0,
    "bytes_per_fix": 4.0,
}


# ------------------------------------------------------------------------------------------ truth
def truth_from_trace(path):
    """Ground truth of a trace: events, trips, mounts, outages, distance and parked time."""
    from hw.trace_format import read_trace

    header, lines = read_trace(path)
    if not header.get("truth"):
        raise ValueError("%s: header field 'truth' is not true: no ground truth to evaluate against" % path)
    events, trips, mounts, outages = [], [], [], []
    last = None
    parked_s = 0.0
    driving_s = 0.0
    prev = None
    pos_td = []
    move_starts = []   # truth times where the vehicle starts moving
    for ln in lines:
        if ln.get("s") != "truth":
            continue
        k = ln.get("kind")
        if k == "event":
            ev = {"type": ln["type"], "start": ln["start"], "end": ln["end"],
                  "peak_mps2": ln.get("peak_mps2")}
            if ln.get("marginal"):
                ev["marginal"] = 1
            events.append(ev)
        elif k == "trip":
            trips.append({"start": ln["start"], "end": ln["end"], "dist_m": ln["dist_m"]})
        elif k == "mount":
            mounts.append({"t": ln["t"], "R": ln["R"]})
        elif k == "gnss_outage":
            outages.append({"start": ln["start"], "end": ln["end"], "reason": ln["reason"]})
        elif k == "pos":
            if prev is not None:
                dt = ln["t"] - prev["t"]
                if not prev["moving"] and not ln["moving"] and not prev["ign"]:
                    parked_s += dt
                elif prev["moving"] or ln["moving"]:
                    driving_s += dt
            if ln.get("moving") and (prev is None or not prev.get("moving")):
                move_starts.append(ln["t"])
            prev = ln
            last = ln
            pos_td.append((ln["t"], ln["dist_m"]))
    # distance driven before the very first fix of a cold start cannot be known by any box, nor
    # distance driven into an outage that never ends (a crash inside a tunnel: no fix ever after)
    unobservable = 0.0
    t_end = last["t"] if last else 0.0
    fix_dt = 1.0 / float((header.get("gnss") or {}).get("rate_hz") or 1)
    for o in outages:
        if o["reason"] == "cold_start":
            unobservable += _dist_at(pos_td, o["end"]) - _dist_at(pos_td, o["start"])
        elif o["end"] >= t_end - 1.0:  # from the last fix before it (up to one fix interval earlier)
            unobservable += _dist_at(pos_td, o["end"]) - _dist_at(pos_td, max(0.0, o["start"] - fix_dt))
    return {
        "unobservable_m": unobservable,
        "scenario": (header.get("sim") or {}).get("scenario") or os.path.basename(path),
        "duration_s": header.get("duration_s") or (last["t"] if last else 0.0),
        "dist_m": last["dist_m"] if last else 0.0,
        "parked_h": parked_s / 3600.0,
        "driving_s": driving_s,
        "events": events, "trips": trips, "mounts": mounts, "outages": outages, "move_starts": move_starts,
        "thresholds": (header.get("sim") or {}).get("thresholds"),
    }


def _dist_at(pos_td, t):
    """True cumulative distance at time t from the 1 Hz truth positions (linear in between)."""
    if not pos_td:
        return 0.0
    prev = pos_td[0]
    for cur in pos_td:
        if cur[0] >= t:
            if cur[0] == prev[0]:
                return cur[1]
            return prev[1] + (cur[1] - prev[1]) * (t - prev[0]) / (cur[0] - prev[0])
        prev = cur
    return pos_td[-1][1]


# ------------------------------------------------------------------------------------------ matching
def detected_events(report):
    """All events the box reported: per trip, plus top-level ones (towing happens outside trips)."""
    out = []
    seen = set()
    for tr in report.get("trips", []):
        for e in tr.get("events", []):
            key = (e["type"], round(float(e["t"]), 3))
            if key not in seen:
                seen.add(key)
                out.append({"type": e["type"], "t": float(e["t"])})
    for e in report.get("events", []) or []:
        key = (e["type"], round(float(e["t"]), 3))
        if key not in seen:
            seen.add(key)
            out.append({"type": e["type"], "t": float(e["t"])})
    out.sort(key=lambda e: e["t"])
    return out


def match_events(truth_events, detected, slack_s=SLACK_S):
    """Match detections to truth per type. Returns ({type: {'tp','fp','fn','marginal'}}, false positives,
    misses).

    A detection matches the unmatched truth event of its type whose window [start - slack, end + slack]
    contains its t (a clear event before a marginal one, then the closest to the window centre).
    Truth events flagged `marginal` (borderline: just above or just below a threshold) do not count:
    a detection matching one is neither a true nor a false positive, and missing one is no miss."""
    per = {}
    used = set()
    fps = []
    for d in detected:
        best = None
        for i, ev in enumerate(truth_events):
            if i in used or ev["type"] != d["type"]:
                continue
            if ev["start"] - slack_s <= d["t"] <= ev["end"] + slack_s:
                key = (1 if ev.get("marginal") else 0, abs(d["t"] - (ev["start"] + ev["end"]) / 2.0))
                if best is None or key < best[0]:
                    best = (key, i)
        c = per.setdefault(d["type"], {"tp": 0, "fp": 0, "fn": 0, "marginal": 0})
        if best is None:
            c["fp"] += 1
            fps.append(d)
        else:
            used.add(best[1])
            if truth_events[best[1]].get("marginal"):
                c["marginal"] += 1
            else:
                c["tp"] += 1
    fns = []
    for i, ev in enumerate(truth_events):
        if i not in used and not ev.get("marginal"):
            per.setdefault(ev["type"], {"tp": 0, "fp": 0, "fn": 0, "marginal": 0})["fn"] += 1
            fns.append(ev)
    return per, fps, fns


def precision_recall(c):
    p = c["tp"] / float(c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None
    r = c["tp"] / float(c["tp"] + c["fn"]) if c["tp"] + c["fn"] else None
    return p, r


def rotation_angle_deg(Ra, Rb):
    """Angle of Ra^T Rb (the rotation between two 3x3 rotations), degrees."""
    tr = sum(Ra[k][i] * Rb[k][i] for i in range(3) for k in range(3))
    c = max(-1.0, min(1.0, (tr - 1.0) / 2.0))
    return math.degrees(math.acos(c))


def _calibration_error(truth, cal):
    """Degrees between the box's estimated mount rotation and the truth, when the replay reports it."""
    if not isinstance(cal, dict) or not truth["mounts"]:
        return None
    if (cal.get("state") or cal.get("calib_state")) not in (None, "calibrated"):
        return None  # no estimate yet (e.g. parked all along): an error figure would be meaningless
    R = None
    for key, scale in (("R", 1.0), ("rotation", 1.0), ("R_q14", 16384.0), ("R_e6", 1e6)):
        m = cal.get(key)
        if isinstance(m, (list, tuple)) and len(m) == 9:
            R = [[m[3 * i + j] / scale for j in range(3)] for i in range(3)]
        elif isinstance(m, (list, tuple)) and len(m) == 3:
            R = [[c / scale for c in row] for row in m]
        if R is not None:
            break
    if R is not None:
        try:
            return round(rotation_angle_deg(truth["mounts"][-1]["R"], R), 2)
        except (TypeError, IndexError, ValueError):
            return None
    if cal.get("error_deg") is not None:
        return cal["error_deg"]
    return None


def _commit_figures(truth, cal):
    """(seconds of the trip from its first movement to the calibration's last commit, worst of the forward and
    up axis errors then, degrees) from the box's calib_commit and the truth mount of that moment; Nones when
    the box never committed or the trace has no truth mount."""
    cc = cal.get("calib_commit") if isinstance(cal, dict) else None
    if not cc or not truth["mounts"] or not truth["trips"]:
        return None, None
    t = cc["t_ms"] / 1000.0
    mount = truth["mounts"][0]["R"]
    for m in truth["mounts"]:
        if m["t"] <= t:
            mount = m["R"]
    Rq = cc["R_q14"]
    worst = 0.0
    for row in (0, 2):
        est = [Rq[3 * row + j] / 16384.0 for j in range(3)]
        n = math.sqrt(sum(c * c for c in est)) or 1.0
        c = sum(est[j] * mount[row][j] for j in range(3)) / n
        worst = max(worst, math.degrees(math.acos(max(-1.0, min(1.0, c)))))
    start = truth["trips"][0]["start"]
    for tr in truth["trips"]:
        if tr["start"] <= t:
            start = tr["start"]
    # driving starts with the trip's first movement (a warm-up idle is not driving)
    for ms in truth.get("move_starts", []):
        if ms >= start - 1.0:
            start = max(start, ms) if ms <= t else start
            break
    return round(t - start, 1), round(worst, 2)


def score(truth, report):
    """Compare one replay report with its truth. Returns the per-scenario metrics dict."""
    det = detected_events(report)
    per, fps, fns = match_events(truth["events"], det)
    odo = float(report.get("odometer_m") or 0.0)
    # distance the box flagged as driven while it was off (tamper unaccounted_distance, mm): not
    # billed as driven by the box, but reported, so the insurer sees all of it
    unacc = sum(t.get("value", 0) for t in report.get("tamper", [])
                if t.get("reason") == "unaccounted_distance") / 1000.0
    if unacc:
        odo += unacc
    tdist = truth["dist_m"]
    trip_m = sum(float(t.get("distance_m") or 0.0) for t in report.get("trips", []))
    truth_trip_m = sum(t["dist_m"] for t in truth["trips"])
    ref = tdist - truth.get("unobservable_m", 0.0)
    err = (odo - ref) / ref * 100.0 if ref >= 100.0 else None
    raw_err = (odo - tdist) / tdist * 100.0 if tdist >= 100.0 else None
    trip_err = (trip_m - truth_trip_m) / truth_trip_m * 100.0 if truth_trip_m >= 100.0 else None
    drift = None
    if tdist < 1.0 and truth["parked_h"] > 0:
        drift = odo / truth["parked_h"]
    truth_crash = any(e["type"] == "crash" for e in truth["events"])
    crash_detected = per.get("crash", {}).get("tp", 0) > 0
    harsh_fp = sum(per.get(k, {}).get("fp", 0) for k in HARSH_TYPES + ("crash", "unclassified"))
    cal = report.get("calibration") or {}
    recs = report.get("records") or {}
    ct, cax = _commit_figures(truth, cal)
    cc = cal.get("calib_commit") if isinstance(cal, dict) else None
    return {
        "scenario": truth["scenario"],
        "duration_s": round(truth["duration_s"], 1),
        "truth_km": round(tdist / 1000.0, 3),
        "odometer_km": round(odo / 1000.0, 3),
        "unaccounted_km": round(unacc / 1000.0, 3),
        "distance_error_pct": round(err, 3) if err is not None else None,
        "unobservable_km": round(truth.get("unobservable_m", 0.0) / 1000.0, 3),
        "distance_error_raw_pct": round(raw_err, 3) if raw_err is not None else None,
        "truth_trip_km": round(truth_trip_m / 1000.0, 3),
        "trip_km": round(trip_m / 1000.0, 3),
        "trip_distance_error_pct": round(trip_err, 3) if trip_err is not None else None,
        "trips_truth": len(truth["trips"]),
        "trips_box": len(report.get("trips", [])),
        "parked_h": round(truth["parked_h"], 3),
        "parked_drift_m_per_h": round(drift, 2) if drift is not None else None,
        "events": per,
        "false_events": harsh_fp,
        "false_positives": fps,
        "missed": fns,
        "crash_truth": truth_crash,
        "crash_detected": crash_detected if truth_crash else None,
        "calibration_state": cal.get("state") or cal.get("calib_state"),
        "calibration_quality": cal.get("quality") if cal.get("quality") is not None
        else cal.get("calib_quality"), "calibration_error_deg": _calibration_error(truth, cal),
        "calibration_time_s": ct,
        "calibration_axis_err_at_commit_deg": cax,
        "calibration_commit_t_s": cc["t_ms"] / 1000.0 if cc else None,   # trace time of the last commit
        "records": recs.get("count"),
        "record_bytes": recs.get("bytes"),
        "fixes": recs.get("fixes"),
        "bytes_per_fix": recs.get("bytes_per_fix"),
    }


def aggregate(results):
    """Totals over scenarios (those that replayed)."""
    ok = [r for r in results if "error" not in r]
    per = {}
    for r in ok:
        for k, c in r["events"].items():
            t = per.setdefault(k, {"tp": 0, "fp": 0, "fn": 0, "marginal": 0})
            for f in ("tp", "fp", "fn", "marginal"):
                t[f] += c.get(f, 0)
    pr = {}
    for k, c in sorted(per.items()):
        p, rc = precision_recall(c)
        pr[k] = dict(c, precision=round(p, 3) if p is not None else None,
                     recall=round(rc, 3) if rc is not None else None)
    harsh = {"tp": 0, "fp": 0, "fn": 0}
    for k in HARSH_TYPES:
        for f in harsh:
            harsh[f] += per.get(k, {}).get(f, 0)
    hp, hr = precision_recall(harsh)
    errs = [abs(r["distance_error_pct"]) for r in ok if r["distance_error_pct"] is not None]
    drifts = [r["parked_drift_m_per_h"] for r in ok if r["parked_drift_m_per_h"] is not None]
    km = sum(r["truth_km"] for r in ok)
    fevents = sum(r["false_events"] for r in ok)
    fixes = sum(r["fixes"] or 0 for r in ok)
    rbytes = sum(r["record_bytes"] or 0 for r in ok)
    crashes = [r["crash_detected"] for r in ok if r["crash_truth"]]
    cal = [r["calibration_error_deg"] for r in ok if r["calibration_error_deg"] is not None]
    ctimes = sorted(r["calibration_time_s"] for r in ok if r.get("calibration_time_s") is not None)
    caxes = [r["calibration_axis_err_at_commit_deg"] for r in ok
             if r.get("calibration_axis_err_at_commit_deg") is not None]
    return {
        "calibration_time_s_median": ctimes[len(ctimes) // 2] if ctimes else None,
        "calibration_time_s_max": ctimes[-1] if ctimes else None,
        "calibrated": "%d/%d" % (len(ctimes), sum(1 for r in ok if r["trips_truth"])),
        "calibration_axis_err_at_commit_deg_max": round(max(caxes), 2) if caxes else None,
        "scenarios": len(results),
        "replayed": len(ok),
        "failed": [r["scenario"] for r in results if "error" in r],
        "truth_km": round(km, 3),
        "distance_error_pct_max_abs": round(max(errs), 3) if errs else None,
        "distance_error_pct_mean_abs": round(sum(errs) / len(errs), 3) if errs else None,
        "parked_drift_m_per_h_max": round(max(drifts), 2) if drifts else None,
        "events": pr,
        "harsh_precision": round(hp, 3) if hp is not None else None,
        "harsh_recall": round(hr, 3) if hr is not None else None,
        "false_events_per_100km": round(fevents / km * 100.0, 2) if km > 0 else None,
        "crash_detected": "%d/%d" % (sum(1 for c in crashes if c), len(crashes)) if crashes else None,
        # a crash record where the truth has none (a shock taken for a crash: pothole, kerb, dropped box)
        "crash_false_alarms": per.get("crash", {}).get("fp", 0),
        "calibration_error_deg_max": round(max(cal), 2) if cal else None,
        "bytes_per_fix": round(rbytes / float(fixes), 2) if fixes else None,
    }


# ------------------------------------------------------------------------------------------ running
def _one(job):
    name, seed, workdir, runtime, gnss_hz, duration_s, replay = job[:7]
    lag_s, sensor = job[7] if len(job) > 7 else (0.0, "lis3dh")
    t0 = time.time()
    try:
        if os.path.exists(name):
            path = name
        else:
            from tools.sim.engine import simulate
            path = os.path.join(workdir,
                                "%s-s%d-%dhz-lag%.1f-%s.jsonl.gz" % (name, seed, gnss_hz, lag_s, sensor))
            simulate(path, name, seed=seed, gnss_hz=gnss_hz, duration_s=duration_s.get(name),
                     gnss_lag_s=lag_s, sensor=sensor)
        truth = truth_from_trace(path)
        t1 = time.time()
        if replay is None:
            from tools.trace.replay import replay_trace as replay
        report = replay(path, runtime=runtime)
        res = score(truth, report)
        res["replay_s"] = round(time.time() - t1, 2)
    except Exception as e:   # one failing scenario is reported, not fatal
        res = {"scenario": os.path.basename(name),
               "error": "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")}
    res["wall_s"] = round(time.time() - t0, 2)
    return res


def evaluate(scenarios, runtime="cpython", seed=1, gnss_hz=1, workdir=None, jobs=1, duration_s=None,
             replay=None, gnss_lag_s=0.0, sensor="lis3dh"):
    """Simulate + replay + score every scenario. Returns {'results': [...], 'totals': {...}}.
    gnss_lag_s / sensor: the simulator's GNSS output latency and accelerometer class (docs/simulator.md)."""
    duration_s = duration_s or {}
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="paydbox-eval-")
        workdir = tmp.name
    else:
        os.makedirs(workdir, exist_ok=True)
    try:
        jobsl = [(s, seed, workdir, runtime, gnss_hz, duration_s, replay, (gnss_lag_s, sensor))
                 for s in scenarios]
        if jobs > 1 and len(jobsl) > 1 and replay is None:
            import multiprocessing
            with multiprocessing.get_context("spawn").Pool(min(jobs, len(jobsl))) as pool:
                results = pool.map(_one, jobsl, chunksize=1)
        else:
            results = [_one(j) for j in jobsl]
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"runtime": runtime, "seed": seed, "gnss_hz": gnss_hz, "gnss_lag_s": gnss_lag_s, "sensor": sensor,
            "results": results, "totals": aggregate(results), "targets": TARGETS}


def evaluate_matrix(scenarios, lags, sensors, **kw):
    """evaluate() for every (GNSS lag, sensor class) pair -> list of (lag, sensor, evaluation)."""
    out = []
    for lag in lags:
        for sensor in sensors:
            out.append((lag, sensor, evaluate(scenarios, gnss_lag_s=lag, sensor=sensor, **kw)))
    return out


def format_matrix(rows):
    """One line per GNSS lag and sensor class: harsh precision / recall, calibration time and axis errors."""
    out = ["GNSS lag  sensor   harsh P  harsh R   TP  FP  FN  calibrated  calib s med/max  axis err at "
           "commit max  calib err at end max"]
    for lag, sensor, ev in rows:
        t = ev["totals"]
        ev_h = {"tp": 0, "fp": 0, "fn": 0}
        for k in HARSH_TYPES:
            for f in ev_h:
                ev_h[f] += t["events"].get(k, {}).get(f, 0)
        out.append("%6.1f s  %-7s  %7s  %7s  %3d %3d %3d  %10s  %7s / %-7s  %22s  %20s" % (
            lag, sensor, _f(t["harsh_precision"], "%.3f"), _f(t["harsh_recall"], "%.3f"), ev_h["tp"],
            ev_h["fp"], ev_h["fn"], t["calibrated"], _f(t["calibration_time_s_median"], "%.1f"),
            _f(t["calibration_time_s_max"], "%.1f"),
            _f(t["calibration_axis_err_at_commit_deg_max"], "%.1f deg"),
            _f(t["calibration_error_deg_max"], "%.1f deg")))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ output
def _f(v, fmt="%.2f"):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    return fmt % v if isinstance(v, float) else str(v)


def format_table(ev):
    rows = []
    hdr = ("scenario", "km", "box km", "err %", "trips", "TP/FP/FN", "crash", "drift m/h", "calib", "B/fix",
           "s")
    rows.append(hdr)
    for r in ev["results"]:
        if "error" in r:
            rows.append((r["scenario"], "ERROR: " + r["error"][:90]) + ("",) * (len(hdr) - 2))
            continue
        tp = sum(c["tp"] for c in r["events"].values())
        fp = sum(c["fp"] for c in r["events"].values())
        fn = sum(c["fn"] for c in r["events"].values())
        cal = r["calibration_state"] or "-"
        if r["calibration_error_deg"] is not None:
            cal = "%s %.1f deg" % (cal, r["calibration_error_deg"])
        rows.append((r["scenario"], "%.3f" % r["truth_km"], "%.3f" % r["odometer_km"],
                     _f(r["distance_error_pct"]),
                     "%d/%d" % (r["trips_box"], r["trips_truth"]), "%d/%d/%d" % (tp, fp, fn),
                     _f(r["crash_detected"]),
                     _f(r["parked_drift_m_per_h"], "%.1f"), cal, _f(r["bytes_per_fix"]),
                     _f(r.get("wall_s"), "%.0f")))
    widths = [max(len(str(row[i])) for row in rows if len(row) > i and not str(row[1]).startswith("ERROR"))
              for i in range(len(hdr))]
    out = []
    for row in rows:
        if str(row[1]).startswith("ERROR"):
            out.append("%-*s  %s" % (widths[0], row[0], row[1]))
        else:
            out.append("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                 for i, c in enumerate(row)))
    t = ev["totals"]
    out.append("")
    out.append("events (all scenarios)    TP   FP   FN  precision  recall")
    for k, c in t["events"].items():
        out.append("  %-22s %4d %4d %4d  %9s  %6s"
                   % (k, c["tp"], c["fp"], c["fn"], _f(c["precision"], "%.3f"),
                                                   _f(c["recall"], "%.3f")))
    out.append("")
    out.append("totals: %d/%d scenarios replayed, %.2f true km; |distance error| max %s %% (target <= %.1f); "
               "parked drift max %s m/h (target <= %.0f)" % (
                   t["replayed"], t["scenarios"], t["truth_km"], _f(t["distance_error_pct_max_abs"]),
                   TARGETS["distance_error_pct"], _f(t["parked_drift_m_per_h_max"], "%.1f"),
                   TARGETS["parked_drift_m_per_h"]))
    out.append("        harsh precision %s recall %s (target >= 0.95); false events %s per 100 km (target <= "
               "1); crash %s (false alarms %d); calib error max %s deg; %s bytes/fix (target <= 4)" % (
                   _f(t["harsh_precision"], "%.3f"), _f(t["harsh_recall"], "%.3f"),
                   _f(t["false_events_per_100km"]),
                   t["crash_detected"] or "-", t.get("crash_false_alarms", 0),
                   _f(t["calibration_error_deg_max"], "%.1f"), _f(t["bytes_per_fix"])))
    out.append("        calibrated %s; time to calibrate median %s s, max %s s (target <= 60); axis error at "
               "commit max %s deg "
               "(target <= 5)" % (t["calibrated"], _f(t["calibration_time_s_median"], "%.1f"),
                                  _f(t["calibration_time_s_max"], "%.1f"),
                                  _f(t["calibration_axis_err_at_commit_deg_max"], "%.1f")))
    return "\n".join(out)


FULL_SUITE = None  # filled lazily from tools.sim.scenarios


def add_arguments(p):
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help="scenario names or trace files with truth (default: the full suite; 'ci' = the "
                        "reduced CI suite)")
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--gnss-hz", type=int, default=1, choices=(1, 5, 10))
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="scenarios replayed in parallel")
    p.add_argument("--keep", metavar="DIR", help="keep the simulated traces in DIR")
    p.add_argument("--json", metavar="OUT", help="write the full results as JSON to OUT ('-' = stdout)")
    p.add_argument("--gnss-lag-s", default="0", metavar="LIST",
                   help="GNSS output latency of the simulated receiver, s (comma list, 0..2, e.g. 0,1,2)")
    p.add_argument("--sensor", default="lis3dh", metavar="LIST",
                   help="simulated accelerometer class(es): lis3dh, 10hz, phone (comma list)")


def resolve(names):
    from tools.sim import scenarios as sc
    if not names:
        return list(sc.SCENARIOS)
    out = []
    for n in names:
        if n == "ci":
            out.extend(sc.CI_SUITE)
        elif n == "all":
            out.extend(sc.SCENARIOS)
        elif os.path.exists(n):
            out.append(n)
        else:
            sc.get(n)   # ValueError naming the scenario
            out.append(n)
    return out


def _lists(args):
    from tools.sim.engine import SENSORS
    try:
        lags = [float(x) for x in args.gnss_lag_s.split(",") if x.strip()]
    except ValueError:
        raise ValueError("--gnss-lag-s: expected comma-separated seconds, got %r" % args.gnss_lag_s)
    for v in lags:
        if not 0.0 <= v <= 3.0:
            raise ValueError("--gnss-lag-s: %g is outside 0..3 s" % v)
    sensors = [x.strip() for x in args.sensor.split(",") if x.strip()]
    for x in sensors:
        if x not in SENSORS:
            raise ValueError("--sensor: %r is not one of %s" % (x, ", ".join(SENSORS)))
    return lags or [0.0], sensors or ["lis3dh"]


def run(args):
    names = resolve(args.scenarios)
    if args.jobs < 1:
        raise ValueError("--jobs: must be >= 1")
    lags, sensors = _lists(args)
    if len(lags) > 1 or len(sensors) > 1:
        rows = evaluate_matrix(names, lags, sensors, runtime=args.runtime, seed=args.seed,
                               gnss_hz=args.gnss_hz, workdir=args.keep, jobs=args.jobs)
        if args.json == "-":
            print(json.dumps([{"gnss_lag_s": a, "sensor": b, "evaluation": c} for a, b, c in rows], indent=1))
        else:
            print(format_matrix(rows))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump([{"gnss_lag_s": a, "sensor": b, "evaluation": c} for a, b, c in rows], f,
                              indent=1)
                print("wrote %s" % args.json)
        return 1 if any(c["totals"]["failed"] for _, _, c in rows) else 0
    ev = evaluate(names, runtime=args.runtime, seed=args.seed, gnss_hz=args.gnss_hz, workdir=args.keep,
                  jobs=args.jobs, gnss_lag_s=lags[0], sensor=sensors[0])
    if args.json == "-":
        print(json.dumps(ev, indent=1))
    else:
        print(format_table(ev))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(ev, f, indent=1)
            print("wrote %s" % args.json)
    return 1 if ev["totals"]["failed"] else 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["evaluate"] + sys.argv[1:]))
