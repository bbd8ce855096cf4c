"""NMEA 0183 sentence generation (RMC, GGA, GSA, VTG) as a u-blox style receiver prints them."""


def checksum(body):
    """NMEA checksum: the XOR of the bytes between '$' and '*' (body as str or bytes)."""
    c = 0
    for ch in body.encode("ascii") if isinstance(body, str) else body:
        c ^= ch
    return c


def sentence(body):
    """'GNRMC,...' (str or bytes) -> b'$GNRMC,...*hh\\r\\n'. The one NMEA sentence builder: the simulator,
    the tests (also under MicroPython) and the benchmarks use it."""
    if isinstance(body, bytes):
        body = body.decode("ascii")
    return ("$%s*%02X\r\n" % (body, checksum(body))).encode("ascii")


def _lat(lat):
    h = "N" if lat >= 0 else "S"
    lat = abs(lat)
    d = int(lat)
    m = (lat - d) * 60.0
    if round(m, 5) >= 60.0:
        d += 1
        m = 0.0
    return "%02d%08.5f" % (d, m), h


def _lon(lon):
    h = "E" if lon >= 0 else "W"
    lon = abs(lon)
    d = int(lon)
    m = (lon - d) * 60.0
    if round(m, 5) >= 60.0:
        d += 1
        m = 0.0
    return "%03d%08.5f" % (d, m), h


def _time(utc):
    """utc: (y, mo, d, h, mi, s_float) or None -> ('hhmmss.ss', 'ddmmyy')"""
    if utc is None:
        return "", ""
    y, mo, d, h, mi, s = utc
    cs = int(round(s * 100))
    return "%02d%02d%02d.%02d" % (h, mi, cs // 100, cs % 100), "%02d%02d%02d" % (d, mo, y % 100)


def epoch(talker, utc, fix, show_time=True):
    """All sentences of one epoch as bytes.

    fix: None (no fix) or dict with lat, lon (deg), alt_m, speed_mps, course_deg (None = empty),
    hdop, sats, quality (GGA 1/2; 0 = none), geoid_m.
    """
    hms, dmy = _time(utc) if show_time else ("", "")
    out = []
    if fix is None:
        out.append(sentence("%sRMC,%s,V,,,,,,,%s,,,N" % (talker, hms, dmy)))
        out.append(sentence("%sVTG,,,,,,,,,N" % talker))
        out.append(sentence("%sGGA,%s,,,,,0,00,99.99,,,,,," % (talker, hms)))
        out.append(sentence("%sGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99" % talker))
        return b"".join(out)
    la, lah = _lat(fix["lat"])
    lo, loh = _lon(fix["lon"])
    kn = fix["speed_mps"] * 1.943844
    kmh = fix["speed_mps"] * 3.6
    crs = "" if fix.get("course_deg") is None else "%.2f" % (fix["course_deg"] % 360.0)
    mode = "D" if fix.get("quality", 1) == 2 else "A"
    out.append(sentence("%sRMC,%s,A,%s,%s,%s,%s,%.3f,%s,%s,,,%s"
                        % (talker, hms, la, lah, lo, loh, kn, crs, dmy, mode)))
    out.append(sentence("%sVTG,%s,T,,M,%.3f,N,%.3f,K,%s" % (talker, crs, kn, kmh, mode)))
    hdop = fix["hdop"]
    out.append(sentence("%sGGA,%s,%s,%s,%s,%s,%d,%02d,%.2f,%.1f,M,%.1f,M,,"
                        % (talker, hms, la, lah, lo, loh, fix.get("quality", 1), fix["sats"], hdop,
                           fix["alt_m"], fix.get("geoid_m", 47.5))))
    n = min(12, fix["sats"])
    svs = ["%02d" % sv for sv in fix.get("svs", range(2, 2 + 2 * n, 2))][:12]
    svs += [""] * (12 - len(svs))
    pdop = hdop * 1.6
    vdop = hdop * 1.25
    out.append(sentence("%sGSA,A,3,%s,%.2f,%.2f,%.2f" % (talker, ",".join(svs), pdop, hdop, vdop)))
    return b"".join(out)
