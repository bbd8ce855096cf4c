"""Readers for real accelerometer + GNSS drive logs (host only): GENIVI positioning log-replayer logs and
comma2k19 segments (NumPy .npy arrays, read here without NumPy). See docs/trace-format.md.

Both give the same drive dict:
    {"source": str, "accel_hz": nominal rate, "accel": [(t_s, x_mg, y_mg, z_mg)] in the sensor's axes,
     "fixes": [(t_s, valid, lat_deg, lon_deg, speed_mps, course_deg or None, hdop, sats, alt_m or None)],
     "utc0": (Y, M, D, h, m, s) at t_s = 0 or None, "ref": None or {"fwd": [..], "up": [..]} (sensor axes)}
t_s is seconds from the log's first sample. comma2k19 also gives `ref`, the vehicle's forward and up axes
in the device frame from comma's offline-optimised pose (independent of the accelerometer).
"""
import ast
import math
import os
import struct

G = 9.80665


# ------------------------------------------------------------------------------------------ npy
def data_lines(path, encoding):
    """(line number, stripped line) of a text log, blank lines and # comments left out."""
    with open(path, "r", encoding=encoding, errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield lineno, line


def read_npy(path):
    """-> (shape tuple, flat list in C order). Little-endian float64/float32/int64/int32/uint8/bool,
    C or (2-D) Fortran order (comma2k19 ships both). One-line ValueError naming the file otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError("%s: not a .npy file (bad magic at byte offset 0)" % path)
    major = data[6]
    if major == 1:
        hlen = struct.unpack_from("<H", data, 8)[0]
        off = 10
    elif major in (2, 3):
        hlen = struct.unpack_from("<I", data, 8)[0]
        off = 12
    else:
        raise ValueError("%s: .npy version %d not supported (byte offset 6)" % (path, major))
    try:
        hdr = ast.literal_eval(data[off:off + hlen].decode("latin1"))
    except (ValueError, SyntaxError):
        raise ValueError("%s: unreadable .npy header at byte offset %d" % (path, off))
    descr = hdr.get("descr")
    fortran = bool(hdr.get("fortran_order"))
    codes = {"<f8": "d", "<f4": "f", "<i8": "q", "<i4": "i", "|u1": "B", "|b1": "?", "<u8": "Q"}
    if descr not in codes:
        raise ValueError("%s: dtype %r not supported" % (path, descr))
    shape = tuple(hdr.get("shape", ()))
    n = 1
    for d in shape:
        n *= d
    body = off + hlen
    code = codes[descr]
    vals = list(struct.unpack_from("<%d%s" % (n, code), data, body))
    if fortran and len(shape) == 2:
        r, c = shape
        vals = [vals[j * r + i] for i in range(r) for j in range(c)]
    elif fortran and len(shape) > 2:
        raise ValueError("%s: Fortran-ordered arrays of more than 2 dimensions are not supported" % path)
    return shape, vals


def _rows(shape, vals):
    if len(shape) == 1:
        return vals
    w = shape[1]
    return [vals[i * w:(i + 1) * w] for i in range(shape[0])]


# ------------------------------------------------------------------------------------------ GENIVI
def load_genivi(path):
    """GENIVI log-replayer log: $GVSNSACC (m/s^2, gravity included), $GVGNSPOS, $GVGNSTIM."""
    acc = []
    fixes = []
    utc0 = None
    t_first = None
    last_pos_t = None
    for lineno, line in data_lines(path, "ascii"):
        p = line.split(",")
        if len(p) < 4:
            continue
        tag = p[2]
        try:
            if tag == "$GVSNSACC":
                t = int(p[3]) / 1000.0
                x, y, z = float(p[4]), float(p[5]), float(p[6])
                acc.append((t, x * 1000.0 / G, y * 1000.0 / G, z * 1000.0 / G))
            elif tag == "$GVGNSPOS":
                t = int(p[0]) / 1000.0   # when the box would have the fix: receive time
                if last_pos_t is not None and abs(t - last_pos_t) < 0.2:
                    fixes.pop()          # the log repeats an epoch as its fields fill in
                last_pos_t = t
                lat, lon = float(p[4]), float(p[5])
                hs = float(p[8])
                hd = float(p[10])
                hdop = float(p[12])
                sats = int(p[14]) if p[14].strip().isdigit() else 0
                status = int(p[22]) if len(p) > 22 and p[22].strip().isdigit() else 0
                valid = status >= 2 and hs < 9000 and hdop < 50
                alt = float(p[6])
                fixes.append((t, valid, lat, lon, hs if hs < 9000 else 0.0,
                              hd if hd < 9000 else None, hdop if hdop < 50 else 99.0, sats,
                              alt if abs(alt) < 9000 and alt != 0.0 else None))
            elif tag == "$GVGNSTIM" and utc0 is None:
                t = int(p[3]) / 1000.0
                y_, mo, d, h, mi, s, ms = (int(v) for v in p[4:11])
                utc0 = (t, (y_, mo, d, h, mi, s + ms / 1000.0))
        except (ValueError, IndexError):
            raise ValueError("%s line %d: malformed %s sentence" % (path, lineno, tag))
    if not acc or not fixes:
        raise ValueError("%s: no $GVSNSACC or no $GVGNSPOS lines" % path)
    t_first = min(acc[0][0], fixes[0][0])
    acc = [(t - t_first, x, y, z) for t, x, y, z in acc]
    fixes = [(f[0] - t_first,) + f[1:] for f in fixes]
    u = None
    if utc0 is not None:
        u = _utc_shift(utc0[1], -(utc0[0] - t_first))
    return {"source": "genivi:" + os.path.basename(path), "accel_hz": _rate(acc), "accel": acc,
            "fixes": fixes, "utc0": u, "ref": None}


def _utc_shift(utc, ds):
    import datetime
    y, mo, d, h, mi, s = utc
    base = datetime.datetime(y, mo, d, h, mi, int(s), int(round((s - int(s)) * 1e6)) % 1000000)
    t = base + datetime.timedelta(seconds=ds)
    return (t.year, t.month, t.day, t.hour, t.minute, t.second + t.microsecond / 1e6)


def _rate(acc):
    dts = sorted(b[0] - a[0] for a, b in zip(acc, acc[1:]) if b[0] > a[0])
    return int(round(1.0 / dts[len(dts) // 2])) if dts else 0


# ------------------------------------------------------------------------------------------ comma2k19
def _ecef_to_llh(x, y, z):
    a = 6378137.0
    e2 = 6.69437999014e-3
    lon = math.atan2(y, x)
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1 - e2))
    for _ in range(5):
        n = a / math.sqrt(1 - e2 * math.sin(lat) ** 2)
        h = p / math.cos(lat) - n
        lat = math.atan2(z, p * (1 - e2 * n / (n + h)))
    return lat, lon


def _quat_rot(q):
    # quaternion (w, x, y, z), device -> ECEF; returns the rotation matrix rows
    w, x, y, z = q
    return [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]


def load_comma2k19(root):
    """comma2k19 segment directory (processed_log/, global_pose/)."""
    def arr(rel):
        p = os.path.join(root, rel)
        if not os.path.exists(p):
            raise ValueError("%s: missing %s" % (root, rel))
        return read_npy(p)

    sh, at = arr("processed_log/IMU/accelerometer/t.npy")
    sh2, av = arr("processed_log/IMU/accelerometer/value.npy")
    av = _rows(sh2, av)
    _, gt = arr("processed_log/GNSS/live_gnss_ublox/t.npy")
    sh3, gv = arr("processed_log/GNSS/live_gnss_ublox/value.npy")
    gv = _rows(sh3, gv)
    _, ct = arr("processed_log/CAN/speed/t.npy")
    _, cv = arr("processed_log/CAN/speed/value.npy")
    t0 = min(at[0], gt[0])
    k = 1000.0 / G
    acc = [(at[i] - t0, av[i][0] * k, av[i][1] * k, av[i][2] * k) for i in range(len(at))]
    fixes = []
    ci = 0
    for i in range(len(gt)):
        lat, lon, alt, _utc_ms, _col4, brg = gv[i][:6]
        # the segment's 5th u-blox column is not the speed its positions show (33 m/s where the
        # positions, the pose and CAN agree on 8 m/s): the fix's speed is the car's CAN speed at
        # the fix time (a real sensor, at 83 Hz, interpolated)
        while ci + 1 < len(ct) and ct[ci + 1] < gt[i]:
            ci += 1
        if ci + 1 < len(ct) and ct[ci + 1] > ct[ci]:
            u = (gt[i] - ct[ci]) / (ct[ci + 1] - ct[ci])
            u = 0.0 if u < 0 else (1.0 if u > 1 else u)
            spd = cv[ci] + (cv[ci + 1] - cv[ci]) * u
        else:
            spd = cv[ci]
        fixes.append((gt[i] - t0, True, lat, lon, spd, brg % 360.0 if spd > 0.3 else None, 0.9, 10, alt))
    u = None
    try:
        import datetime
        utc_ms = gv[0][3]
        d = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=utc_ms)
        u = _utc_shift((d.year, d.month, d.day, d.hour, d.minute, d.second + d.microsecond / 1e6),
                       -(gt[0] - t0))
    except (OverflowError, ValueError, IndexError):
        u = None
    ref = None
    try:
        ref = _comma_reference(root)
    except ValueError:
        ref = None
    return {"source": "comma2k19:" + os.path.basename(os.path.normpath(root)), "accel_hz": _rate(acc),
            "accel": acc, "fixes": fixes, "utc0": u, "ref": ref}


def _comma_reference(root):
    """Vehicle forward (velocity direction, where the car moves faster than 5 m/s) and up (local
    ellipsoid normal) in the device frame, averaged over the segment, from global_pose (ECEF positions,
    velocities, device->ECEF quaternions)."""
    shp, pos = read_npy(os.path.join(root, "global_pose/frame_positions.npy"))
    shv, vel = read_npy(os.path.join(root, "global_pose/frame_velocities.npy"))
    shq, qs = read_npy(os.path.join(root, "global_pose/frame_orientations.npy"))
    pos, vel, qs = _rows(shp, pos), _rows(shv, vel), _rows(shq, qs)
    fs = [0.0, 0.0, 0.0]
    us = [0.0, 0.0, 0.0]
    n = 0
    for p, v, q in zip(pos, vel, qs):
        sp = math.sqrt(sum(c * c for c in v))
        if sp < 5.0:
            continue
        R = _quat_rot(q)   # device -> ECEF: device vector d -> R d; ECEF -> device: R^T
        lat, lon = _ecef_to_llh(*p)
        up = [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]
        for j in range(3):
            fs[j] += sum(R[i][j] * v[i] for i in range(3)) / sp
            us[j] += sum(R[i][j] * up[i] for i in range(3))
        n += 1
    if n == 0:
        raise ValueError("%s: no pose above 5 m/s" % root)
    nu = math.sqrt(sum(c * c for c in us))
    up = [c / nu for c in us]
    d = sum(fs[j] * up[j] for j in range(3))
    fh = [fs[j] - d * up[j] for j in range(3)]
    nf = math.sqrt(sum(c * c for c in fh))
    return {"fwd": [c / nf for c in fh], "up": up, "poses": n}
