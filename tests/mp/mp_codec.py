# Firmware tests for firmware/codec.py, run under MicroPython and CPython.
import drive_gen
from firmware import codec, decoder, records
from firmware.codec import BlockEncoder
from firmware.decoder import CodecError, decode_block
from mptest import assert_eq, assert_raises, heap_locked
from testbed.blocks import encode_blocks


def _drive(n=300, seed=5, start=1000, pos_only=False):
    import gc

    gc.collect()
    out = []
    seq = start
    for r in drive_gen.drive(seed, n):
        if pos_only and r["type"] != "pos":
            continue
        r["seq"] = seq
        seq += 1
        out.append(r)
    return out


def _others(seq):
    return [
        {"type": "trip_start", "seq": seq, "t_ms": 1000, "utc_s": 849427200, "trip": seq, "lat_e7": 481370000,
         "lon_e7": 115750000},
        {"type": "event", "seq": seq + 1, "t_ms": 2500, "utc_s": 849427201, "kind": "harsh_brake",
         "dur_ms": 800, "peak_mg": 450, "mean_mg": 310, "speed_start_mmps": 13000, "speed_end_mmps": 6000,
         "lat_e7": 481370100, "lon_e7": 115750100, "course_cdeg": 35990},
        {"type": "crash", "seq": seq + 3, "t_ms": 2600, "utc_s": 849427201, "peak_mg": 6100,
         "lat_e7": 481370100, "lon_e7": 115750100, "speed_mmps": 5000, "rate_hz": 100, "pre_ms": 500,
         "samples": bytes([(i * 13) & 0xFF for i in range(60)])},
        {"type": "trip_end", "seq": seq + 4, "t_ms": 900000, "utc_s": 849428100, "trip": seq,
         "start_t_ms": 1000,
         "end_t_ms": 900000, "start_utc_s": 849427200, "end_utc_s": 849428100, "start_lat_e7": 481370000,
         "start_lon_e7": 115750000, "end_lat_e7": 481470000, "end_lon_e7": 115850000, "distance_m": 12345,
         "bridged_m": 120, "duration_s": 899, "max_speed_mmps": 27000, "n_harsh_accel": 1, "n_harsh_brake": 2,
         "n_harsh_corner_left": 0, "n_harsh_corner_right": 3, "n_crash": 1, "n_overspeed": 0, "idle_s": 60,
         "night_s": 0, "overspeed_s": 0, "score": 87},
        {"type": "status", "seq": seq + 5, "t_ms": 900100, "utc_s": -1, "fw": "0.1.0+dev", "boot": 7,
         "store_used": 40960, "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 1234567,
         "calib": "calibrated", "calib_quality": 93},
        {"type": "tamper", "seq": seq + 6, "t_ms": 5, "utc_s": -1, "reason": "power_loss", "value": 3},
        {"type": "config", "seq": seq + 7, "t_ms": 6, "utc_s": -1, "key": "overspeed_kmh", "old": "130",
         "new": "\u00fcber 120"},
        {"type": "odometer", "seq": seq + 8, "t_ms": 7, "utc_s": -1, "total_m": 1234567},
    ]


def _encode_all(recs, **kw):
    return encode_blocks(BlockEncoder("box-0001", 3, **kw), recs)


def test_roundtrip_drive():
    recs = _drive()
    blocks = _encode_all(recs, max_bytes=512)
    out = []
    for blk, fs, ls, n in blocks:
        assert_eq(len(blk) <= 512, True, "block size")
        h, rs = decode_block(blk)
        assert_eq(h["device"], "box-0001", "device")
        assert_eq(h["boot"], 3, "boot")
        assert_eq(h["first_seq"], fs, "first_seq")
        assert_eq(h["count"], n, "count")
        assert_eq(rs[-1]["seq"], ls, "last_seq")
        out.extend(rs)
    assert_eq(len(out), len(recs), "count")
    for a, b in zip(out, recs):
        assert_eq(a, b, "record %d" % b["seq"])
    total = 0
    for b in blocks:
        total += len(b[0])
    assert_eq(total < 9 * len(recs), True, "compact: %d bytes for %d records" % (total, len(recs)))


def test_roundtrip_all_types():
    recs = _others(50)
    h, rs = decode_block(_encode_all(recs, max_bytes=1024)[0][0])
    assert_eq(h["count"], len(recs), "count")
    for a, b in zip(rs, recs):
        assert_eq(a, b, b["type"])


def test_extremes():
    recs = [{"type": "pos", "seq": 0, "t_ms": 0, "utc_s": -1, "lat_e7": -900000000, "lon_e7": -1800000000,
             "speed_mmps": -1, "course_cdeg": -1, "hdop_x10": -1, "sats": -1},
            {"type": "pos", "seq": 4000000000, "t_ms": 1 << 40, "utc_s": 1 << 33, "lat_e7": 900000000,
             "lon_e7": 1800000000, "speed_mmps": 400000, "course_cdeg": 35999, "hdop_x10": 999, "sats": 64},
            {"type": "pos", "seq": 3, "t_ms": 5, "utc_s": 0, "lat_e7": 0, "lon_e7": 0, "speed_mmps": 0,
             "course_cdeg": 0, "hdop_x10": 0, "sats": 0}]
    h, rs = decode_block(_encode_all(recs)[0][0])
    assert_eq(rs, recs, "extremes")


def test_block_full_then_new_block():
    recs = _drive(400)
    enc = BlockEncoder("b", 1, max_bytes=128)
    n = 0
    while enc.add(recs[n]):
        n += 1
    blk = enc.finish()
    assert_eq(len(blk) <= 128, True, "size %d" % len(blk))
    assert_eq(enc.count, n, "count")
    assert_eq(decode_block(blk)[1], recs[:n], "records up to the full point")
    assert_eq(enc.add(recs[n]), True, "next block starts with the rejected record")
    assert_eq(decode_block(enc.finish())[1], [recs[n]], "new block")


def test_a_block_that_refused_a_record_takes_no_more():
    # the refused record is rolled back from the byte stream only: the models it changed stay, so
    # the block must not take a record after it, not even one small enough to fit
    enc = BlockEncoder("box-0001", 3, max_bytes=128)
    kept = _drive(3, pos_only=True)
    for r in kept:
        assert_eq(enc.add(r), True, "three fixes fit a 128-byte block")
    last = kept[-1]
    big = {"type": "config", "seq": last["seq"] + 1, "t_ms": last["t_ms"], "utc_s": -1, "key": "k" * 90,
           "old": "", "new": ""}
    assert_eq(enc.add(big), False, "a 90-char string does not fit the rest")
    tiny = {"type": "odometer", "seq": last["seq"] + 1, "t_ms": last["t_ms"], "utc_s": -1, "total_m": 0}
    assert_eq(enc.add(tiny), False, "closed block refuses a record that would fit")
    assert_eq(decode_block(enc.finish())[1], kept, "the block holds what it accepted")
    assert_eq(enc.add(tiny), True, "the next block takes it")
    assert_eq(decode_block(enc.finish())[1], [tiny], "from fresh models")


def test_damage_reports_offset():
    blk = _encode_all(_drive(100))[0][0]
    e = assert_raises(CodecError, decode_block, blk[:-1])
    assert_eq(e.offset >= 0, True, "offset")
    for pos in (0, 2, 10, len(blk) // 2, len(blk) - 1):
        bad = bytearray(blk)
        bad[pos] ^= 0x10
        e = assert_raises(CodecError, decode_block, bytes(bad))
        assert_eq(e.offset >= 0 and e.offset < len(blk), True, "offset for damage at %d" % pos)
        assert_eq(("offset %d" % e.offset) in str(e), True, "message names the offset")
    assert_eq(assert_raises(CodecError, decode_block, b"XX\x01\x00" + bytes(20)).offset, 0, "magic")
    assert_eq(assert_raises(CodecError, decode_block, b"PD\x09\x00" + bytes(20)).offset, 2, "version")


def test_bad_records():
    enc = BlockEncoder("b", 1)
    assert_raises(ValueError, enc.add, {"type": "nope", "seq": 1})
    assert_raises(ValueError, enc.add, {"type": "pos", "seq": 1, "t_ms": 0, "utc_s": -1})
    r = _drive(2, pos_only=True)[0]
    r["course_cdeg"] = 36000
    assert_raises(ValueError, enc.add, r)
    assert_raises(ValueError, BlockEncoder, "", 1)
    assert_raises(ValueError, BlockEncoder, "b", 1, 512, "public")
    # a rejected record leaves the encoder usable
    good = _drive(3)
    assert_eq(enc.add(good[0]), True, "after error")
    assert_eq(decode_block(enc.finish())[1], [good[0]], "after error")


def test_privacy_no_positions():
    recs = _drive(60, pos_only=True) + _others(5000)
    blocks = _encode_all(recs, privacy="no_positions")
    out = []
    for b in blocks:
        h, rs = decode_block(b[0])
        assert_eq(h["privacy"], "no_positions", "header")
        out.extend(rs)
    assert_eq([r["type"] for r in out if r["type"] == "pos"], [], "no pos records")
    assert_eq(len(out), len(_others(0)), "other records kept")
    for r in out:
        for k in r:
            if k.endswith("lat_e7") or k.endswith("lon_e7"):
                assert_eq(r[k], 0, "zeroed " + k)
    assert_eq(out[3]["distance_m"], 12345, "trip km kept")


def test_privacy_rounded():
    recs = _drive(200, pos_only=True)
    out = []
    for b in _encode_all(recs, privacy="rounded", round_e7=100000):
        out.extend(decode_block(b[0])[1])
    assert_eq(len(out), len(recs), "count")
    for a, b in zip(out, recs):
        assert_eq(a["lat_e7"] % 100000, 0, "rounded")
        assert_eq(abs(a["lat_e7"] - b["lat_e7"]) <= 50000, True, "nearest")
        assert_eq(abs(a["lon_e7"] - b["lon_e7"]) <= 50000, True, "nearest")
        assert_eq(a["speed_mmps"], b["speed_mmps"], "speed kept")


def test_bounded_error_mode():
    recs = _drive(400, pos_only=True)
    enc = BlockEncoder("b", 1, max_bytes=4096, tolerance_m=10)
    for r in recs:
        assert_eq(enc.add(r), True, "fits")
    h, out = decode_block(enc.finish())
    assert_eq(h["tolerance_m"], 10, "header")
    assert_eq(len(out) < len(recs) // 2, True, "thinned %d of %d" % (len(out), len(recs)))
    assert_eq(len(out) + enc.dropped, len(recs), "dropped counted")
    byseq = {}
    for r in recs:
        byseq[r["seq"]] = r
    for r in out:
        assert_eq(r, byseq[r["seq"]], "kept records exact")


def test_zigzag():
    for v in (0, 1, -1, 2, -2, 1 << 40, -(1 << 40)):
        assert_eq(decoder.unzigzag(codec.zigzag(v)), v, "zigzag %d" % v)


def test_quantised_speed_course():
    recs = _drive(200, pos_only=True)
    enc = BlockEncoder("b", 1, max_bytes=8192, speed_q_mmps=100, course_q_cdeg=100)
    for r in recs:
        assert_eq(enc.add(r), True, "fits")
    h, out = decode_block(enc.finish())
    assert_eq((h["speed_q_mmps"], h["course_q_cdeg"]), (100, 100), "header")
    for a, b in zip(out, recs):
        assert_eq((a["lat_e7"], a["lon_e7"], a["t_ms"], a["hdop_x10"]), (b["lat_e7"], b["lon_e7"], b["t_ms"],
                                                                        b["hdop_x10"]), "positions lossless")
        assert_eq(abs(a["speed_mmps"] - b["speed_mmps"]) <= 50, True, "speed to 0.1 m/s")
        d = (a["course_cdeg"] - b["course_cdeg"]) % 36000
        assert_eq(d <= 50 or d >= 35950 or b["course_cdeg"] < 0, True, "course to 1 deg")


def _fixes(n, hz, utc_unknown_every=0):
    # pos records at hz fixes per second with arrival jitter, hdop/sats changes, occasional unknown utc_s
    out = []
    for i in range(n):
        utc = 849427200 + (i // hz)
        if utc_unknown_every and i % utc_unknown_every == 3:
            utc = -1
        out.append({"type": "pos", "seq": 7 + i + (i // 50),
                    "t_ms": 5000 + i * (1000 // hz) + (i * 7919) % 23,
                    "utc_s": utc, "lat_e7": 481370000 + i * 37 + (i % 5), "lon_e7": 115750000 - i * 11,
                    "speed_mmps": 13900 + (i * 31) % 97 if i % 9 else -1,
                    "course_cdeg": (35990 + i * 3) % 36000,
                    "hdop_x10": 9 + (i // 13) % 3, "sats": 11 - (i // 17) % 2})
    return out


def test_roundtrip_rates_and_unknown_utc():
    for hz, unk in ((1, 0), (5, 0), (1, 10), (10, 4)):
        recs = _fixes(120, hz, unk)
        out = []
        for b in _encode_all(recs, max_bytes=256):
            out.extend(decode_block(b[0])[1])
        assert_eq(out, recs, "%d Hz, utc unknown every %d" % (hz, unk))


def test_regular_fix_is_small():
    # 1 Hz fixes moving as predicted: after the first, each costs the regular-fix bit + t, speed, course,
    # lat, lon residuals near 0 (well under 3 bytes)
    recs = []
    for i in range(40):
        recs.append({"type": "pos", "seq": 100 + i, "t_ms": 1000 * i + 120, "utc_s": 849427200 + i,
                     "lat_e7": 481370000, "lon_e7": 115750000 + 1866 * i, "speed_mmps": 13900,
                     "course_cdeg": 9000, "hdop_x10": 9, "sats": 11})
    one = len(_encode_all(recs[:1], max_bytes=4096)[0][0])
    allb = len(_encode_all(recs, max_bytes=4096)[0][0])
    assert_eq((allb - one) < 3 * 39, True, "%d bytes for 39 regular fixes" % (allb - one))
    h, out = decode_block(_encode_all(recs, max_bytes=4096)[0][0])
    assert_eq(out, recs, "regular fixes")


# The last block of tests/codec_old/v3_blocks.json (512-byte set): written by the version 3 encoder
# (commit ace2aab), with the records given to it: a trip_end without the fields version 4 added, then more
_V3_BLOCK = ("5044030006626f782d763304bc2903d6f089aa06888e1486fe88cb03bcd1b16e080a752b8eadfffffa468fc9fa4847"
             "80de647345fffedaaa03fffffffa3f2abcdffc7c89e3e805b87fff860f8ce9a1a1e1633caaa63a410d83ab5eaaf03ad83fe602"
             "7fe0499e3fffff12ed1ec21bc4f4c5c10affffe78c58bf7b4289c1")
_V3_RECORDS = [
    {"type": "trip_end", "seq": 5308, "t_ms": 329480, "utc_s": 849427499, "trip": 4999, "start_t_ms": 29897,
     "end_t_ms": 329080, "start_utc_s": 849427200, "end_utc_s": 849427499, "start_lat_e7": 481369987,
     "start_lon_e7": 115749982, "end_lat_e7": 481214985, "end_lon_e7": 116030710, "distance_m": 4321,
     "bridged_m": 12, "duration_s": 299, "max_speed_mmps": 24500, "n_harsh_accel": 1, "n_harsh_brake": 2,
     "n_harsh_corner_left": 0, "n_harsh_corner_right": 1, "n_crash": 1, "n_overspeed": 0, "idle_s": 61,
     "night_s": 0, "overspeed_s": 0, "score": 83},
    {"type": "status", "seq": 5309, "t_ms": 329580, "utc_s": 849427499, "fw": "0.1.0", "boot": 4,
     "store_used": 49152, "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 1238888,
     "calib": "calibrated", "calib_quality": 91},
    {"type": "odometer", "seq": 5310, "t_ms": 329680, "utc_s": 849427499, "total_m": 1238888},
]


def test_version_4_and_older_blocks():  # (the current version and 3)
    import binascii

    blk = _encode_all(_drive(5))[0][0]
    assert_eq(blk[2], records.VERSION, "version byte")
    v3 = binascii.unhexlify(_V3_BLOCK)
    h, recs = decode_block(v3)
    assert_eq(h["version"], 3, "version of a version 3 block")
    assert_eq(recs, _V3_RECORDS, "version 3 block")
    for v in (2, records.VERSION + 1):
        bad = bytearray(blk)
        bad[2] = v
        e = assert_raises(CodecError, decode_block, bytes(bad))
        assert_eq(e.offset, 2, "version %d rejected" % v)
        assert_eq(("version %d " % v) in str(e), True, "message names the version")


def test_trip_end_optional_fields():
    # version 4: trip_end carries n_unclassified, n_gnss_only and score_note; absent means 0 / '',
    # and a decoded record has them only when they say something
    base = {"type": "trip_end", "seq": 7, "t_ms": 900000, "utc_s": 849428100, "trip": 3, "start_t_ms": 1000,
            "end_t_ms": 900000, "start_utc_s": 849427200, "end_utc_s": 849428100, "start_lat_e7": 481370000,
            "start_lon_e7": 115750000, "end_lat_e7": 481470000, "end_lon_e7": 115850000, "distance_m": 12000,
            "bridged_m": 0, "duration_s": 899, "max_speed_mmps": 22000, "n_harsh_accel": 0,
            "n_harsh_brake": 1,
            "n_harsh_corner_left": 0, "n_harsh_corner_right": 0, "n_crash": 0, "n_overspeed": 0, "idle_s": 0,
            "night_s": 0, "overspeed_s": 0, "score": 80}
    partial = dict(base, seq=8, n_unclassified=2, n_gnss_only=1, score_note="partial_unclassified+gnss_only")
    odd = dict(base, seq=9, score_note="partial: a reason not in the string table")
    h, out = decode_block(_encode_all([base, partial, odd])[0][0])
    assert_eq(out, [base, partial, odd], "trip_end with and without the optional fields")
    explicit = dict(base, n_unclassified=0, score_note="")
    h, out = decode_block(_encode_all([explicit])[0][0])
    assert_eq(out, [base], "default values are not carried")

def test_range_coder_carries_and_raw_bytes():
    # crash traces of pseudo-random bytes (raw pieces) and runs of 0xff: the coder's carries must reach
    # back through runs of ff bytes already out; every block decodes to what went in
    x = 12345
    for trial in range(12):
        samples = bytearray(700)
        for i in range(700):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            samples[i] = 0xFF if (trial & 1 and i % 7 < 5) else (x >> 16) & 0xFF
        recs = _others(100 * trial + 10)
        recs[2]["samples"] = bytes(samples)
        for blk, first, last, n in _encode_all(recs, max_bytes=2048):
            h, out = decode_block(blk)
            assert_eq(h["count"], n, "count")
        got = [r for b in _encode_all(recs, max_bytes=2048) for r in decode_block(b[0])[1]]
        assert_eq(got, recs, "trial %d" % trial)


def test_coder_state_stays_small_int():
    # low < 2**28 and range <= 2**28 between symbols (so low + bound < 2**29: a small int on 32-bit boards)
    enc = BlockEncoder("box-0001", 3, max_bytes=4096)
    for r in _drive(200, pos_only=True):
        if not enc.add(r):
            enc.finish()
            enc.add(r)
        w = enc._w
        assert_eq(0 <= w.low < (1 << 28) and (1 << 20) <= w.range <= (1 << 28), True, "coder state")


def _add_all(enc, recs):
    n = 0
    for r in recs:
        if enc.add(r):
            n += 1
    return n


def test_add_heap_locked():
    # after a block's first record, adding a fix allocates nothing (predictor state, header values,
    # the roll-back mark are the encoder's own), and neither does refusing one that does not fit
    recs = _drive(80, pos_only=True)
    enc = BlockEncoder("box-0001", 3, max_bytes=4096)
    for r in recs[:5]:
        enc.add(r)  # warm up: the block opens
    assert_eq(heap_locked(_add_all, enc, recs[5:]), len(recs) - 5, "fixes added under heap lock")
    assert_eq(decode_block(enc.finish())[1], recs, "decoded")
    small = BlockEncoder("box-0001", 3, max_bytes=128)
    small.add(recs[0])
    n = heap_locked(_add_all, small, recs[1:])
    assert_eq(0 < n < len(recs) - 1, True, "a 128-byte block closes: %d fixes" % n)
    assert_eq(decode_block(small.finish())[1], recs[:n + 1], "decoded, the refused fix rolled back")
