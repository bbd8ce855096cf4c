"""The supply voltage in the records (record format version 5: status.supply_mv) and where it goes:
Teltonika IO 66 (external voltage, mV) read back by the independent decoder (PyPI codecs-protocol), and
OsmAnd's `power` (V). Version 4 blocks (tests/codec_old/v4_blocks.json, written by the version 4 encoder)
still decode to the records given to that encoder. Power-management alarms: the tow reaches Traccar as
its tow alarm (IO 246)."""
import json
import os
import sys

from edge_agent import osmand
from edge_agent import teltonika as T
from firmware import codec, decoder
from traccar_fake import oracle_decode

HERE = os.path.dirname(os.path.abspath(__file__))


def test_v4_blocks_decode_to_the_records_the_v4_encoder_was_given():
    with open(os.path.join(HERE, "codec_old", "v4_blocks.json")) as f:
        d = json.load(f)
    got = []
    for h in d["blocks"]:
        hdr, recs = decoder.decode_block(bytes.fromhex(h))
        assert hdr["version"] == 4 and hdr["device"] == d["device"]
        got += recs
    assert got == d["records"]
    assert all("supply_mv" not in r for r in got)  # version 4 has no supply reading: absent


def test_v4_fixture_is_what_the_v4_encoder_writes():
    import subprocess

    sys.path.insert(0, os.path.join(HERE, "codec_old"))
    import make_v4

    try:
        old = make_v4.old_codec(make_v4.V4_COMMIT)
    except (subprocess.CalledProcessError, OSError):
        import pytest

        pytest.skip("git history of %s not in this checkout: the fixture cannot be rewritten"
                    % make_v4.V4_COMMIT)
    enc = old.BlockEncoder(make_v4.DEVICE, make_v4.BOOT, 512)
    for r in make_v4.records():
        assert enc.add(dict(r))
    with open(os.path.join(HERE, "codec_old", "v4_blocks.json")) as f:
        assert enc.finish().hex() == json.load(f)["blocks"][0]


def _status(seq, t_ms, mv):
    r = {"type": "status", "seq": seq, "t_ms": t_ms, "utc_s": 849427200 + t_ms // 1000, "fw": "0.2",
         "boot": 2, "store_used": 100, "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 20417,
         "calib": "calibrated", "calib_quality": 90}
    if mv is not None:
        r["supply_mv"] = mv
    return r


def test_status_supply_mv_round_trips_and_is_optional():
    recs = [_status(10, 1000, 12430), _status(11, 2000, None),
            {"type": "tamper", "seq": 12, "t_ms": 3000, "utc_s": 849427203, "reason": "tow", "value": 0}]
    enc = codec.BlockEncoder("box-1", 2, 512)
    for r in recs:
        assert enc.add(dict(r))
    blk = enc.finish()
    assert blk[2] == 5
    assert decoder.decode_block(blk)[1] == recs


def test_supply_voltage_is_io66_and_osmand_power_tow_is_the_tow_alarm():
    recs = [{"type": "pos", "seq": 20, "t_ms": 500, "utc_s": 849427200, "lat_e7": 457600000,
             "lon_e7": 48400000, "speed_mmps": 0, "course_cdeg": 0, "hdop_x10": 8, "sats": 10},
            _status(21, 1000, 12430),
            {"type": "tamper", "seq": 22, "t_ms": 2000, "utc_s": 849427202, "reason": "tow", "value": 0},
            _status(23, 3000, 14210)]
    enc = codec.BlockEncoder("box-1", 2, 512)
    for r in recs:
        assert enc.add(dict(r))
    hdr, dec = decoder.decode_block(enc.finish())
    mine = T.Mapper().map_block(hdr, dec)
    assert [s for s, _ in mine] == [20, 21, 22, 23]
    out = oracle_decode(T.avl_packet([a for _, a in mine]))[0]["records"]
    two = [{e["id"]: e["value"] for e in r["io_data"]["two_byte_io"]} for r in out]
    one = [{e["id"]: e["value"] for e in r["io_data"]["one_byte_io"]} for r in out]
    # IO 66 = the status records' supply in mV, as the box read it
    assert [t.get(66) for t in two] == [None, 12430, None, 14210]
    assert [r["io_data"]["event_id"] for r in out] == [0, 66, 246, 66]
    # a status says nothing of the ignition: no IO 239/240 on it; the tow alarm says ignition off, moving
    assert 239 not in one[1] and 240 not in one[1]
    assert one[2][246] == 1 and one[2][239] == 0 and one[2][240] == 1 and out[2]["priority"] == 2
    p = [dict(osmand.params(a, "box-1")) for _, a in mine]
    assert p[1]["power"] == "12.430" and p[3]["power"] == "14.210" and "power" not in p[0]
    assert "ignition" not in p[1] and p[2]["alarm"] == "tow"
