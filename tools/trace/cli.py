"""paydbox trace: record, import and inspect sensor traces (docs/trace-format.md).

  paydbox trace record --gnss URL [--baud B] [--i2c-bus N] [--duration S] -o OUT
  paydbox trace import --nmea FILE [--accel-csv FILE --accel-columns t,x,y,z --accel-unit g|mg|mps2] -o OUT
  paydbox trace import --genivi LOG | --comma2k19 DIR [--mount-seed N] -o OUT
  paydbox trace info FILE [--json]

Host only. The format, its reader and its writer (`TraceWriter`) live in hw/trace_format.py.
"""
import json
import os
import re
import sys
import time

from hw.trace_format import (
    LineReader,
    TraceError,
    TraceWriter,
    gnss_bytes,
    open_trace,
    parse_header,
    parse_line,
    printable,
)

STANDARD_BAUDS = (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


# ---------------------------------------------------------------------------------------------------
# import

# $ttXXX, then the time field: first field for RMC/GGA/GNS/ZDA/GST/GBS/GRS, fifth for GLL
_TIME1 = re.compile(rb"\$[A-Z]{2}(RMC|GGA|GNS|ZDA|GST|GBS|GRS),(\d{2})(\d{2})(\d{2})(?:\.(\d{1,6}))?,")
_GLL = re.compile(rb"\$[A-Z]{2}GLL,[^,*\r\n]*,[^,*\r\n]*,[^,*\r\n]*,[^,*\r\n]*,"
                  rb"(\d{2})(\d{2})(\d{2})(?:\.(\d{1,6}))?,")
_RMC_DATE = re.compile(
    rb"\$[A-Z]{2}RMC,(\d{6}(?:\.\d+)?),[AV]?,[^*\r\n]*?,[^,*]*,[^,*]*,[^,*]*,(\d{2})(\d{2})(\d{2}),")


def split_segments(data):
    """Split bytes after every LF and after every lone CR; the concatenation is `data` exactly."""
    out = []
    start = 0
    n = len(data)
    i = 0
    while i < n:
        c = data[i]
        if c == 10 or (c == 13 and (i + 1 >= n or data[i + 1] != 10)):
            out.append(data[start : i + 1])
            start = i + 1
        i += 1
    if start < n:
        out.append(data[start:])
    return out


def sentence_ms_of_day(seg):
    """UTC time of day (ms) of the first timed sentence in `seg`, or -1."""
    m = _TIME1.search(seg)
    groups = None
    if m:
        groups = m.groups()[1:]
    else:
        m = _GLL.search(seg)
        if m:
            groups = m.groups()
    if not groups:
        return -1
    hh, mm, ss, frac = int(groups[0]), int(groups[1]), int(groups[2]), groups[3]
    if hh > 23 or mm > 59 or ss > 60:
        return -1
    ms = 0
    if frac:
        ms = int((frac + b"000")[:3])
    return ((hh * 60 + mm) * 60 + ss) * 1000 + ms


def nmea_timeline(segments, max_gap_s=3600):
    """Trace time (ms) per segment from the sentences' UTC times. Untimed segments take the time of
    the previous timed sentence (0 before the first). Midnight wraps are followed; a time that goes
    back, or jumps forward by more than max_gap_s, is a discontinuity (receiver reset, garbage time,
    concatenated logs): the trace time then advances by the last epoch step (>= 1 ms, <= 1 s).
    -> (times_ms, discontinuities, first_ms_of_day)"""
    times = []
    t = 0
    prev = -1
    step = 1000
    disc = 0
    first = -1
    for seg in segments:
        s = sentence_ms_of_day(seg)
        if s >= 0:
            if prev < 0:
                first = s
            else:
                dt = s - prev
                if dt < -43200000:
                    dt += 86400000  # midnight
                if 0 <= dt <= max_gap_s * 1000:
                    t += dt
                    if dt > 0:
                        step = min(dt, 1000)
                else:
                    disc += 1
                    t += step
            prev = s
        times.append(t)
    return times, disc, first


def _start_utc(data, first_ms):
    m = _RMC_DATE.search(data)
    if not m or first_ms < 0:
        return None
    dd, mo, yy = int(m.group(2)), int(m.group(3)), int(m.group(4))
    if not (1 <= dd <= 31 and 1 <= mo <= 12):
        return None
    s = first_ms // 1000
    return ("%04d-%02d-%02dT%02d:%02d:%02dZ"
            % (2000 + yy if yy < 80 else 1900 + yy, mo, dd, s // 3600, s // 60 % 60, s % 60))


def auto_baud(nbytes, duration_s):
    """Smallest standard baud rate that carries the log's bytes in <= 80% of the wire time."""
    need = nbytes * 10 / max(duration_s, 1.0) / 0.8
    for b in STANDARD_BAUDS:
        if b >= need and b >= 9600:
            return b
    return STANDARD_BAUDS[-1]


_UNITS = {"g": 1000.0, "mg": 1.0, "mps2": 1000.0 / 9.80665}


def read_accel_csv(path, columns, unit, rate_hz=None):
    """-> (rate_hz, [(t_s, x_mg, y_mg, z_mg)]). `columns`: 4 names (t,x,y,z) of the header row, or
    4 zero-based indices when the file has no header. Errors name the line and column."""
    if unit not in _UNITS:
        raise ValueError("--accel-unit: %r not one of g, mg, mps2" % (unit,))
    cols = [c.strip() for c in columns.split(",")]
    if len(cols) != 4:
        raise ValueError("--accel-columns: expected 4 names t,x,y,z, got %r" % (columns,))
    k = _UNITS[unit]
    rows = []
    idx = None
    from tools.trace.imu_logs import data_lines

    for lineno, line in data_lines(path, "utf-8"):
        delim = ";" if line.count(";") > line.count(",") else ","
        fields = [x.strip().strip('"') for x in (line.split(delim) if delim in line else line.split())]
        if idx is None:
            if all(c.isdigit() for c in cols):
                idx = [int(c) for c in cols]
            else:
                missing = [c for c in cols if c not in fields]
                if missing:
                    raise ValueError("%s line %d: header has no column %r (columns: %s)"
                                     % (path, lineno, missing[0], ",".join(fields)))
                idx = [fields.index(c) for c in cols]
                continue
        try:
            vals = [float(fields[i]) for i in idx]
        except IndexError:
            raise ValueError("%s line %d: fewer than %d columns" % (path, lineno, max(idx) + 1))
        except ValueError:
            bad = next(i for i in idx if not _isfloat(fields[i]))
            raise ValueError("%s line %d: column %s is %r, not a number"
                             % (path, lineno, cols[idx.index(bad)], fields[bad]))
        rows.append((vals[0], vals[1] * k, vals[2] * k, vals[3] * k))
    if not rows:
        raise ValueError("%s: no accelerometer rows" % path)
    rows.sort(key=lambda r: r[0])
    if rate_hz is None:
        dts = sorted(b[0] - a[0] for a, b in zip(rows, rows[1:]) if b[0] > a[0])
        if not dts:
            raise ValueError("%s: cannot estimate the sample rate: give --rate-hz" % path)
        rate_hz = int(round(1.0 / dts[len(dts) // 2]))
    return rate_hz, rows


def _isfloat(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def accel_chunks(rows, rate_hz, t0=None):
    """Group rows into <= 1 s chunks of consecutive samples; a gap (> 1.5 periods) starts a new chunk.
    -> [(t_s, [[x,y,z] mg ints])], times relative to t0 (default: the first row)."""
    if t0 is None:
        t0 = rows[0][0]
    period = 1.0 / rate_hz
    out = []
    cur = None
    cur_t = 0.0
    prev_t = None
    for t, x, y, z in rows:
        if cur is None or len(cur) >= rate_hz or t - prev_t > 1.5 * period:
            cur = []
            cur_t = t - t0
            out.append((cur_t, cur))
        cur.append([int(round(x)), int(round(y)), int(round(z))])
        prev_t = t
    return out


def import_nmea(nmea_path, out_path, accel_csv=None, accel_columns="t,x,y,z", accel_unit="g", rate_hz=None,
                baud=None, device_id=None, max_gap_s=3600, accel_offset_s=0.0):
    with open(nmea_path, "rb") as f:
        data = f.read()
    segs = split_segments(data)
    times, disc, first = nmea_timeline(segs, max_gap_s)
    dur_s = (times[-1] / 1000.0) if times else 0.0
    # merge consecutive segments with the same time and the same encoding into one line (<= 4 KiB)
    lines = []
    for seg, t in zip(segs, times):
        p = printable(seg)
        if lines and lines[-1][0] == t and lines[-1][2] == p and len(lines[-1][1]) + len(seg) <= 4096:
            lines[-1][1] += seg
        else:
            lines.append([t, bytearray(seg), p])
    if baud is None:
        # bytes must fit on the wire between their times; 1-s minimum span
        baud = auto_baud(len(data), dur_s + 1.0)
    rows = None
    if accel_csv:
        rate_hz, rows = read_accel_csv(accel_csv, accel_columns, accel_unit, rate_hz)
    header = {
        "device": {"id": device_id or "import", "source": "import",
                   "notes": "imported from %s%s"
                   % (os.path.basename(nmea_path),
                      (" + " + os.path.basename(accel_csv)) if accel_csv else "")},
        "start_utc": _start_utc(data, first),
        "duration_s": round(dur_s, 3),
        "gnss": {"baud": baud, "rate_hz": None, "receiver": "unknown (imported NMEA log)"},
        "truth": False,
    }
    if rows:
        header["accel"] = {"chip": "lis3dh", "rate_hz": rate_hz, "unit": "mg"}
    chunks = accel_chunks(rows, rate_hz) if rows else []
    # merge the two time-ordered streams
    with TraceWriter(out_path, header) as w:
        if disc:
            w.note(0.0, "%d time discontinuities in the NMEA log (trace time stepped over them)" % disc)
        ci = 0
        for t_ms, seg, _p in lines:
            t = t_ms / 1000.0
            while ci < len(chunks) and chunks[ci][0] + accel_offset_s <= t:
                if chunks[ci][0] + accel_offset_s >= 0:
                    w.accel(chunks[ci][0] + accel_offset_s, rate_hz, chunks[ci][1])
                ci += 1
            w.gnss(t, seg)
        while ci < len(chunks):
            if chunks[ci][0] + accel_offset_s >= 0:
                w.accel(chunks[ci][0] + accel_offset_s, rate_hz, chunks[ci][1])
            ci += 1
    return {"bytes": len(data), "lines": len(lines), "discontinuities": disc,
            "duration_s": w.header["duration_s"], "baud": baud, "accel_samples": len(rows) if rows else 0}


def import_imu(drive, out_path, baud=None, mount_seed=None, talker="GN"):
    """A real accelerometer + GNSS drive (tools/trace/imu_logs.py: GENIVI log, comma2k19 segment) -> trace.
    GNSS fixes become NMEA epochs (RMC, VTG, GGA, GSA from tools/sim/nmea_gen.py) at the log's fix times;
    accelerometer samples (mg ints) at the sensor's own rate, in <= 1 s chunks. mount_seed: rotate the
    samples by a random mounting (uniform over SO(3), seeded); with the drive's reference axes
    (comma2k19's pose) a truth `mount` line is written so `paydbox evaluate` can score the calibration."""
    from tools.sim import nmea_gen

    acc = drive["accel"]
    fixes = drive["fixes"]
    rate = drive["accel_hz"]
    if not acc or not fixes or rate <= 0:
        raise ValueError("%s: no accelerometer samples or no fixes" % drive["source"])
    Q = None
    if mount_seed is not None:
        import random

        from tools.sim.engine import random_rotation

        Q = random_rotation(random.Random(mount_seed))
    rows = []
    for t, x, y, z in acc:
        if Q is not None:
            x, y, z = [Q[i][0] * x + Q[i][1] * y + Q[i][2] * z for i in range(3)]
        rows.append((t, x, y, z))
    epochs = []
    for f in fixes:
        t, valid, lat, lon, spd, crs, hdop, sats = f[:8]
        alt = f[8] if len(f) > 8 and f[8] is not None else 0.0
        utc = _utc_at(drive["utc0"], t)
        fx = None
        if valid:
            fx = {"lat": lat, "lon": lon, "alt_m": alt, "speed_mps": spd, "course_deg": crs,
                  "hdop": min(hdop, 99.0), "sats": max(4, min(sats, 12)), "quality": 1}
        epochs.append((t, nmea_gen.epoch(talker, utc, fx, utc is not None)))
    dur = max(acc[-1][0], fixes[-1][0])
    nbytes = sum(len(e[1]) for e in epochs)
    if baud is None:
        baud = auto_baud(nbytes, dur)
    header = {
        "device": {"id": "import", "source": "import", "notes": "imported from %s%s" % (
            drive["source"], "" if Q is None else " (mounting seed %d)" % mount_seed)},
        "start_utc": None,
        "duration_s": round(dur, 3),
        "gnss": {"baud": baud, "rate_hz": None,
                 "receiver": "real, re-encoded as NMEA (%s)" % drive["source"]},
        "accel": {"chip": "real sensor", "rate_hz": rate, "unit": "mg"},
        "truth": False,
    }
    if drive["utc0"] is not None:
        y, mo, d, h, mi, sec = drive["utc0"]
        header["start_utc"] = "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, h, mi, int(sec))
    ref = drive.get("ref")
    if Q is not None and ref is not None:
        header["truth"] = True
    chunks = accel_chunks(rows, rate, t0=0.0)
    with TraceWriter(out_path, header) as w:
        if Q is not None and ref is not None:
            f_, u_ = ref["fwd"], ref["up"]
            left = [u_[1] * f_[2] - u_[2] * f_[1], u_[2] * f_[0] - u_[0] * f_[2],
                    u_[0] * f_[1] - u_[1] * f_[0]]
            R = [[round(sum(Q[i][j] * v[j] for j in range(3)), 6) for i in range(3)] for v in (f_, left, u_)]
            w.truth(0.0, "mount", R=R)
        ci = 0
        for t, data in epochs:
            while ci < len(chunks) and chunks[ci][0] <= t:
                w.accel(chunks[ci][0], rate, chunks[ci][1])
                ci += 1
            w.gnss(t, data)
        while ci < len(chunks):
            w.accel(chunks[ci][0], rate, chunks[ci][1])
            ci += 1
    return {"source": drive["source"], "fixes": len(epochs), "accel_samples": len(rows), "accel_hz": rate,
            "baud": baud, "duration_s": w.header["duration_s"], "mount_seed": mount_seed,
            "truth_mount": bool(Q is not None and ref is not None)}


def _utc_at(utc0, t):
    if utc0 is None:
        return None
    from tools.trace.imu_logs import _utc_shift

    return _utc_shift(utc0, t)


# ---------------------------------------------------------------------------------------------------
# info


def trace_info(path, gap_s=2.0, max_gaps=20):
    r = LineReader(open_trace(path))
    first = r.readline()
    if first is None:
        raise TraceError("%s: empty file, no header" % path)
    h = parse_header(first, "%s line 1" % path)
    streams = {}
    gnss_bytes_n = 0
    accel_n = 0
    last_gnss = None
    accel_end = None
    gaps = []
    truth = {}
    mv_min = mv_max = None
    ign_changes = 0
    last_ign = None
    last_t = 0
    end_ms = 0
    while True:
        raw = r.readline()
        if raw is None:
            break
        if not raw.strip():
            continue
        t_ms, s, o = parse_line(raw, r.lineno)
        if t_ms < last_t:
            raise TraceError("%s line %d: field 't' goes back in time" % (path, r.lineno))
        last_t = t_ms
        end_ms = max(end_ms, t_ms)
        streams[s] = streams.get(s, 0) + 1
        if s == "gnss":
            gnss_bytes_n += len(gnss_bytes(o, r.lineno))
            if last_gnss is not None and t_ms - last_gnss > gap_s * 1000:
                gaps.append({"stream": "gnss", "start": last_gnss / 1000.0,
                             "len_s": (t_ms - last_gnss) / 1000.0})
            last_gnss = t_ms
        elif s == "accel":
            mg = o.get("mg") or []
            rate = o.get("rate") or 0
            if not rate or rate <= 0:
                raise TraceError("%s line %d: field 'rate' is %r" % (path, r.lineno, rate))
            accel_n += len(mg)
            if accel_end is not None and t_ms - accel_end > 2000.0 / rate + 1:
                gaps.append({"stream": "accel", "start": accel_end / 1000.0,
                             "len_s": (t_ms - accel_end) / 1000.0})
            accel_end = t_ms + len(mg) * 1000.0 / rate
            end_ms = max(end_ms, int(accel_end))
        elif s == "power":
            mv = o.get("mv")
            mv_min = mv if mv_min is None else min(mv_min, mv)
            mv_max = mv if mv_max is None else max(mv_max, mv)
            if last_ign is not None and o.get("ign") != last_ign:
                ign_changes += 1
            last_ign = o.get("ign")
        elif s == "truth":
            k = o.get("kind", "?")
            truth[k] = truth.get(k, 0) + 1
    r.close()
    span_s = end_ms / 1000.0
    info = {
        "path": path,
        "version": h.get("version"),
        "device": (h.get("device") or {}).get("id"),
        "source": (h.get("device") or {}).get("source"),
        "start_utc": h.get("start_utc"),
        "duration_s": h.get("duration_s"),
        "span_s": span_s,
        "lines": r.lineno,
        "streams": streams,
        "gnss": {"baud": (h.get("gnss") or {}).get("baud"), "bytes": gnss_bytes_n,
                 "bytes_per_s": round(gnss_bytes_n / span_s, 1) if span_s > 0 else 0,
                 "wire_load_pct": round(100.0 * gnss_bytes_n * 10 / span_s
                                        / (h.get("gnss") or {}).get("baud", 9600), 1) if span_s > 0 else 0},
        "accel": None,
        "power": None,
        "truth": truth,
        "gaps": gaps[:max_gaps],
        "gap_count": len(gaps),
    }
    if accel_n or h.get("accel"):
        info["accel"] = {"rate_hz": (h.get("accel") or {}).get("rate_hz"), "samples": accel_n,
                         "measured_hz": round(accel_n / span_s, 2) if span_s > 0 else 0}
    if mv_min is not None:
        info["power"] = {"mv_min": mv_min, "mv_max": mv_max, "ign_changes": ign_changes}
    return info


def _print_info(i):
    print("%s: trace v%s, device %s (%s), start %s"
          % (i["path"], i["version"], i["device"], i["source"], i["start_utc"]))
    print("duration %.3f s (header %s s), %d lines" % (i["span_s"], i["duration_s"], i["lines"]))
    print("streams: %s" % ", ".join("%s=%d" % kv for kv in sorted(i["streams"].items())))
    g = i["gnss"]
    print("gnss: %d bytes, %.1f B/s, %s baud (%.1f%% wire load)"
          % (g["bytes"], g["bytes_per_s"], g["baud"], g["wire_load_pct"]))
    if i["accel"]:
        a = i["accel"]
        print("accel: %d samples, header %s Hz, measured %.2f Hz"
              % (a["samples"], a["rate_hz"], a["measured_hz"]))
    else:
        print("accel: none (GNSS-only trace)")
    if i["power"]:
        p = i["power"]
        print("power: %d..%d mV, %d ignition changes" % (p["mv_min"], p["mv_max"], p["ign_changes"]))
    if i["truth"]:
        print("truth: %s" % ", ".join("%s=%d" % kv for kv in sorted(i["truth"].items())))
    print("gaps: %d (gnss > 2 s between lines, accel > 2 sample periods)" % i["gap_count"])
    for g in i["gaps"]:
        print("  %s gap at %.3f s for %.3f s" % (g["stream"], g["start"], g["len_s"]))


# ---------------------------------------------------------------------------------------------------
# record


def record(gnss_url, out_path, baud=9600, i2c_bus=None, duration_s=None, odr_hz=100, range_g=8, poll_ms=20,
           device_id="record", clock=time.monotonic, stop=None):
    """Capture the GNSS UART (and the LIS3DH on i2c_bus, if given) into a trace until duration_s
    or Ctrl-C. -> the writer's header."""
    from hw.linux import LinuxUART

    uart = LinuxUART(gnss_url, baud)
    acc = None
    if i2c_bus is not None:
        from hw.linux import SMBusI2C
        from hw.lis3dh import LIS3DH

        acc = LIS3DH(SMBusI2C(i2c_bus), odr_hz=odr_hz, range_g=range_g)
    header = {"device": {"id": device_id, "source": "record", "notes": "recorded from %s" % gnss_url},
              "start_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "gnss": {"baud": baud, "rate_hz": None, "receiver": "unknown (recorded)"}, "truth": False}
    if acc is not None:
        header["accel"] = {"chip": "lis3dh", "rate_hz": odr_hz, "unit": "mg", "range_g": range_g}
    buf = bytearray(4096)
    t0 = clock()
    chunk = []
    chunk_t = None
    w = TraceWriter(out_path, header)
    try:
        while True:
            now = clock() - t0
            if duration_s is not None and now >= duration_s:
                break
            if stop is not None and stop():
                break
            n = uart.readinto(buf)
            if n:
                w.gnss(now, bytes(buf[:n]))
            if acc is not None:
                k = acc.read_fifo()
                if k:
                    if chunk_t is None:
                        chunk_t = max(0.0, now - (k - 1) / float(odr_hz))
                    for j in range(k):
                        chunk.append([acc.xyz_mg[3 * j], acc.xyz_mg[3 * j + 1], acc.xyz_mg[3 * j + 2]])
                    if len(chunk) >= odr_hz:
                        w.accel(max(chunk_t, w._last_t), odr_hz, chunk)
                        chunk = []
                        chunk_t = None
            time.sleep(poll_ms / 1000.0)
    except KeyboardInterrupt:
        pass
    finally:
        if chunk:
            w.accel(max(chunk_t, w._last_t), odr_hz, chunk)
        if acc is not None:
            header["accel"]["overruns"] = acc.overruns
        uart.close()
        w.close()
    return w.header


# ---------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser):
    sub = parser.add_subparsers(dest="trace_cmd", metavar="SUBCOMMAND")
    sub.required = True
    r = sub.add_parser("record", help="capture from real hardware (pyserial + smbus2)")
    r.add_argument("--gnss", required=True, metavar="URL",
                   help="serial port or pyserial URL (e.g. /dev/ttyUSB0, socket://host:port)")
    r.add_argument("--baud", type=int, default=9600)
    r.add_argument("--i2c-bus", type=int, default=None, metavar="N",
                   help="I2C bus of the LIS3DH (omit: GNSS only)")
    r.add_argument("--odr-hz", type=int, default=100, choices=(50, 100, 200, 400))
    r.add_argument("--range-g", type=int, default=8, choices=(2, 4, 8, 16))
    r.add_argument("--duration", type=float, default=None, metavar="S",
                   help="seconds (default: until Ctrl-C)")
    r.add_argument("--device-id", default="record")
    r.add_argument("-o", "--output", required=True)
    i = sub.add_parser("import",
                       help="build a trace from an NMEA log (+ accelerometer CSV), or a real IMU drive log")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--nmea", metavar="FILE")
    src.add_argument("--genivi", metavar="LOG",
                     help="GENIVI positioning log-replayer log ($GVSNSACC, $GVGNSPOS)")
    src.add_argument("--comma2k19", metavar="DIR",
                     help="comma2k19 segment directory (processed_log/, global_pose/)")
    i.add_argument("--mount-seed", type=int, default=None, metavar="N",
                   help="--genivi/--comma2k19: rotate the samples by a random mounting (seeded)")
    i.add_argument("--accel-csv", metavar="FILE")
    i.add_argument("--accel-columns", default="t,x,y,z",
                   help="CSV column names (or 0-based indices) for t,x,y,z")
    i.add_argument("--accel-unit", default="g", choices=("g", "mg", "mps2"))
    i.add_argument("--accel-offset-s", type=float, default=0.0, help="trace time of the CSV's first row")
    i.add_argument("--rate-hz", type=int, default=None, help="accelerometer rate (default: estimated)")
    i.add_argument("--baud", type=int, default=None,
                   help="GNSS baud rate for replay (default: smallest standard rate that fits)")
    i.add_argument("--max-gap-s", type=float, default=3600.0, help="larger time jumps are discontinuities")
    i.add_argument("--device-id", default=None)
    i.add_argument("-o", "--output", required=True)
    i.add_argument("--json", action="store_true")
    n = sub.add_parser("info", help="duration, streams, rates, gaps")
    n.add_argument("file")
    n.add_argument("--json", action="store_true")


def run(args):
    if args.trace_cmd == "info":
        info = trace_info(args.file)
        if args.json:
            print(json.dumps(info, sort_keys=True))
        else:
            _print_info(info)
        return 0
    if args.trace_cmd == "import" and (args.genivi or args.comma2k19):
        from tools.trace import imu_logs

        path = args.genivi or args.comma2k19
        if not os.path.exists(path):
            raise ValueError("--%s: %s does not exist" % ("genivi" if args.genivi else "comma2k19", path))
        drive = imu_logs.load_genivi(path) if args.genivi else imu_logs.load_comma2k19(path)
        res = import_imu(drive, args.output, args.baud, args.mount_seed)
        if args.json:
            print(json.dumps(res, sort_keys=True))
        else:
            print("%s: %d fixes, %d accel samples at %d Hz, %.3f s at %d baud%s" % (
                args.output, res["fixes"], res["accel_samples"], res["accel_hz"], res["duration_s"],
                res["baud"], ", truth mount" if res["truth_mount"] else ""))
        return 0
    if args.trace_cmd == "import":
        if not os.path.exists(args.nmea):
            raise ValueError("--nmea: %s does not exist" % args.nmea)
        res = import_nmea(args.nmea, args.output, args.accel_csv, args.accel_columns, args.accel_unit,
                          args.rate_hz, args.baud, args.device_id, args.max_gap_s, args.accel_offset_s)
        if args.json:
            print(json.dumps(res, sort_keys=True))
        else:
            print("%s: %d bytes of NMEA in %d lines, %.3f s at %d baud, %d accel samples, %d time "
                  "discontinuities"
                  % (args.output, res["bytes"], res["lines"], res["duration_s"], res["baud"],
                     res["accel_samples"], res["discontinuities"]))
        return 0
    if args.trace_cmd == "record":
        h = record(args.gnss, args.output, args.baud, args.i2c_bus, args.duration, args.odr_hz, args.range_g,
                   device_id=args.device_id)
        print("%s: %.3f s recorded" % (args.output, h["duration_s"]), file=sys.stderr)
        return 0
    raise ValueError("unknown trace subcommand %r" % (args.trace_cmd,))
