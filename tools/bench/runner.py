"""paydbox bench: every benchmark of the project in one command, written to docs/BENCHMARKS.md.

Runs each `tools/bench/bench_*.py` module (`run(quick=False) -> dict`) in its own subprocess (a failing or
hanging module is reported in the file, never fatal), the full evaluation against the simulator's ground
truth, and computes the storage reference points (raw NMEA, CSV + gzip, Teltonika Codec 8) on the same
simulated drive, then writes the figures side by side with the targets of the issues.
"""
import datetime
import glob
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time

from tools.mpvm import MicroPythonNotFound, micropython_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = "@@PAYDBOX-BENCH@@"

_CHILD = """
import json, sys
sys.path.insert(0, %(root)r)
import importlib
m = importlib.import_module(%(mod)r)
r = m.run(quick=%(quick)r)
print(%(mark)r + json.dumps({"figures": r, "note": getattr(m, "NOTE", None)}, default=str))
"""


# ------------------------------------------------------------------------------------------ machine
def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mp = None
    try:
        exe = micropython_binary()
    except MicroPythonNotFound:
        exe = None
    if exe:
        try:
            p = subprocess.run([exe, "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3], "
                                           "'(' + sys.version + ')')"],
                               capture_output=True, text=True, timeout=20)
            mp = p.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            mp = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "micropython": mp or "not found", "os": platform.platform()}


# ------------------------------------------------------------------------------------------ modules
def bench_modules():
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(ROOT, "tools", "bench", "bench_*.py")))


def run_module(name, quick, timeout):
    code = _CHILD % {"root": ROOT, "mod": "tools.bench." + name, "quick": bool(quick), "mark": MARK}
    t0 = time.time()
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %d s" % timeout, "wall_s": round(time.time() - t0, 1)}
    wall = round(time.time() - t0, 1)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(MARK):
            try:
                res = json.loads(line[len(MARK):])
            except ValueError as e:
                return {"error": "bad result: %s" % e, "wall_s": wall}
            note, res = res.get("note"), res.get("figures")
            if not isinstance(res, dict):
                return {"error": "run() returned %s, not a dict" % type(res).__name__, "wall_s": wall}
            return {"figures": res, "wall_s": wall, "note": note,
                    "at": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")}
    tail = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines()
            or ["exit status %d" % p.returncode])[-1]
    return {"error": tail[:300], "wall_s": wall}


# ------------------------------------------------------------------------------------------ reference points
def _fixes_from_trace(path):
    """(utc_s, lat_e7, lon_e7, speed_mmps, course_cdeg, hdop_x10, sats, alt_dm) per valid epoch + raw
    bytes."""
    import pynmea2

    from hw.trace_format import read_trace
    _, lines = read_trace(path)
    raw = 0
    raw_rmc_gga = 0
    epochs = 0
    fixes = []
    for ln in lines:
        if ln["s"] != "gnss":
            continue
        d = ln["d"]
        raw += len(d)
        epochs += 1
        rmc = gga = None
        for s in d.split("\r\n"):
            if not s:
                continue
            if s[3:6] in ("RMC", "GGA"):
                raw_rmc_gga += len(s) + 2
            try:
                m = pynmea2.parse(s)
            except pynmea2.ParseError:
                continue
            if m.sentence_type == "RMC":
                rmc = m
            elif m.sentence_type == "GGA":
                gga = m
        if rmc is None or gga is None or rmc.status != "A":
            continue
        dt = datetime.datetime.combine(rmc.datestamp, rmc.timestamp.replace(tzinfo=None))
        utc_s = int((dt - datetime.datetime(2000, 1, 1)).total_seconds())
        fixes.append((utc_s, int(round(rmc.latitude * 1e7)), int(round(rmc.longitude * 1e7)),
                      int(round(float(rmc.spd_over_grnd or 0) * 514.444)),
                      int(round(float(rmc.true_course or 0) * 100)),
                      int(round(float(gga.horizontal_dil) * 10)),
                      int(gga.num_sats), int(round(float(gga.altitude or 0) * 10))))
    return fixes, raw, raw_rmc_gga, epochs


def codec8_packets(fixes, io_n1=0, io_n2=0, io_n4=0, per_packet=60):
    """Real Teltonika Codec 8 AVL packets for the fixes (IO elements: counts of 1/2/4-byte values)."""
    from edge_agent.teltonika import crc16_ibm  # the forwarder's own CRC (one home)

    total = 0
    nrec = 0
    for i in range(0, len(fixes), per_packet):
        recs = []
        for f in fixes[i:i + per_packet]:
            utc_s, lat, lon, spd, crs, hdop, sats, alt = f
            ts_ms = (utc_s + 946684800) * 1000
            gps = struct.pack(">iihHBH", lon, lat, max(-32768, min(32767, alt // 10)), (crs // 100) % 360,
                              sats, min(65535, spd * 36 // 10000))
            io = struct.pack(">BB", 0, io_n1 + io_n2 + io_n4)
            io += struct.pack(">B", io_n1) + b"".join(struct.pack(">BB", 1 + k, 1) for k in range(io_n1))
            io += struct.pack(">B", io_n2) + b"".join(struct.pack(">BH", 60 + k, 12000) for k in range(io_n2))
            io += struct.pack(">B", io_n4) + b"".join(struct.pack(">BI", 90 + k, 1) for k in range(io_n4))
            io += struct.pack(">B", 0)
            recs.append(struct.pack(">QB", ts_ms, 0) + gps + io)
        data = struct.pack(">BB", 0x08, len(recs)) + b"".join(recs) + struct.pack(">B", len(recs))
        pkt = b"\x00\x00\x00\x00" + struct.pack(">I", len(data)) + data + struct.pack(">I", crc16_ibm(data))
        total += len(pkt)
        nrec += len(recs)
    return total, nrec, (len(recs[0]) if fixes else 0)


def reference_points(workdir, seed=1):
    """Storage per 1 Hz fix of a simulated commute for the usual encodings."""
    from tools.sim.engine import simulate
    path = os.path.join(workdir, "ref-commute.jsonl.gz")
    simulate(path, "commute", seed=seed)
    fixes, raw, raw_rmc_gga, epochs = _fixes_from_trace(path)
    n = len(fixes)
    csv = "utc_s,lat_e7,lon_e7,speed_mmps,course_cdeg,hdop_x10,sats\n" + "".join(
        "%d,%d,%d,%d,%d,%d,%d\n" % f[:7] for f in fixes)
    csv_gz = len(gzip.compress(csv.encode(), 9, mtime=0))
    c8, nrec, rec_len = codec8_packets(fixes)
    c8io, _, rec_len_io = codec8_packets(fixes, io_n1=4, io_n2=3, io_n4=1)
    return {
        "fixes": n,
        "raw NMEA (RMC+GGA+GSA+VTG) B/fix": round(raw / float(epochs), 1),
        "raw NMEA (RMC+GGA) B/fix": round(raw_rmc_gga / float(epochs), 1),
        "CSV B/fix": round(len(csv) / float(n), 2),
        "CSV+gzip B/fix": round(csv_gz / float(n), 2),
        "Codec 8 record, no IO (B)": rec_len,
        "Codec 8 B/fix, no IO, 60 per packet": round(c8 / float(nrec), 2),
        "Codec 8 record, 8 IO (B)": rec_len_io,
        "Codec 8 B/fix, 8 IO, 60 per packet": round(c8io / float(nrec), 2),
    }


# ------------------------------------------------------------------------------------------ report
def _find(figs, *words):
    """First figure whose name contains every word (case-insensitive): (module, name, value)."""
    for mod, r in figs.items():
        for k, v in (r.get("figures") or {}).items():
            kl = k.lower()
            if all(w in kl for w in words) and isinstance(v, (int, float)) and not isinstance(v, bool):
                return mod, k, v
    return None


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%.3f" % v).rstrip("0").rstrip(".") if abs(v) < 1000 else "%.0f" % v
    if isinstance(v, (dict, list)):
        s = json.dumps(v)
        return s if len(s) < 80 else s[:77] + "..."
    return str(v)


def targets_rows(ev, mods):
    t = ev["totals"] if ev else {}
    rows = []

    def row(name, target, value, ok):
        rows.append((name, target, _fmt(value), "-" if value is None else ("met" if ok else "**not met**")))

    v = t.get("distance_error_pct_max_abs")
    row("distance error per drive (max abs %)", "<= 0.5 %", v, v is not None and v <= 0.5)
    v = t.get("parked_drift_m_per_h_max")
    row("phantom distance while parked (m/h)", "<= 10 m/h", v, v is not None and v <= 10)
    ev_t = t.get("events") or {}
    for k in sorted(ev_t):
        c = ev_t[k]
        for what in ("precision", "recall"):
            v = c.get(what)
            row("%s %s" % (k, what), ">= 0.95", v, v is not None and v >= 0.95)
    v = t.get("false_events_per_100km")
    row("false events (harsh, crash, unclassified) per 100 km", "<= 1", v, v is not None and v <= 1)
    v = t.get("bytes_per_fix")
    row("stored bytes per 1 Hz fix (records.bytes / fixes)", "<= 4", v, v is not None and v <= 4)
    link = _find(mods, "efficiency")
    v = link[2] if link else None
    if v is not None and v <= 1.0:
        v = v * 100.0
    row("link efficiency (payload / line bytes, %)", ">= 85 %", v, v is not None and v >= 85)
    fw = _find(mods, "firmware_cpu_factor")
    v = fw[2] if fw else None
    row("firmware CPU factor (box s per CPU s, MicroPython VM)", ">= 1000", v, v is not None and v >= 1000)
    fw = _find(mods, "board_heap_min_kib")  # the bundled drive's (listed before the long drives')
    v = fw[2] if fw else None
    row("smallest --board-heap for the bundled drive (KiB)", "<= 96", v, v is not None and v <= 96)
    fw = _find(mods, "drive_3h_1hz_board_heap_min_kib")
    v = fw[2] if fw else None
    row("smallest --board-heap for a 3-hour 1 Hz drive (KiB)", "<= 96", v, v is not None and v <= 96)
    # issue 19: calibration on the real drives (../shared/data/imu, 20 mountings each) and at 2 s GNSS lag
    m = (mods.get("bench_motion") or {}).get("figures") or {}
    for drive in ("comma2k19", "genivi"):
        if ("real_%s_mounts" % drive) not in m:
            continue
        fails = m.get("real_%s_not_calibrated_in_120s" % drive)
        v = m.get("real_%s_calib_driving_s_max" % drive)
        row("%s drive: calibrated within (s of driving, worst of %s mountings)"
            % (drive, m["real_%s_mounts" % drive]), "<= 60 s", v, v is not None and v <= 60 and not fails)
        v = m.get("real_%s_axis_err_at_commit_deg_max" % drive)
        row("%s drive: worst axis error at commit (deg)" % drive, "<= 5", v, v is not None and v <= 5)
    for what in ("precision", "recall"):
        vals = [v for k, v in m.items() if k.startswith("lag2s_") and k.endswith("_harsh_" + what)]
        v = min(vals) if vals else None
        row("harsh %s at 2 s GNSS lag (worst sensor class)" % what, ">= 0.95", v, v is not None and v >= 0.95)
    pw = (mods.get("bench_power") or {}).get("figures") or {}
    v = pw.get("esp32_avg_parked_ma")
    row("average parked current at 12 V, parked week incl. daily heartbeat (mA, ESP32)", "<= 2.0 (goal 1.0)",
        v, v is not None and v <= 2.0)
    v = None if not pw else pw.get("agent_wakes_door_slam", 0) + pw.get("agent_wakes_wind", 0)
    row("agent wakes from door slams and wind, parked week", "0", v, v == 0)
    v = pw.get("towing_detected")
    row("night-time tow detected while asleep, parked week", "1", v, v == 1)
    v = pw.get("records_lost")
    row("records lost across sleeps, cut-offs and agent shutdowns, parked week", "0", v, v == 0)
    return rows


def write_markdown(path, info, mods, ev, ev_extra, refs, quick, started, wall_s, kept=None):
    from tools.trace.evaluate import format_table
    L = []
    L.append("# paydbox benchmarks")
    L.append("")
    L.append("Written by `paydbox bench%s` on %s UTC (%.0f s). Do not edit by hand: rerun the command." % (
        " --quick" if quick else "", started.strftime("%Y-%m-%d %H:%M"), wall_s))
    L.append("")
    L.append("| machine | |")
    L.append("|---|---|")
    for k in ("cpu", "cores", "python", "micropython", "os"):
        L.append("| %s | %s |" % (k, info.get(k)))
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| figure | target | measured | |")
    L.append("|---|---|---|---|")
    # modules an --only run did not rerun count with their kept figures (their sections below say so)
    figs = figures_of_sections(kept or {})
    figs.update(mods)
    for r in targets_rows(ev, figs):
        L.append("| %s | %s | %s | %s |" % r)
    L.append("")
    if kept:
        L.append("Figures of modules not rerun by this `--only` run are from their kept sections below.")
        L.append("")
    L.append("## Storage per position fix, against the reference points")
    L.append("")
    L.append("Same simulated commute (1 Hz fixes); raw NMEA is what the receiver prints, CSV + gzip a naive "
             "log, Codec 8 real Teltonika AVL packets (8 B timestamp + 1 B priority + 15 B GPS element + 6 B "
             "IO counts = 30 B per record with no IO element; a typical tracker sends ~8 IO elements).")
    L.append("")
    L.append("| encoding | bytes per fix |")
    L.append("|---|---|")
    for k, v in (refs or {}).items():
        if k not in ("fixes", "error"):
            L.append("| %s | %s |" % (k, _fmt(v)))
    if ev:
        L.append("| **paydbox records (evaluation, all scenarios)** | **%s** |"
                 % _fmt(ev["totals"].get("bytes_per_fix")))
    if isinstance(refs, dict) and refs.get("error"):
        L.append("")
        L.append("reference points failed: %s" % refs["error"])
    L.append("")
    L.append("## Evaluation against the simulator's ground truth")
    L.append("")
    if ev:
        L.append("Scenarios simulated with `paydbox simulate` (seed %d, GNSS %d Hz), replayed through the "
                 "firmware (%s). Events: a detection matches a truth event of its type when its time is "
                 "within the truth interval +- 2 s. `paydbox evaluate --json` gives every number."
                 % (ev["seed"], ev["gnss_hz"], ev["runtime"]))
        L.append("")
        L.append("```")
        L.append(format_table(ev))
        L.append("```")
    for title, e in ev_extra:
        L.append("")
        L.append("### %s" % title)
        L.append("")
        L.append("```")
        L.append(format_table(e))
        L.append("```")
    L.append("")
    L.append("## Benchmark modules")
    L.append("")
    if not mods and not kept:
        L.append("(no tools/bench/bench_*.py module found)")
    for name, r in mods.items():
        L += module_section(name, r)
    mark = "(from the previous run of this file: not rerun by this `--only` run)"
    for name in sorted(kept or {}):
        sec = kept[name].split("\n", 1)
        L.append(sec[0])
        L.append("")
        L.append(mark)
        # a section kept twice keeps one mark
        L.append((sec[1] if len(sec) > 1 else "").replace("\n" + mark + "\n", "\n", 1))
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


def module_section(name, r):
    """The lines of one module's section: heading (wall time, when it ran), the module's NOTE, its table."""
    L = ["### %s (%.0f s%s)" % (name, r.get("wall_s", 0), ", " + r["at"] if r.get("at") else ""), ""]
    if r.get("note"):
        L += [r["note"], ""]
    if "error" in r:
        return L + ["**failed**: `%s`" % r["error"], ""]
    L += ["| figure | value |", "|---|---|"]
    for k, v in r["figures"].items():
        L.append("| %s | %s |" % (k, _fmt(v)))
    return L + [""]


def splice_sections(path, mods):
    """Rewrite only the sections of the modules in `mods` in an existing BENCHMARKS.md (an --only run):
    everything else, the evaluation included, stays as the run that wrote it left it. A module without a
    section yet is added at the end of the modules."""
    with open(path) as f:
        text = f.read()
    for name, r in mods.items():
        sec = "\n".join(module_section(name, r)).rstrip("\n") + "\n"
        i = text.find("\n### %s " % name)
        if i < 0:
            text = text.rstrip("\n") + "\n\n" + sec
            continue
        j = min([k for k in (text.find("\n### ", i + 1), text.find("\n## ", i + 1)) if k >= 0] or [len(text)])
        text = text[:i + 1] + sec + text[j:]
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n")


# --------------------------------------------------------------------------------------- generated doc tables
# Figures quoted in other docs are written there by the bench too, between
#   <!-- bench:MODULE --> ... <!-- /bench -->
# so they never go stale by hand: (label, format, figure keys) per row.
def _pr(f, kind):
    return "%s / %s" % (_fmt(f.get(kind + "_precision")), _fmt(f.get(kind + "_recall")))


def _fleet_rows():
    """docs/fleet.md: each fleet-sim configuration of bench_fleet on SQLite and on PostgreSQL."""
    from tools.bench.bench_fleet import RUNS, name_of

    def both(cfg, key):
        return lambda f: " / ".join(_fmt(f.get("%s, %s: %s" % (db, name_of(*cfg), key)))
                                    for db in ("sqlite", "postgresql"))

    def store(f):
        return " / ".join(_fmt(next((v for k, v in f.items() if k.startswith(db + ", store_blocks alone")),
                                    None))
                          for db in ("sqlite", "postgresql"))

    rows = [("store_blocks alone, 20 blocks per transaction (records/s), SQLite / PostgreSQL", store, None)]
    for cfg in RUNS:
        n = name_of(*cfg)
        rows += [
            ("%s: stored / lost, SQLite; PostgreSQL" % n, lambda f, n=n: "; ".join(
                "%s / %s" % (_fmt(f.get("%s, %s: records_stored" % (db, n))),
                             _fmt(f.get("%s, %s: records_lost" % (db, n))))
                for db in ("sqlite", "postgresql")), None),
            ("%s: consumer kept up with (records/s), SQLite / PostgreSQL" % n,
             both(cfg, "ingest_records_per_s"), None),
            ("%s: PostgreSQL / SQLite" % n,
             lambda f, n=n: _fmt(f.get("%s: postgresql / sqlite ingest rate" % n)), None),
            ("%s: lag p50 (ms), SQLite / PostgreSQL" % n, both(cfg, "lag_p50_ms"), None),
            ("%s: lag p95 (ms), SQLite / PostgreSQL" % n, both(cfg, "lag_p95_ms"), None),
        ]
    return rows


DOC_TABLES = {
    "docs/fleet.md": ("bench_fleet", _fleet_rows()),
    "docs/motion.md": ("bench_motion", [
        ("harsh_accel precision / recall (%s truth events)", lambda f: _pr(f, "harsh_accel"),
         "harsh_accel_truth_n"),
        ("harsh_brake precision / recall (%s)", lambda f: _pr(f, "harsh_brake"), "harsh_brake_truth_n"),
        ("harsh_corner_left precision / recall (%s)", lambda f: _pr(f, "harsh_corner_left"),
         "harsh_corner_left_truth_n"),
        ("harsh_corner_right precision / recall (%s)", lambda f: _pr(f, "harsh_corner_right"),
         "harsh_corner_right_truth_n"),
        ("crash precision / recall (%s)", lambda f: _pr(f, "crash"), "crash_truth_n"),
        ("false events on calm drives with potholes and rough roads, per 100 km",
         lambda f: _fmt(f.get("calm_false_events_per_100km")), None),
        ("time to `calibrated` after trip start (median, s)",
         lambda f: _fmt(f.get("calib_time_to_calibrated_median_s")), None),
        ("axis error once calibrated, median / max, at 30 s / 120 s / 300 s (deg)", lambda f: ", ".join(
            "%s / %s" % (_fmt(f.get("calib_err_deg_median_at_%ds" % t)),
                         _fmt(f.get("calib_err_deg_max_at_%ds" % t)))
            for t in (30, 120, 300)), None),
        ("MicroPython unix VM, samples/s calibrated / calibrating (varies with host load)",
         lambda f: "%s / %s" % (
            _fmt(f.get("mp_samples_per_s_calibrated")), _fmt(f.get("mp_samples_per_s_calibrating"))), None),
        ("heap of one Motion at 100 Hz (bytes, 10 s crash ring included)",
         lambda f: _fmt(f.get("mp_heap_motion_bytes")), None),
        ("feed() under heap_lock",
         lambda f: "allocation-free" if f.get("mp_feed_runs_under_heap_lock") == 1 else "**allocates**",
         None),
        ("calibration lag bank, heap (bytes)", lambda f: _fmt(f.get("mp_heap_lag_bank_bytes")), None),
        ("calibration, one fix pair / one solve (us, MicroPython unix VM)", lambda f: "%s / %s" % (
            _fmt(f.get("mp_fix_pair_us")), _fmt(f.get("mp_calib_solve_us"))), None),
    ]),
    "docs/brokers.md": ("bench_brokers", [
        ("Mosquitto 2.0.11, MQTT 5", lambda f: _fmt(f.get("Mosquitto MQTT 5 blocks/s (median)")), None),
        ("Mosquitto 2.0.11, MQTT 3.1.1 (forced)",
         lambda f: _fmt(f.get("Mosquitto MQTT 3.1.1 blocks/s (median)")), None),
        ("NATS 2.9.10 MQTT mode (3.1.1 only), agent on `auto`",
         lambda f: _fmt(f.get("NATS MQTT (3.1.1 only), agent on auto blocks/s (median)")), None),
        ("the agent fell back to 3.1.1 by itself on NATS",
         lambda f: _fmt(f.get("agent fell back to 3.1.1 on NATS")), None),
    ]),
    "docs/power.md": ("bench_power", [
        ("days simulated (parked_week, seed 1)", lambda f: _fmt(f.get("days")), None),
        ("time in state: driving / parked / sleep / cutoff (h)", lambda f: " / ".join(
            _fmt(f.get("time_in_%s_h" % s)) for s in ("driving", "parked", "sleep", "cutoff")), None),
        ("agent wakes: ignition / heartbeat / tow / supply", lambda f: " / ".join(
            _fmt(f.get("agent_wakes_" + k)) for k in ("ignition", "heartbeat", "tow", "supply")), None),
        ("agent wakes: door slam / wind / car wash (target 0)", lambda f: " / ".join(
            _fmt(f.get("agent_wakes_" + k)) for k in ("door_slam", "wind", "car_wash")), None),
        ("accelerometer wakes of the box alone / rejected by the GNSS", lambda f: "%s / %s" % (
            _fmt(f.get("box_wakes_activity")), _fmt(f.get("rejected_wakes"))), None),
        ("tow detected; its alarm after the truck started moving (s)", lambda f: "%s; %s" % (
            "yes" if f.get("towing_detected") == 1 else "**no**", _fmt(f.get("tow_alarm_after_s"))), None),
        ("average parked current at 12 V incl. the daily heartbeat, ESP32 / RP2040 (mA; target <= 2.0, goal "
         "1.0)",
         lambda f: "%s / %s" % (_fmt(f.get("esp32_avg_parked_ma")), _fmt(f.get("rp2040_avg_parked_ma"))),
         None),
        ("days to half a 60 Ah battery, ESP32 / RP2040", lambda f: "%s / %s" % (
            _fmt(f.get("esp32_days_to_half_60ah")), _fmt(f.get("rp2040_days_to_half_60ah"))), None),
        ("records lost / records the box wrote (target 0)", lambda f: "%s / %s" % (
            _fmt(f.get("records_lost")), _fmt(f.get("records"))), None),
        ("agent shutdowns answered / agent power cuts / cut-offs", lambda f: "%s / %s / %s" % (
            _fmt(f.get("shutdowns_acked")), _fmt(f.get("agent_power_cuts")), _fmt(f.get("cutoffs"))), None),
        ("replay of the simulated days through the firmware (wall s, varies with host load)",
         lambda f: _fmt(f.get("replay_wall_s")), None),
    ]),
    "docs/installer.md": ("bench_installer", [
        ("full firmware (%s files), bytes of .mpy", lambda f: _fmt(f.get("firmware_bytes")),
         "firmware_files"),
        ("cold build (s)", lambda f: _fmt(f.get("build_cold_s")), None),
        ("full flash into the virtual box, build cached (s)", lambda f: _fmt(f.get("flash_full_s")), None),
        ("re-flash, nothing changed (s)", lambda f: _fmt(f.get("flash_noop_s")), None),
        ("boot of the flashed firmware in the VM (s)", lambda f: _fmt(f.get("boot_flashed_vm_s")), None),
        ("provision one box: keys, selftest, status (s)", lambda f: _fmt(f.get("provision_one_box_s")), None),
        ("console round trip (ms)", lambda f: _fmt(f.get("console_roundtrip_ms")), None),
        ("the same firmware over a real 115200-baud line (8N1: 11520 B/s), transfer alone (s)",
         lambda f: _fmt(round(f["firmware_bytes"] / 11520.0, 1)) if f.get("firmware_bytes") else "-", None),
    ]),
}


def update_doc_tables(mods, root=ROOT):
    """Rewrite each DOC_TABLES table from its module's figures (modules that ran without error)."""
    done = []
    for rel, (mod, rows) in DOC_TABLES.items():
        r = mods.get(mod)
        if not r or "figures" not in r:
            continue
        path = os.path.join(root, rel)
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        start = "<!-- bench:%s -->" % mod
        i = text.find(start)
        j = text.find("<!-- /bench -->", i)
        if i < 0 or j < 0:
            continue
        f = r["figures"]
        L = [start, "", "| figure | value |", "|---|---|"]
        for label, fmt, nkey in rows:
            L.append("| %s | %s |" % (label % _fmt(f.get(nkey)) if nkey else label, fmt(f)))
        L.append("")
        new = text[:i] + "\n".join(L) + "\n" + text[j:]
        if new != text:
            with open(path, "w") as fo:
                fo.write(new)
        done.append(rel)
    return done


def previous_sections(path):
    """{module: its section text} from an existing BENCHMARKS.md (kept when --only reruns others)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}
    out = {}
    parts = text.split("\n### ")
    for p in parts[1:]:
        name = p.split(" ", 1)[0]
        if name.startswith("bench_"):
            out[name] = "### " + p.rstrip("\n")
    return out


def figures_from_markdown(path):
    """{module: {"figures": {name: value}}} read back from a BENCHMARKS.md (its module tables)."""
    return figures_of_sections(previous_sections(path))


def figures_of_sections(sections):
    """{module: {"figures": {name: value}}} from module sections' text ({module: text})."""
    out = {}
    for name, sec in sections.items():
        figs = {}
        for line in sec.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 2 or cells[0] in ("figure", "") or cells[0].startswith("---"):
                continue
            v = cells[1]
            for conv in (int, float):
                try:
                    v = conv(v)
                    break
                except ValueError:
                    pass
            figs[cells[0]] = v
        out[name] = {"figures": figs}
    return out


def run_bench(quick=False, out=None, modules=None, scenarios=None, jobs=2):
    from tools.sim import scenarios as sc
    from tools.trace import evaluate as E

    started = datetime.datetime.utcnow()
    t0 = time.time()
    info = machine_info()
    names = modules if modules is not None else bench_modules()
    mods = {}
    for name in names:
        print("bench: %s ..." % name, file=sys.stderr)
        mods[name] = run_module(name, quick, timeout=900 if quick else 3000)
    out = out or os.path.join(ROOT, "docs", "BENCHMARKS.md")
    if modules is not None and scenarios is None and os.path.exists(out):
        # --only: those modules' sections are rewritten in place, the rest of the file is left as it is
        splice_sections(out, mods)
        update_doc_tables(mods)
        return {"machine": info, "modules": mods, "evaluation": None, "extra": [], "reference": None,
                "out": out}
    ev = None
    ev_extra = []
    with tempfile.TemporaryDirectory(prefix="paydbox-bench-") as tmp:
        try:
            refs = reference_points(tmp)
        except Exception as e:
            refs = {"error": "%s: %s" % (type(e).__name__, e)}
        print("bench: evaluation ...", file=sys.stderr)
        if scenarios is None:
            scenarios = list(sc.CI_SUITE) if quick else list(sc.SCENARIOS)
        durations = {} if quick else {"parked_overnight": 8 * 3600.0}
        ev = E.evaluate(scenarios, runtime="cpython", seed=1, gnss_hz=1, jobs=jobs, duration_s=durations)
        if not quick:
            ev_extra.append(("GNSS at 10 Hz",
                             E.evaluate(["commute", "urban_canyon", "tunnel"], gnss_hz=10, jobs=jobs)))
            ev_extra.append(("other seeds (2, 3)", E.evaluate(
                [s for s in sc.SCENARIOS if s != "parked_overnight"], seed=2, jobs=jobs)))
            ev_extra[-1][1]["results"] += E.evaluate([s for s in sc.SCENARIOS if s != "parked_overnight"],
                                                     seed=3, jobs=jobs)["results"]
            ev_extra[-1] = (ev_extra[-1][0],
                            dict(ev_extra[-1][1], totals=E.aggregate(ev_extra[-1][1]["results"])))
            ev_extra.append(("MicroPython VM", E.evaluate(["commute"], runtime="micropython", jobs=1)))
    kept = {}
    if modules is not None:
        # a partial run keeps the other modules' sections of the previous run, marked as such
        kept = {k: v for k, v in previous_sections(out).items() if k not in mods}
    write_markdown(out, info, mods, ev, ev_extra, refs, quick, started, time.time() - t0, kept)
    update_doc_tables(mods)
    return {"machine": info, "modules": mods, "evaluation": ev, "extra": ev_extra, "reference": refs,
            "out": out}


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="reduced runs (CI-sized)")
    p.add_argument("-o", "--output", default=None, help="markdown file (default docs/BENCHMARKS.md)")
    p.add_argument("--only", nargs="*", metavar="MODULE",
                   help="only these bench modules (e.g. bench_codec): their sections of the existing file are"
                   " rewritten in place, the rest of it (evaluation included) is left as it is")
    p.add_argument("--scenarios", nargs="*", metavar="SCENARIO", help="evaluate only these scenarios")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--json", metavar="OUT", help="also write everything as JSON")


def run(args):
    modules = None
    if args.only is not None:
        known = bench_modules()
        modules = []
        for m in args.only:
            m = m if m.startswith("bench_") else "bench_" + m
            if m not in known:
                raise ValueError("--only: no module tools/bench/%s.py (have: %s)"
                                 % (m, ", ".join(known) or "none"))
            modules.append(m)
    r = run_bench(quick=args.quick, out=args.output, modules=modules, scenarios=args.scenarios,
                  jobs=args.jobs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, default=str)
    bad = [m for m, v in r["modules"].items() if "error" in v]
    print("wrote %s (%d modules%s)"
          % (r["out"], len(r["modules"]), ", failed: " + ", ".join(bad) if bad else ""))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["bench"] + sys.argv[1:]))
