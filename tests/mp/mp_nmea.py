# Firmware tests for firmware/nmea.py and firmware/ubx.py, run under MicroPython and CPython.
from firmware import ubx
from firmware.nmea import NMEAParser, days_from_civil
from mptest import assert_eq, assert_raises, heap_locked
from tools.sim.nmea_gen import sentence


def ck(body):
    return sentence(body)[:-2]  # without the CRLF


def rmc(t, lat=b"4807.038", ns=b"N", lon=b"01131.000", ew=b"E", spd=b"022.4", crs=b"084.4",
        date=b"230394", st=b"A", talker=b"GP", mode=b"A"):
    return ck(talker + b"RMC," + t + b"," + st + b"," + lat + b"," + ns + b"," + lon + b"," + ew + b"," +
              spd + b"," + crs + b"," + date + b",003.1,W," + mode) + b"\r\n"


def gga(t, q=b"1", talker=b"GP", lat=b"4807.038", lon=b"01131.000", sats=b"08", hdop=b"0.9"):
    return ck(talker + b"GGA," + t + b"," + lat + b",N," + lon + b",E," + q + b"," + sats + b"," + hdop +
              b",545.4,M,46.9,M,,") + b"\r\n"


def vtg(spd=b"010.0"):
    return ck(b"GPVTG,054.7,T,034.4,M," + spd + b",N,018.5,K,A") + b"\r\n"


class Sink:
    def __init__(self):
        self.fixes = []

    def __call__(self, f):
        self.fixes.append((f.utc_s, f.utc_ms, f.valid, f.quality, f.lat_e7, f.lon_e7, f.speed_mmps,
                           f.course_cdeg, f.hdop_x10, f.sats, f.mode, f.t_ms))


def parse(data, chunk=0, min_year=2019):
    s = Sink()
    p = NMEAParser(s, min_year=min_year)
    if chunk:
        for i in range(0, len(data), chunk):
            p.feed(data[i : i + chunk])
    else:
        p.feed(data)
    p.flush()
    return p, s.fixes


def test_rmc_gga_epoch_values():
    data = rmc(b"123519.50", date=b"230326") + gga(b"123519.50")
    p, fx = parse(data)
    assert_eq(len(fx), 1, "one epoch")
    f = fx[0]
    assert_eq(f[0], days_from_civil(2026, 3, 23) * 86400 + 12 * 3600 + 35 * 60 + 19, "utc_s")
    assert_eq(f[1], 500, "utc_ms")
    assert_eq((f[2], f[3]), (1, 1), "valid, quality")
    assert_eq(f[4], 481173000, "lat 48 deg 07.038 min")
    assert_eq(f[5], 115166667, "lon 11 deg 31.000 min")
    assert_eq(f[6], 11524, "22.4 kn in mm/s")
    assert_eq(f[7], 8440, "course")
    assert_eq((f[8], f[9], f[10]), (9, 8, "A"), "hdop, sats, mode")


def test_splits_at_every_size_same_fixes():
    data = b""
    for s in range(10):
        t = ("1200%02d" % s).encode()
        data += rmc(t, date=b"010126") + vtg() + gga(t)
    ref = parse(data)[1]
    assert_eq(len(ref), 10, "epochs")
    for chunk in (1, 2, 3, 7, 13, 64):
        assert_eq(parse(data, chunk)[1], ref, "chunk %d" % chunk)


def test_line_endings_dollars_nul_binary():
    t = b"120000"
    base = parse(rmc(t, date=b"010126") + gga(t))[1]
    ubxjunk = b"\xb5\x62\x01\x07\x04\x00$\x00\xff\x24\x0d\x0a\x00"
    casic = b"\xba\xce\x10\x00\x06\x01" + b"\x00" * 16
    for sep in (b"\r", b"\n", b"\r\n", b"\n\r"):
        data = (b"\x00\x00" + ubxjunk + b"$" + rmc(t, date=b"010126").rstrip() + sep + casic + gga(t).rstrip()
                + sep)
        p, fx = parse(data, 5)
        assert_eq(fx, base, "sep %r" % sep)
        assert_eq(p.counters["bad_checksum"], 0, "no false bad checksums")


def test_checksum_rejected_and_counted():
    good = rmc(b"120000", date=b"010126")
    bad = good[:20] + (b"9" if good[20:21] != b"9" else b"8") + good[21:]
    p, fx = parse(bad + good.replace(b"*", b"-"))
    assert_eq(fx, [], "no fix from corrupt sentences")
    assert_eq(p.counters["bad_checksum"], 1, "bad")
    assert_eq(p.counters["no_checksum"], 1, "missing")


def test_too_long_and_truncated():
    long = b"$GPGSV," + b"1," * 70 + b"*00\r\n"
    p, fx = parse(long + rmc(b"120000")[:30] + rmc(b"120001", date=b"010126") + gga(b"120001"))
    assert_eq(p.counters["too_long"], 1, "too long")
    assert_eq(p.counters["truncated"], 1, "truncated")
    assert_eq(len(fx), 1, "good sentence after junk")


def test_empty_fields_and_no_fix():
    data = ck(b"GPRMC,,V,,,,,,,,,,N") + b"\r\n" + ck(b"GPGGA,,,,,,0,,,,,,,,") + b"\r\n"
    p, fx = parse(data)
    assert_eq(len(fx), 1, "one epoch without time")
    assert_eq(fx[0][:3], (-1, 0, 0), "no time, not valid")
    assert_eq((fx[0][6], fx[0][7], fx[0][8], fx[0][9]), (-1, -1, -1, -1), "unknowns")


def test_gp_and_gn_gga_one_epoch_gn_wins():
    t = b"120000"
    data = rmc(t, talker=b"GN", date=b"010126") + gga(t, talker=b"GP", sats=b"07") + \
        gga(t, talker=b"GN", sats=b"15") + rmc(b"120001", talker=b"GN", date=b"010126") + \
        gga(b"120001", talker=b"GN", sats=b"15")
    p, fx = parse(data)
    assert_eq(len(fx), 2, "epochs")
    assert_eq(fx[0][9], 15, "GN sats")
    assert_eq(p.counters["late"], 0, "late")


def test_gga_every_nth_and_vtg_speed():
    data = b""
    for s in range(6):
        t = ("1200%02d" % s).encode()
        data += rmc(t, spd=b"", crs=b"", date=b"010126") + vtg(b"010.0")
        if s % 3 == 0:
            data += gga(t)
    p, fx = parse(data)
    assert_eq(len(fx), 6, "epochs")
    for f in fx:
        assert_eq(f[6], 5144, "VTG speed used")
    assert_eq([f[9] for f in fx], [8, -1, -1, 8, -1, -1], "sats only with GGA")


def test_gga_only_receiver_and_talkers():
    data = b""
    for i, tk in enumerate((b"GP", b"GL", b"GA", b"GB", b"BD", b"GQ", b"QZ", b"XY")):
        data += gga(("1200%02d" % i).encode(), talker=tk)
    p, fx = parse(data)
    assert_eq(len(fx), 8, "unknown talker decoded too")
    assert_eq(fx[0][0], -1, "no date without RMC")
    assert_eq(fx[0][2], 1, "valid from GGA quality")


def test_gns_sentence():
    data = ck(b"GNGNS,014035.00,4332.69262,S,17235.48549,E,RR,13,0.9,25.63,11.24,,") + b"\r\n"
    p, fx = parse(data)
    assert_eq(len(fx), 1, "gns")
    f = fx[0]
    assert_eq((f[3], f[4], f[5], f[9], f[10]), (4, -435448770, 1725914248, 13, "R"), "gns fields")


def test_rollover_date_and_jump():
    # week-rollover garbage (1999/2006) before min_year: utc unknown, counted
    p, fx = parse(rmc(b"120000", date=b"160699") + rmc(b"120001", date=b"161206"), min_year=2019)
    assert_eq([f[0] for f in fx], [-1, -1], "garbage dates")
    assert_eq(p.counters["date_invalid"], 2, "date_invalid")
    # a jump of 1024 weeks (2026 -> 2046) within a good timeline: rejected until it persists 3 epochs
    d = rmc(b"120000", date=b"010126") + rmc(b"120001", date=b"010126")
    for s in range(2, 6):
        d += rmc(("1200%02d" % s).encode(), date=b"160946")
    p, fx = parse(d)
    u = [f[0] for f in fx]
    assert u[0] > 0 and u[1] == u[0] + 1, u
    assert_eq(u[2:4], [-1, -1], "jumped date not trusted")
    assert u[4] > u[1] + 19 * 365 * 86400, u
    assert_eq(p.counters["date_jump"], 1, "date_jump")


def test_time_backwards_and_restart():
    d = b""
    for t in (b"120010", b"120011", b"120012", b"000005", b"000006"):
        d += rmc(t, date=b"010126")
    p, fx = parse(d)
    assert_eq(p.counters["time_backwards"], 1, "backwards")
    assert_eq(p.counters["restarts"], 1, "restart")


def test_idle_emits_rmc_only_epoch():
    p = NMEAParser(Sink())
    p.feed(rmc(b"120000", date=b"010126"), -1, 1000)
    assert_eq(p.counters["fixes"], 0, "still open")
    p.feed(b"", 0, 1050)
    assert_eq(p.counters["fixes"], 0, "not idle yet")
    p.feed(b"", 0, 1100)
    assert_eq(p.counters["fixes"], 1, "emitted on idle")
    assert_eq(p.on_fix.fixes[0][11], 1000, "t_ms of the epoch")


def _feed_all(p, data, n):
    p.feed(data, n, 0)
    return p.counters["sentences"]


def test_feed_heap_locked():
    chunk = bytearray(rmc(b"120000", date=b"010126") + vtg() + gga(b"120000") + b"\xb5\x62\x00" +
                      rmc(b"120001", date=b"010126") + gga(b"120001"))
    p = NMEAParser(lambda f: None)
    p.feed(chunk)  # warm up (first-use allocations)
    n0 = p.counters["sentences"]
    n = heap_locked(_feed_all, p, chunk, len(chunk))
    assert_eq(n - n0, 5, "sentences under heap lock")


def test_bad_args():
    assert_raises(ValueError, NMEAParser, None, 1990)


def test_ubx_checksum_known_frame():
    # UBX-CFG-RATE 200 ms (5 Hz), navRate 1, timeRef GPS: the widely published frame
    assert_eq(ubx.cfg_rate(5), b"\xb5\x62\x06\x08\x06\x00\xc8\x00\x01\x00\x01\x00\xde\x6a", "cfg-rate")
    assert_raises(ValueError, ubx.cfg_rate, 3)


class FakePeer:
    """machine.UART subset; answers each UBX CFG frame with ACK (or NAK / silence) between polls."""

    def __init__(self, mode="ack", drop_first=0):
        self.mode = mode
        self.rx = bytearray()
        self.written = []
        self.drop = drop_first

    def write(self, b):
        self.written.append(bytes(b))
        if self.drop > 0:
            self.drop -= 1
            return len(b)
        if self.mode == "silent":
            return len(b)
        body = bytes((0x05, 0x01 if self.mode == "ack" else 0x00, 2, 0, b[2], b[3]))
        a, c = ubx.checksum(body)
        self.rx += b"$GPTXT,noise*00\r\n\xb5\x62" + body + bytes((a, c))
        return len(b)

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n=-1):
        k = min(len(buf), len(self.rx), 7)  # arrives in small pieces
        buf[:k] = self.rx[:k]
        self.rx = self.rx[k:]
        return k


def test_ubx_configure_acked_with_retry():
    u = FakePeer("ack", drop_first=1)
    n = ubx.configure(u, 10, True, "m8", 3, 50)
    assert_eq(n, len(ubx.setup_frames(10)), "all acked")
    assert_eq(len(u.written), n + 1, "one retry")
    rate = [w for w in u.written if w[2:4] == b"\x06\x08"][0]
    assert_eq(rate[6:8], b"\x64\x00", "100 ms")


def test_ubx_configure_nak_and_silence():
    assert_raises(ubx.UBXError, ubx.configure, FakePeer("nak"), 1)
    e = assert_raises(ubx.UBXError, ubx.configure, FakePeer("silent"), 1)
    assert "no UBX ACK" in str(e), str(e)
    u = FakePeer("silent")
    assert_eq(ubx.configure(u, 1, False), 0, "no wait")
    assert_eq(len(u.written), len(ubx.setup_frames(1)), "frames written")


def test_ubx_m10_valset():
    fr = ubx.setup_frames(5, "m10")
    assert_eq(len(fr), 1, "one VALSET")
    f = fr[0]
    assert_eq(f[2:4], b"\x06\x8a", "class/id")
    a, b = ubx.checksum(f[2:-2])
    assert_eq((a, b), (f[-2], f[-1]), "checksum")
    u = FakePeer("ack")
    assert_eq(ubx.configure(u, 5, True, "m10"), 1, "acked")
