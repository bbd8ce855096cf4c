"""Writes tests/codec_old/v3_blocks.json: record-format version 3 blocks written by the version 3 encoder
(firmware/codec.py as of commit V3_COMMIT, the last commit before version 4), with the records given to it
(the truth a version-4 decoder must give back). Run from the repository root: python
tests/codec_old/make_v3.py

The records are what a box with version 3 firmware stores: a 1 Hz drive (tests/mp/drive_gen.py, NMEA
resolutions) with trip start/end, events, a crash trace, status, tamper, config and odometer records;
trip_end without the three fields version 4 added. Blocks in every header mode (flags) a box can write."""
import json
import os
import subprocess
import sys
import types

V3_COMMIT = "ace2aabd5b79990a605c2f7f912062d5656b582a"  # last version 3 codec (f567ee8 made version 4)
V3_FIRST_GRID = "6bfde375b2440623692d5d0bfa7eab2d9ed800a8"  # first version 3 with the NMEA grid: same bytes
DEVICE = "box-v3"
BOOT = 4
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# encoder settings per block set: every header flag a version 3 box writes
VARIANTS = (
    {"max_bytes": 512},
    {"max_bytes": 4096},
    {"max_bytes": 512, "privacy": "rounded"},
    {"max_bytes": 512, "privacy": "no_positions"},
    {"max_bytes": 512, "tolerance_m": 5},
    {"max_bytes": 512, "speed_q_mmps": 100, "course_q_cdeg": 100},
)


def old_codec(commit):
    """firmware/codec.py as of `commit`, imported as a module of its own (needs the git history)."""
    src = subprocess.run(["git", "-C", ROOT, "show", "%s:firmware/codec.py" % commit], check=True,
                         capture_output=True).stdout.decode()
    mod = types.ModuleType("codec_%s" % commit[:7])
    exec(compile(src, "codec@%s" % commit[:7], "exec"), mod.__dict__)
    return mod


def records():
    sys.path.insert(0, os.path.join(ROOT, "tests", "mp"))
    import drive_gen

    out = []
    seq = 5000
    t_end = 0
    for r in drive_gen.drive(7, 300):
        r["seq"] = seq
        seq += 1
        out.append(r)
        t_end = r["t_ms"]
    first = out[0]
    head = [
        {"type": "tamper", "seq": 4995, "t_ms": 5, "utc_s": -1, "reason": "power_loss", "value": 3},
        {"type": "odometer", "seq": 4996, "t_ms": 7, "utc_s": -1, "total_m": 1234567},
        {"type": "config", "seq": 4997, "t_ms": 9, "utc_s": -1, "key": "overspeed_kmh", "old": "130",
         "new": "\u00fcber 120"},
        {"type": "status", "seq": 4998, "t_ms": 20000, "utc_s": -1, "fw": "0.1.0", "boot": BOOT,
         "store_used": 40960, "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 1234567,
         "calib": "calibrating", "calib_quality": 12},
        {"type": "trip_start", "seq": 4999, "t_ms": first["t_ms"] - 200, "utc_s": first["utc_s"],
         "trip": 4999, "lat_e7": first["lat_e7"], "lon_e7": first["lon_e7"]},
    ]
    mid = out[150]
    extra = [
        {"type": "crash", "seq": seq, "t_ms": mid["t_ms"] + 300, "utc_s": mid["utc_s"], "peak_mg": 6100,
         "lat_e7": mid["lat_e7"], "lon_e7": mid["lon_e7"], "speed_mmps": 5000, "rate_hz": 100, "pre_ms": 500,
         "samples": bytes([(i * 37 + 11) & 0xFF for i in range(90)])},
    ]
    seq += 1
    last = out[-1]
    tail = [
        {"type": "trip_end", "seq": seq, "t_ms": t_end + 400, "utc_s": last["utc_s"], "trip": 4999,
         "start_t_ms": head[4]["t_ms"], "end_t_ms": t_end, "start_utc_s": first["utc_s"],
         "end_utc_s": last["utc_s"], "start_lat_e7": first["lat_e7"], "start_lon_e7": first["lon_e7"],
         "end_lat_e7": last["lat_e7"], "end_lon_e7": last["lon_e7"], "distance_m": 4321, "bridged_m": 12,
         "duration_s": 299, "max_speed_mmps": 24500, "n_harsh_accel": 1, "n_harsh_brake": 2,
         "n_harsh_corner_left": 0, "n_harsh_corner_right": 1, "n_crash": 1, "n_overspeed": 0, "idle_s": 61,
         "night_s": 0, "overspeed_s": 0, "score": 83},
        {"type": "status", "seq": seq + 1, "t_ms": t_end + 500, "utc_s": last["utc_s"], "fw": "0.1.0",
         "boot": BOOT, "store_used": 49152, "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1,
         "odometer_m": 1238888, "calib": "calibrated", "calib_quality": 91},
        {"type": "odometer", "seq": seq + 2, "t_ms": t_end + 600, "utc_s": last["utc_s"], "total_m": 1238888},
    ]
    body = out[:150] + extra + out[150:] + tail
    for i in range(len(body)):  # seqs rise through the block, as a box numbers its records
        body[i]["seq"] = 5000 + i
    return head + body


def encode(codec, recs, kw):
    """[(block bytes, first_seq, last_seq, count)] as the box's encoder describes each finished block."""
    from testbed.blocks import encode_blocks

    return encode_blocks(codec.BlockEncoder(DEVICE, BOOT, **kw), recs)


def jsonable(r):
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in r.items()}


def main():
    recs = records()
    v3 = old_codec(V3_COMMIT)
    assert v3.VERSION == 3
    first = old_codec(V3_FIRST_GRID)
    sets = []
    for kw in VARIANTS:
        blocks = encode(v3, recs, kw)
        assert blocks == encode(first, recs, kw), "version 3 changed its bytes during its life: %r" % kw
        assert all(b[0][2] == 3 for b in blocks)
        if kw == VARIANTS[0]:
            dec = [r for b in blocks for r in v3.decode_block(b[0])[1]]
            assert dec == recs, "the version 3 codec does not give its records back"
        sets.append({"encoder": kw, "blocks": [{"hex": b.hex(), "first_seq": fs, "last_seq": ls, "count": n}
                                               for b, fs, ls, n in blocks]})
    out = {"note": __doc__.split("\n")[0], "commit": V3_COMMIT, "same_bytes_as": V3_FIRST_GRID,
           "device": DEVICE, "boot": BOOT, "records": [jsonable(r) for r in recs], "sets": sets}
    with open(os.path.join(HERE, "v3_blocks.json"), "w") as f:
        # one record or block per line
        f.write(json.dumps(out, sort_keys=True).replace("}, {", "},\n{") + "\n")
    print("%d records, %d blocks" % (len(recs), sum(len(s["blocks"]) for s in sets)))


if __name__ == "__main__":
    main()
