"""Differential test: every sentence of the real logs in ../shared/data/nmea that our parser accepts
decodes to the same time, position, speed, course and fix fields as pynmea2; every sentence with a bad
checksum is rejected."""
import glob
import os
import re

import pynmea2
import pytest

from firmware.nmea import NMEAParser

_SENT = re.compile(rb"\$[\x20-\x7e]*")


def _sentences(path):
    data = open(path, "rb").read()
    for raw in re.split(rb"[\r\n]", data):
        # a line may hold binary before the '$' and several '$'; take the text after the last '$'
        i = raw.rfind(b"$")
        if i < 0:
            continue
        m = _SENT.match(raw, i)
        s = m.group(0)
        if m.end() != len(raw) or len(s) < 7:
            continue
        yield s


def _checksum_ok(s):
    if len(s) < 4 or s[-3:-2] != b"*":
        return None
    try:
        want = int(s[-2:], 16)
    except ValueError:
        return False
    x = 0
    for b in s[1:-3]:
        x ^= b
    return x == want


def _logs(d):
    return sorted(glob.glob(os.path.join(d, "*", "*.log")))


def _knots_to_mmps(kn):
    return kn * 1852000.0 / 3600.0


def _close(ours, ref, tol, what, s):
    assert abs(ours - ref) <= tol, "%s: ours %r vs pynmea2 %r in %r" % (what, ours, ref, s)


def _tod_ms(t):
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1000 + t.microsecond // 1000


def _compare(d, msg, s):
    typ = d["type"]
    if typ in ("RMC", "GGA", "GNS"):
        if msg.timestamp is None:
            assert d["tod_ms"] == -1, s
        else:
            assert d["tod_ms"] == _tod_ms(msg.timestamp), s
        if d["lat_e7"] is None:
            assert not msg.lat, s
        else:
            _close(d["lat_e7"], round(msg.latitude * 1e7), 1, "lat", s)
            _close(d["lon_e7"], round(msg.longitude * 1e7), 1, "lon", s)
    if typ == "RMC":
        assert d["status"] == {"A": 1, "V": 0, "": -1}[msg.status], s
        if msg.spd_over_grnd in (None, ""):
            assert d["speed_mmps"] == -1, s
        else:
            _close(d["speed_mmps"], _knots_to_mmps(float(msg.spd_over_grnd)), 1, "speed", s)
        if msg.true_course in (None, ""):
            assert d["course_cdeg"] == -1, s
        else:
            _close(d["course_cdeg"], float(msg.true_course) * 100, 1, "course", s)
        if d["days"] >= 0:
            ds = msg.datestamp
            import datetime

            assert d["days"] == (ds - datetime.date(2000, 1, 1)).days, s
    if typ == "GGA":
        q = msg.gps_qual
        assert d["quality"] == (-1 if q in (None, "") else int(q)), s
        n = msg.num_sats
        assert d["sats"] == (-1 if n in (None, "") else int(n)), s
        h = msg.horizontal_dil
        if h in (None, ""):
            assert d["hdop_x10"] == -1, s
        else:
            _close(d["hdop_x10"], float(h) * 10, 1, "hdop", s)
    if typ == "GNS":
        n = msg.num_sats
        assert d["sats"] == (-1 if n in (None, "") else int(n)), s
    if typ == "VTG":
        if msg.spd_over_grnd_kts not in (None, ""):
            _close(d["speed_mmps"], _knots_to_mmps(float(msg.spd_over_grnd_kts)), 1, "speed", s)
        if msg.true_track not in (None, ""):
            _close(d["course_cdeg"], float(msg.true_track) * 100, 1, "course", s)
    if typ == "GSA":
        h = msg.hdop
        if h in (None, ""):
            assert d["hdop_x10"] == -1, s
        else:
            _close(d["hdop_x10"], float(h) * 10, 1, "hdop", s)


def test_differential_against_pynmea2(shared_nmea_dir):
    p = NMEAParser()
    n_acc = n_cmp = n_bad = 0
    for path in _logs(shared_nmea_dir):
        for s in _sentences(path):
            d = p.parse_sentence(s)
            ck = _checksum_ok(s)
            if ck is False:
                n_bad += 1
                assert d is None, "bad checksum accepted: %r (%s)" % (s, path)
                continue
            if d is None:
                continue
            assert ck, "accepted without checksum: %r" % s
            n_acc += 1
            try:
                msg = pynmea2.parse(s.decode("ascii"), check=True)
            except pynmea2.ParseError:
                continue
            except (ValueError, TypeError):
                continue
            _compare(d, msg, s)
            n_cmp += 1
    # the corpus has thousands of RMC/GGA/GNS/VTG/GSA sentences and ~100 bad checksums
    assert n_acc > 5000 and n_cmp > 5000 and n_bad > 50, (n_acc, n_cmp, n_bad)


def test_every_log_streams_without_error(shared_nmea_dir):
    for path in _logs(shared_nmea_dir):
        data = open(path, "rb").read()
        fixes = []
        p = NMEAParser(lambda f: fixes.append(f.utc_s))
        for i in range(0, len(data), 61):
            p.feed(data[i : i + 61], t_ms=i)
        p.flush()
        # every log holds RMC or GGA epochs; each epoch is one fix
        assert p.counters["fixes"] == len(fixes) > 0, path


@pytest.mark.parametrize(
    "name,expect",
    [
        ("telit-pls83-w.log", 10),  # GPGGA + GNGGA per epoch: still one fix per epoch
        ("quectel-l76k-nmea.log", 150),  # 5 Hz
        ("nmea-rtk.log", 122),  # 10 Hz
    ],
)
def test_epoch_count_matches_corpus(shared_nmea_dir, name, expect):
    data = open(os.path.join(shared_nmea_dir, "gpsd", name), "rb").read()
    times = []
    p = NMEAParser(lambda f: times.append((f.utc_s, f.utc_ms)))
    p.feed(data)
    p.flush()
    got = len(set(t for t in times if t[0] >= 0))
    assert abs(got - expect) <= 1, (name, got, expect)
    assert len(times) - got <= 2, "duplicate epochs: %r" % times
