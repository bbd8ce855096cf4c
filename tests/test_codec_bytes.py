"""The encoder's bytes are the format: every block a box writes must stay byte-identical when the codec's
code is reworked (heap cuts: model layout, tables, the decoder's split). SHA-256 over the blocks of a
3000-second drive plus every other record type, in 15 encoder settings (privacy, thinning,
quantisation; 128/512/4096-byte blocks). The pinned digests are those of the encoder the boxes run,
firmware/codec.py at main 0925232 (record format 5), before the issue-13 codec heap work: a change here
is a format change, to be made on purpose (a new VERSION), never by a refactoring. Each block also
decodes to the records it was given (the decoder is the spec's reader, docs/record-format.md)."""
import functools
import hashlib
import os
import sys

import pytest

from firmware import codec, decoder, records
from testbed.blocks import encode_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def _records():
    sys.path.insert(0, os.path.join(ROOT, "tests", "mp"))
    import drive_gen

    out = []
    seq = 70000
    n = 0
    for r in drive_gen.drive(11, 3000):
        n += 1
        if n % 97 == 0:
            seq += 3  # a seq gap (a record lost before the store)
        if n % 211 == 0:
            r["utc_s"] = -1  # no date from the receiver
        r["seq"] = seq
        seq += 1
        out.append(r)
        if n % 400 == 0:  # the other record types, between fixes (their own contexts and strings)
            t = r["t_ms"]
            for o in _others(seq, t, r["utc_s"]):
                out.append(o)
                seq += 1
    return out


def _others(seq, t, utc):
    return [
        {"type": "trip_start", "seq": seq, "t_ms": t + 1, "utc_s": utc, "trip": seq, "lat_e7": 481370000,
         "lon_e7": 115750000},
        {"type": "crash", "seq": seq + 1, "t_ms": t + 2, "utc_s": utc, "peak_mg": 6100, "lat_e7": 481370100,
         "lon_e7": 115750100, "speed_mmps": 5000, "rate_hz": 100, "pre_ms": 500,
         "samples": bytes([(i * 13) & 0xFF for i in range(60)])},
        {"type": "trip_end", "seq": seq + 2, "t_ms": t + 3, "utc_s": utc, "trip": seq, "start_t_ms": 1000,
         "end_t_ms": t, "start_utc_s": 849427200, "end_utc_s": utc, "start_lat_e7": 481370000,
         "start_lon_e7": 115750000, "end_lat_e7": 481470000, "end_lon_e7": 115850000, "distance_m": 12345,
         "bridged_m": 120, "duration_s": 899, "max_speed_mmps": 27000, "n_harsh_accel": 1,
         "n_harsh_brake": 2, "n_harsh_corner_left": 0, "n_harsh_corner_right": 3, "n_crash": 1,
         "n_overspeed": 0, "idle_s": 60, "night_s": 0, "overspeed_s": 0, "score": 87, "n_unclassified": 2,
         "score_note": "partial_unclassified"},
        {"type": "status", "seq": seq + 3, "t_ms": t + 4, "utc_s": -1, "fw": "0.1.0+dev", "boot": 7,
         "store_used": 40960, "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 1234567,
         "calib": "calibrated", "calib_quality": 93, "supply_mv": 12600},
        {"type": "tamper", "seq": seq + 4, "t_ms": t + 5, "utc_s": -1, "reason": "power_loss", "value": 3},
        {"type": "config", "seq": seq + 5, "t_ms": t + 6, "utc_s": -1, "key": "overspeed_kmh", "old": "130",
         "new": "\u00fcber 120"},
        {"type": "odometer", "seq": seq + 6, "t_ms": t + 7, "utc_s": -1, "total_m": 1234567},
    ]


# (max_bytes, BlockEncoder keyword arguments) -> SHA-256 of the concatenated blocks, from main at 0925232
SETTINGS = [
    (128, {}, "1fb284ed10754b9e36ab5157616dd8d107853cdebfb414418e7d23caa8299053"),
    (512, {}, "81c8b2e7b6eec2c3c669db1e204045597a6280b6d8afd2c7d035d0c23a4f3f1b"),
    (4096, {}, "27bf4165ad49e7eb348ae0000c2753fddc3dea5db106e791ada249262d12db32"),
    (512, {"privacy": "no_positions"}, "e95e19b60539789e499c8e4a42bbb1eb5805df721bbe8a29b11430859302ae32"),
    (512, {"privacy": "rounded"}, "a5638a4bda0ac278e84c420377e502ae7b30db003481bca48ab0bab153636ae3"),
    (4096, {"privacy": "rounded", "round_e7": 1000},
     "eb57aad2f4da3f64dc84732d4a14a6bad4f1436b3c45cec5eda4d8296e261b15"),
    (512, {"tolerance_m": 5}, "cf163d6d3d7d367934388926d3de375ef3dce58c62d91433e40b6109ce3951f5"),
    (4096, {"tolerance_m": 20}, "ceaa98a977f58ab723f177178484b6f40195597500d162f0c586a208062415f4"),
    (512, {"speed_q_mmps": 100}, "f3301a57642a45f8a72655c845544304594c07dd6e51d52f9232b0358c3bf170"),
    (512, {"course_q_cdeg": 100}, "b86076c42c8ca50b1e3e7749200e13dc17e3d91adde9eddda9c565345e91763b"),
    (4096, {"speed_q_mmps": 50, "course_q_cdeg": 50},
     "0e2c1d267e0a4e06ecdff2cd50c7bc1ab399dda9881900f28f498ef421184ff7"),
    (128, {"privacy": "rounded"}, "c9d8e55b315600964a1ce64a2a2eded8eb00e6ae248c7059caeb4f03ab577907"),
    (128, {"tolerance_m": 3}, "dd9295336e6c6069f3016394a247d87189a1718d05fb65e8d9c93ca2f383a2d3"),
    (512, {"privacy": "rounded", "tolerance_m": 10, "speed_q_mmps": 10, "course_q_cdeg": 10},
     "455dae57354323d81b625aa3a1ac4fbf8fc6e05e0a546e6e468412c4eb1f236b"),
    (4096, {"privacy": "no_positions"}, "2334fd206d9049b2cd7256119e8673cc71768bc88fb505ddeae964bb1a52ef31"),
]


def _digest(max_bytes, kw, recs):
    blocks = encode_blocks(codec.BlockEncoder("box-0001", 3, max_bytes, **kw), recs)
    h = hashlib.sha256()
    for b in blocks:
        h.update(b[0])
    return h.hexdigest(), blocks


@pytest.mark.parametrize("max_bytes,kw,want", SETTINGS, ids=["%d-%s" % (s[0], s[1]) for s in SETTINGS])
def test_blocks_are_byte_identical_to_the_deployed_encoder(max_bytes, kw, want):
    recs = _records()  # (shared: the encoder never changes a record it is given)
    got, blocks = _digest(max_bytes, kw, recs)
    assert got == want
    # and they read back: every record (lossless settings) or every record the setting keeps
    out = []
    for blk, fs, ls, n in blocks:
        hdr, rs = decoder.decode_block(blk)
        assert hdr["count"] == n == len(rs) and (not rs or (rs[0]["seq"], rs[-1]["seq"]) == (fs, ls))
        out.extend(rs)
    if not kw:
        assert out == [_decoded(r) for r in recs]
    else:
        assert {r["seq"] for r in out} <= {r["seq"] for r in recs} and len(out) > 0


def _decoded(r):
    # a record as it decodes: optional fields holding their default are left out
    return {k: v for k, v in r.items() if not (k in records.OPTIONAL and v == records.OPTIONAL[k])}
