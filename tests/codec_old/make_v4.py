"""Writes tests/codec_old/v4_blocks.json: record-format version 4 blocks written by the version 4 encoder
(firmware/codec.py as of commit V4_COMMIT, the last commit before version 5), with the records given to it.
Run from the repository root: python tests/codec_old/make_v4.py

The records are the ones version 5 changed the handling of: status records (version 5 appends
`supply_mv`), tamper records whose reasons version 5 put in the string table (a version 4 box writes
them inline), and a trip_end with the version 4 optional fields."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_v3 import old_codec  # noqa: E402

V4_COMMIT = "2bebad89390a620e61e15f3c5b552341f0ab061e"
DEVICE = "box-v4"
BOOT = 9


def records():
    st = {"type": "status", "fw": "0.1.0", "boot": BOOT, "store_used": 4096, "store_evicted": 0, "gnss_ok": 1,
          "accel_ok": 1, "odometer_m": 20417, "calib": "calibrated", "calib_quality": 88}
    out = [dict(st, seq=700, t_ms=1000, utc_s=849427200)]
    for i, (reason, value) in enumerate((("tow", 0), ("geofence_exit", 312), ("cutoff", 300500),
                                         ("cutoff_end", 12250), ("supply_invalid", 0),
                                         ("ignition_stuck", 1))):
        out.append({"type": "tamper", "seq": 701 + i, "t_ms": 2000 + 1000 * i, "utc_s": 849427201 + i,
                    "reason": reason, "value": value})
    out.append({"type": "trip_end", "seq": 707, "t_ms": 9000, "utc_s": 849427208, "trip": 690,
                "start_t_ms": 100,
                "end_t_ms": 8800, "start_utc_s": 849427100, "end_utc_s": 849427208, "start_lat_e7": 457600000,
                "start_lon_e7": 48400000, "end_lat_e7": 457610000, "end_lon_e7": 48410000, "distance_m": 1500,
                "bridged_m": 0, "duration_s": 108, "max_speed_mmps": 14000, "n_harsh_accel": 0,
                "n_harsh_brake": 1, "n_harsh_corner_left": 0, "n_harsh_corner_right": 0, "n_crash": 0,
                "n_overspeed": 0, "idle_s": 3, "night_s": 0, "overspeed_s": 0, "score": 91,
                "n_unclassified": 2, "score_note": "partial_unclassified"})
    out.append(dict(st, seq=708, t_ms=10000, utc_s=849427210, store_used=8192))
    out.append({"type": "odometer", "seq": 709, "t_ms": 10000, "utc_s": 849427210, "total_m": 21917})
    return out


def main():
    old = old_codec(V4_COMMIT)
    assert old.VERSION == 4
    recs = records()
    enc = old.BlockEncoder(DEVICE, BOOT, 512)
    for r in recs:
        assert enc.add(dict(r))
    blk = enc.finish()
    path = os.path.join(HERE, "v4_blocks.json")
    with open(path, "w") as f:
        json.dump({"commit": V4_COMMIT, "device": DEVICE, "boot": BOOT, "records": recs,
                   "blocks": [blk.hex()]},
                  f, indent=1)
        f.write("\n")
    print("wrote %s (%d bytes of block)" % (path, len(blk)))


if __name__ == "__main__":
    main()
