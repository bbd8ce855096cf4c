"""Traccar output: Codec 8 Extended packets (Teltonika's documented examples, byte for byte), the
record -> AVL mapping read back by an independent decoder (PyPI codecs-protocol), and the agent's
delivery to a byte-level fake Traccar server through lost ACKs, a refused IMEI and a connection
dropped mid-packet."""
import os
import sqlite3
import time

import pytest

from edge_agent import teltonika as T
from firmware import decoder
from mosquitto_fixture import mosquitto  # noqa: F401  (pytest fixture)
from testbed.simbox import AgentProc, SimBox, wait_for
from traccar_fake import FakeTraccar, oracle_decode, oracle_signed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMUTE = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")
IMEI = "356307042441013"

# Teltonika wiki, "Codec" page, Codec 8 Extended: the current example (1 record, IO 1, 17, 16, 11, 14)
WIKI_8E = bytes.fromhex(
    "000000000000004A8E010000016B412CEE000100000000000000000000000000000000010005000100010100010011001D"
    "00010010015E2C880002000B000000003544C87A000E000000001DD7E06A00000100002994")
# the same page's 2018 example (a position, IO 239, 17, 16, 11, 14 and a variable-length IO 256)
WIKI_8E_2018 = bytes.fromhex(
    "000000000000005F8E010000015FBA40B620000F0DCDE420959D30008A000006000000000006000100EF00000100110"
    "01E000100100000CBDF0002000B000000003544C875000E0000000029BFE4D10001010000110000000000000000000000"
    "000000000000010000D153")
WIKI_LOGIN = bytes.fromhex("000f333536333037303432343431303133")  # IMEI 356307042441013


def test_crc16_ibm_check_value():
    # the CRC catalogue's check value of CRC-16/ARC (= IBM) over "123456789"
    assert T.crc16_ibm(b"123456789") == 0xBB3D


def test_wiki_examples_byte_for_byte():
    assert T.login_packet(IMEI) == WIKI_LOGIN
    r = {"ts_ms": 0x16B412CEE00, "priority": 1, "lat_e7": 0, "lon_e7": 0, "alt_m": 0, "angle": 0, "sats": 0,
         "speed_kmh": 0, "event_id": 1,
         "io": {1: (1, 1), 17: (2, 0x1D), 16: (4, 0x15E2C88), 11: (8, 0x3544C87A), 14: (8, 0x1DD7E06A)}}
    assert T.avl_packet([r]) == WIKI_8E
    # the wiki's own field reading of the 2018 example: 14.11.2017 11:18:44, 25.2562916 E 54.6676016 N,
    # 138 m, 6 satellites, IO 239 = 0, 17 = 0x1E, 16 = 0xCBDF, 11, 14, and IO 256 (17 bytes)
    r2 = {"ts_ms": 1510658324000, "priority": 0, "lon_e7": 252562916, "lat_e7": 546676016, "alt_m": 138,
          "angle": 0, "sats": 6, "speed_kmh": 0, "event_id": 0,
          "io": {239: (1, 0), 17: (2, 0x1E), 16: (4, 0xCBDF), 11: (8, 0x3544C875), 14: (8, 0x29BFE4D1)},
          "nx": {256: bytes(17)}}
    assert T.avl_packet([r2]) == WIKI_8E_2018
    for pkt, rec in ((WIKI_8E, r), (WIKI_8E_2018, r2)):
        got = T.decode_packet(pkt)[0]
        assert got == dict(rec, nx=rec.get("nx", {}))


def test_decoder_errors_name_the_byte():
    bad = bytearray(WIKI_8E)
    bad[30] ^= 1
    with pytest.raises(T.AvlError, match="CRC-16 mismatch.*byte 82"):
        T.decode_packet(bad)
    with pytest.raises(T.AvlError, match="truncated"):
        T.decode_packet(WIKI_8E[:40])
    with pytest.raises(ValueError, match="imei"):
        T.login_packet("")


def _rec(**kw):
    r = {"ts_ms": 1_760_000_000_123, "priority": 0, "lat_e7": -338688000, "lon_e7": -704506000, "alt_m": 0,
         "angle": 271, "sats": 9, "speed_kmh": 87, "event_id": 253,
         "io": {239: (1, 1), 240: (1, 1), 253: (1, 2), 254: (1, 45), 243: (2, 800), 16: (4, 123456789),
                199: (4, 4321)}}
    r.update(kw)
    return r


def test_independent_decoder_reads_ours_and_gets_signed_coordinates_wrong():
    pkt = T.avl_packet([_rec(), _rec(lat_e7=481370000, lon_e7=115750000, event_id=0)])
    resp, ack = oracle_decode(pkt)
    assert ack == "00000002"
    a, b = resp["records"]
    # Santiago de Chile (south, west): codecs-protocol reads the int32s unsigned
    assert a["latitude"] == pytest.approx((-338688000 + 2 ** 32) / 1e7)
    assert oracle_signed(a["latitude"]) == pytest.approx(-33.8688)
    assert oracle_signed(a["longitude"]) == pytest.approx(-70.4506)
    assert (b["latitude"], b["longitude"]) == (48.137, 11.575)
    assert a["timestamp"] == "09.10.2025 08:53:20"  # seconds only: the oracle drops the ms
    assert (a["angle"], a["satellites"], a["speed"], a["priority"]) == (271, 9, 87, 0)
    io = a["io_data"]
    assert io["event_id"] == 253 and io["total_io_elements"] == 7
    assert {e["id"]: e["value"] for e in io["one_byte_io"]} == {239: 1, 240: 1, 253: 2, 254: 45}
    assert io["two_byte_io"] == [{"id": 243, "value": 800}]
    assert {e["id"]: e["value"] for e in io["four_byte_io"]} == {16: 123456789, 199: 4321}


# ---- records from the real firmware

def firmware_blocks(trace, config=None):
    """Replay `trace` through the firmware (CPython): the blocks in its store (seq order), the box's own
    odometer (m) at each record's time (ground truth for IO 16: from the box's odometer after every
    fix it processed, not from the records) and the replay summary."""
    import bisect

    from firmware import app
    from tools.trace.export import replay_blocks

    history = {}  # boot -> [(fix t_ms, box odometer m after that fix)], from the odometer it boots with
    orig, orig_init = app.Box._on_fix, app.Box.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        history[self.boot] = [(-1, self.odo.total_mm / 1000)]

    def on_fix(self, fix):
        orig(self, fix)
        history[self.boot].append((fix.t_ms, self.odo.total_mm / 1000))

    app.Box._on_fix, app.Box.__init__ = on_fix, init
    try:
        blocks, summary = replay_blocks(trace, config)
    finally:
        app.Box._on_fix, app.Box.__init__ = orig, orig_init
    truth = {}
    for _fs, _ls, _p, b in blocks:
        hdr, recs = T.records_of_block(b)
        h = history.get(hdr["boot"], [])
        ts = [x[0] for x in h]
        for r in recs:
            k = bisect.bisect_right(ts, r["t_ms"])
            truth[r["seq"]] = h[k - 1][1] if k else 0.0
    return blocks, truth, summary


@pytest.fixture(scope="module")
def commute():
    return firmware_blocks(COMMUTE)


def _truth_lines(trace):
    """The simulator's truth lines of a trace."""
    import gzip
    import json

    with gzip.open(trace, "rt") as f:
        return [o for o in map(json.loads, f) if o.get("s") == "truth"]


def _decoded(blocks):
    recs = []
    for _fs, _ls, _p, b in blocks:
        recs += T.records_of_block(b)[1]
    return recs


def check_against_box(avl_by_seq, blocks, truth, summary, oracle=False, pos_ignition=1):
    """Every pos / event / trip record has its AVL record with the box's odometer; harsh events as
    green driving. avl_by_seq: seq -> AVL record dict (ours) or oracle record (oracle=True).
    pos_ignition: the ignition (IO 239) the positions were taken with (the trace's truth)."""
    recs = _decoded(blocks)
    want = [r for r in recs if r["type"] in ("pos", "event", "crash", "trip_start", "trip_end")
            or (r["type"] == "tamper" and r["reason"] in ("power_loss", "unaccounted_distance", "tow"))]
    # status records with the supply voltage (record format 5) are AVL records too, when their block
    # gives them a time (a status written before the first fix of a boot may have none)
    volts = {r["seq"]: r for r in recs if r["type"] == "status" and r.get("supply_mv", -1) >= 0}
    assert sorted(set(avl_by_seq) - set(volts)) == sorted(r["seq"] for r in want)
    assert (any(r["utc_s"] < 0 for s, r in volts.items() if s not in avl_by_seq)
            or set(volts) <= set(avl_by_seq))
    want += [r for s, r in volts.items() if s in avl_by_seq]
    fixes = [r for r in recs if r["type"] == "pos"]
    assert len(fixes) == summary["records"]["pos"]
    # a record stamped with a time before any fix the records hold around it (a towing event that
    # began before the box wrote positions) can only be bounded: between the box's odometer at its
    # time and at the next fix written after it
    upper = {}
    nxt = None
    for r in reversed(recs):
        if r["type"] == "pos":
            nxt = truth[r["seq"]]
        upper[r["seq"]] = nxt if nxt is not None else truth[r["seq"]]
    for r in want:
        a = avl_by_seq[r["seq"]]
        if oracle:
            io = {e["id"]: e["value"] for g in ("one_byte_io", "two_byte_io", "four_byte_io")
                  for e in a["io_data"][g]}
            ev = a["io_data"]["event_id"]
            lat = oracle_signed(a["latitude"])
        else:
            io = {k: v for k, (_s, v) in a["io"].items()}
            ev = a["event_id"]
            lat = a["lat_e7"] / 1e7
        # the box's odometer at that record, within the estimate's error between two anchors
        lo, hi = truth[r["seq"]], truth[r["seq"]]
        if r["type"] not in ("pos", "trip_start") and not any(
                f["t_ms"] <= r["t_ms"] <= f["t_ms"] + 1500 for f in fixes):
            hi = max(hi, upper[r["seq"]])
        assert lo - 20 <= io[16] <= hi + 20, (r, io[16], lo, hi)
        if r["type"] == "pos":
            assert lat == pytest.approx(r["lat_e7"] / 1e7, abs=1e-7)
            assert io[239] == pos_ignition and ev == 0
        if r["type"] == "event" and r["kind"].startswith("harsh_"):
            assert ev == 253 and io[253] == {"harsh_accel": 1, "harsh_brake": 2}.get(r["kind"], 3)
            assert io[243] == r["dur_ms"] and io[254] == (r["peak_mg"] + 5) // 10
        if r["type"] == "trip_end":
            assert io[199] == r["distance_m"] and io[239] == 0
        if r["type"] == "status":  # the supply voltage the box read (record format 5): IO 66, mV
            assert ev == 66 and io[66] == r["supply_mv"] and 239 not in io
    last = max(avl_by_seq)
    a = avl_by_seq[last]
    final = ({e["id"]: e["value"] for e in a["io_data"]["four_byte_io"]} if oracle
             else {k: v for k, (_s, v) in a["io"].items()})[16]
    assert abs(final - summary["odometer_mm"] / 1000) <= 25


def test_mapping_of_a_replayed_drive(commute):
    blocks, truth, summary = commute
    m = T.Mapper()
    avl = {}
    for _fs, _ls, _p, b in blocks:
        hdr, recs = T.records_of_block(b)
        for seq, a in m.map_block(hdr, recs):
            avl[seq] = a
    check_against_box(avl, blocks, truth, summary)
    kinds = [r["kind"] for r in _decoded(blocks) if r["type"] == "event"]
    assert kinds == ["harsh_accel", "harsh_brake", "harsh_corner_left"]  # the trace's truth events
    # in time order (events carry their start time) the odometer goes back at most when an estimate
    # between anchors ran a little ahead of the box (the trip end carries its exact figure)
    odos = [a["io"][16][1] for a in sorted(avl.values(), key=lambda a: a["ts_ms"])]
    assert min(b - a for a, b in zip(odos, odos[1:])) >= -2


def test_a_shock_while_parked_is_no_green_driving_and_no_ignition():
    """The firmware writes a harsh-looking jolt with the ignition and the engine off (a tow truck's winch) as
    kind `shock` (firmware/app.py): Traccar gets neither a green-driving alarm (IO 253: charged to the driver)
    nor an ignition-on for it; a harsh acceleration still is one."""
    from tools.consumer import fleet_sim

    def ev(seq, kind):
        return {"type": "event", "seq": seq, "t_ms": 1000 * seq, "utc_s": 848800000 + seq, "kind": kind,
                "dur_ms": 700, "peak_mg": 480, "mean_mg": 300, "speed_start_mmps": 0, "speed_end_mmps": 0,
                "lat_e7": 450000000, "lon_e7": 50000000, "course_cdeg": 0}
    (_fs, _n, blk), = fleet_sim.encode_blocks("box-s", 1, [ev(1, "shock"), ev(2, "harsh_accel")], 4096)
    hdr, recs = T.records_of_block(blk)
    (_s1, shock), (_s2, harsh) = T.Mapper().map_block(hdr, recs)
    assert shock["event_id"] == 0 and T.IO_GREEN_TYPE not in shock["io"]
    assert T.IO_IGNITION not in shock["io"] and T.IO_MOVEMENT not in shock["io"]
    assert harsh["event_id"] == T.IO_GREEN_TYPE and harsh["io"][T.IO_GREEN_TYPE] == (1, 1)


# Teltonika's FMB AVL IDs (wiki, "FMB Teltonika Data Sending Parameters ID"; docs/traccar.md): 253 green
# driving type (1 harsh acceleration, 2 harsh braking, 3 harsh cornering; the FMB's green driving has an
# accelerometer and a GNSS source), 254 its value, 243 its duration, 251 idling, 246 towing, 255 over
# speeding (km/h), 239 ignition, 240 movement. Each kind the firmware writes: (event IO id, IOs it must
# carry, ignition (None: the kind says nothing of it, so neither 239 nor 240 is sent), movement).
TELTONIKA_KINDS = {
    "harsh_accel": (253, {253: 1, 254: 48, 243: 700}, 1, 1),
    "harsh_brake": (253, {253: 2, 254: 48, 243: 700}, 1, 1),
    "harsh_corner_left": (253, {253: 3, 254: 48, 243: 700}, 1, 1),
    "harsh_corner_right": (253, {253: 3, 254: 48, 243: 700}, 1, 1),
    "harsh_accel_gnss": (253, {253: 1, 254: 48, 243: 700}, 1, 1),
    "harsh_brake_gnss": (253, {253: 2, 254: 48, 243: 700}, 1, 1),
    "idle": (251, {251: 1}, 1, 0),              # the engine on, the car still
    "towing": (246, {246: 1}, 0, 1),            # moving with the ignition off
    "overspeed": (255, {255: 72}, None, None),  # a car on a tow truck is fast too
    "shock": (0, {}, None, None),               # nobody driving
    "unclassified": (0, {}, None, None),        # harsh, type unknown: no green driving type to give
}


def test_every_event_kind_maps_to_its_teltonika_ios_and_no_other():
    """Each event kind the firmware can write (firmware/app.py _EVENT_KINDS) as the independent decoder
    reads it: its event IO, its IOs, IO 239/240 only where the kind says what the ignition is; a kind the
    mapper does not know gets no AVL record (counted), never an ignition-on."""
    from firmware.app import _EVENT_KINDS
    from tools.consumer import fleet_sim

    assert set(_EVENT_KINDS) == set(TELTONIKA_KINDS)  # a new kind needs its mapping decided here
    kinds = list(TELTONIKA_KINDS) + ["wheelie"]  # and one of a firmware to come
    recs = [{"type": "event", "seq": i + 1, "t_ms": 1000 * (i + 1), "utc_s": 848800000 + i, "kind": k,
             "dur_ms": 700, "peak_mg": 480, "mean_mg": 300, "speed_start_mmps": 15000,
             "speed_end_mmps": 20000, "lat_e7": 450000000, "lon_e7": 50000000, "course_cdeg": 9000}
            for i, k in enumerate(kinds)]
    (_fs, _n, blk), = fleet_sim.encode_blocks("box-k", 1, recs, 4096)
    hdr, got = T.records_of_block(blk)
    m = T.Mapper()
    mapped = m.map_block(hdr, got)
    assert [seq for seq, _a in mapped] == list(range(1, len(TELTONIKA_KINDS) + 1))
    assert m.skipped_kinds == {"wheelie": 1}
    resp, _ack = oracle_decode(T.avl_packet([a for _s, a in mapped]))
    for kind, rec in zip(TELTONIKA_KINDS, resp["records"]):
        ev_id, want, ign, moving = TELTONIKA_KINDS[kind]
        io = {e["id"]: e["value"] for g in ("one_byte_io", "two_byte_io", "four_byte_io")
              for e in rec["io_data"][g]}
        assert rec["io_data"]["event_id"] == ev_id, kind
        assert {k: io.get(k) for k in want} == want, kind
        others = {253, 254, 243, 251, 246, 255, 247, 252} - set(want)
        assert not others & set(io), (kind, io)
        if ign is None:
            assert 239 not in io and 240 not in io, (kind, io)
        else:
            assert (io[239], io[240]) == (ign, moving), kind


def test_the_positions_of_a_tow_say_the_ignition_is_off_and_the_next_drive_s_on():
    """A tow (its `towing` event, begun at the trip start, written 20 s later) then a drive, in one block:
    the tow's trip start and positions carry IO 239 = 0 (the start's event IO is movement), the drive's 1."""
    from tools.consumer import fleet_sim

    def pos(seq, t_s):
        return {"type": "pos", "seq": seq, "t_ms": 1000 * t_s, "utc_s": 848800000 + t_s, "lat_e7": 450000000,
                "lon_e7": 50000000 + 300 * t_s, "speed_mmps": 5000, "course_cdeg": 9000, "hdop_x10": 9,
                "sats": 9}

    def start(seq, t_s):
        return {"type": "trip_start", "seq": seq, "t_ms": 1000 * t_s, "utc_s": 848800000 + t_s, "trip": seq,
                "lat_e7": 450000000, "lon_e7": 50000000 + 300 * t_s}

    def end(seq, trip, t_s):
        return {"type": "trip_end", "seq": seq, "t_ms": 1000 * t_s, "utc_s": 848800000 + t_s, "trip": trip,
                "start_t_ms": 0, "end_t_ms": 1000 * t_s, "start_utc_s": -1, "end_utc_s": 848800000 + t_s,
                "start_lat_e7": 0, "start_lon_e7": 0, "end_lat_e7": 450000000, "end_lon_e7": 50000000,
                "distance_m": 100, "bridged_m": 0, "duration_s": 30, "max_speed_mmps": 5000,
                "n_harsh_accel": 0, "n_harsh_brake": 0, "n_harsh_corner_left": 0, "n_harsh_corner_right": 0,
                "n_crash": 0,
                "n_overspeed": 0, "idle_s": 0, "night_s": 0, "overspeed_s": 0, "score": 100}
    tow = {"type": "event", "seq": 24, "t_ms": 1000, "utc_s": 848800001, "kind": "towing", "dur_ms": 20000,
           "peak_mg": 0, "mean_mg": 0, "speed_start_mmps": 5000, "speed_end_mmps": 5000, "lat_e7": 450000000,
           "lon_e7": 50000000, "course_cdeg": 9000}
    recs = ([start(1, 1)] + [pos(i, i) for i in range(2, 24)] + [tow, pos(25, 25), end(26, 1, 30)]
            + [start(27, 100)] + [pos(i, i + 100) for i in range(28, 32)] + [end(32, 27, 110)])
    (_fs, _n, blk), = fleet_sim.encode_blocks("box-w", 1, recs, 4096)
    hdr, got = T.records_of_block(blk)
    mapped = T.Mapper().map_block(hdr, got)
    resp, _ack = oracle_decode(T.avl_packet([a for _s, a in mapped]))
    ign = {s: {e["id"]: e["value"] for e in r["io_data"]["one_byte_io"]}.get(239)
           for (s, _a), r in zip(mapped, resp["records"])}
    ev = {s: r["io_data"]["event_id"] for (s, _a), r in zip(mapped, resp["records"])}
    assert [ign[s] for s in range(1, 26) if s != 24] == [0] * 24 and (ev[1], ign[24]) == (240, 0)
    assert [ign[s] for s in range(27, 32)] == [1] * 5 and ev[27] == 239
    assert ign[26] == ign[32] == 0


# ---- the agent against the fake server

def _agent_cfg(path, box, qpath, traccar=None, mqtt=None, osmand=None):
    lines = ["[device]", 'fleet = "f1"', 'id = "%s"' % box.device, "",
             "[serial]", 'url = "%s"' % box.path, "", "[queue]", 'path = "%s"' % qpath, "",
             "[agent]", "status_interval_s = 1", ""]
    if mqtt is None:
        lines += ["[mqtt]", "enabled = false", ""]
    else:
        lines += ["[mqtt]", 'host = "%s"' % mqtt.host, "port = %d" % mqtt.port, "backoff_min_s = 0.2",
                  "backoff_max_s = 1.0", ""]
    if traccar is not None:
        lines += ["[traccar]", 'host = "%s"' % traccar.host, "port = %d" % traccar.port, 'imei = "%s"' % IMEI,
                  "ack_timeout_s = 2", "refused_retry_s = 0.5", "backoff_min_s = 0.1", "backoff_max_s = 0.5",
                  "packet_bytes = 400", ""]
    if osmand is not None:
        lines += ["[osmand]", 'url = "http://%s:%d/"' % osmand, 'id = "%s"' % IMEI, "timeout_s = 2",
                  "refused_retry_s = 0.5", "backoff_min_s = 0.1", "backoff_max_s = 0.5", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _queue_rows(qpath):
    db = sqlite3.connect(qpath, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM q WHERE state = 0").fetchone()[0]  # pending
    finally:
        db.close()


def _device_of(blocks):
    """The device id the firmware wrote into its blocks (the agent checks it against the box's)."""
    return T.records_of_block(blocks[0][3])[0]["device"]


def mapped(blocks):
    """Our mapping of the blocks in seq order: [(seq, AVL record)]."""
    m = T.Mapper()
    mine = []
    for _fs, _ls, _p, b in blocks:
        hdr, recs = T.records_of_block(b)
        mine += m.map_block(hdr, recs)
    return mine


def ident(a):
    """An AVL record less what depends on the order blocks reach the mapper (odometer and trip
    odometer, checked against the box by check_against_box; satellites of a record without its own
    fix): identifies the record among those of a drive."""
    io = {k: v for k, v in a["io"].items() if k not in (T.IO_ODOMETER, T.IO_TRIP_ODOMETER)}
    return T.avl_record(dict(a, io=io, sats=a["sats"] if a["event_id"] == 0 else 0))


def test_agent_delivers_through_refused_imei_lost_ack_and_drop(tmp_path, commute):
    blocks, truth, summary = commute
    srv = FakeTraccar(imeis=())  # the device is not registered yet: login refused
    box = SimBox(_device_of(blocks)).start()
    for fs, ls, prio, b in blocks:
        box.store.append(b, fs, ls, prio, decoder.decode_header(b)[0]["count"])
    q = str(tmp_path / "q.db")
    agent = AgentProc(_agent_cfg(str(tmp_path / "a.toml"), box, q, traccar=srv),
                      str(tmp_path / "a.log")).start()
    try:
        assert srv.wait(lambda s: len(s.logins) >= 2, 20), agent.log()
        assert all(not ok for _i, ok in srv.logins) and not srv.records
        assert wait_for(lambda: _queue_rows(q) == len(blocks), 20), agent.log()  # nothing dropped meanwhile
        srv.faults = [None, "lose_ack", None, "drop_mid", None, "close_before_ack"]
        srv.imeis.add(IMEI)
        assert wait_for(lambda: _queue_rows(q) == 0, 60), agent.log()[-3000:]
    finally:
        agent.terminate()
        box.stop()
        srv.close()
    assert srv.bad_crc == 0
    # every record arrived; duplicates are exactly the two packets whose ACK was lost
    mine = mapped(blocks)
    got = [T.decode_packet(p) for p in srv.packets]
    flat = [ident(a) for pk in got for a in pk]
    want = [ident(a) for _s, a in mine]
    assert sorted(set(flat)) == sorted(set(want)) and len(set(want)) == len(want), "records lost"
    # kept packets: 1, 2 (ACK lost), 2 again, 3 (its first try was cut), 4 (closed before the ACK), 4 again
    assert srv.packets[1] == srv.packets[2] and srv.packets[4] == srv.packets[5]
    assert len(flat) - len(want) == len(got[1]) + len(got[4])
    # the independent decoder read every record with the box's odometer and events
    oracle = {}
    for (_imei, r), raw in zip(srv.records, flat):
        oracle.setdefault(raw, r)
    seq_of = {ident(a): s for s, a in mine}
    check_against_box({seq_of[k]: v for k, v in oracle.items()}, blocks, truth, summary, oracle=True)


def _split_stream(data):
    """A device's TCP byte stream -> (imei, [packets])."""
    n = int.from_bytes(data[:2], "big")
    imei = data[2:2 + n].decode()
    off = 2 + n
    pk = []
    while off < len(data):
        ln = T.packet_length(data[off:off + 8])
        pk.append(data[off:off + ln])
        off += ln
    return imei, pk


@pytest.mark.parametrize("trace", ["commute", "synthetic"])
def test_export_codec8e_any_trace(tmp_path, trace, commute, capsys):
    import json

    from test_virtual_box import make_trace
    from tools.cli import main

    if trace == "commute":
        path, (blocks, truth, summary) = COMMUTE, commute
    else:
        path = make_trace(tmp_path / "north.jsonl", 120)
        blocks, truth, summary = firmware_blocks(path)
    out = str(tmp_path / "drive.8e")
    assert main(["export", "codec8e", path, "--imei", IMEI, "-o", out, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    with open(out, "rb") as f:
        imei, packets = _split_stream(f.read())
    assert imei == IMEI and rep["packets"] == len(packets)
    recs = []
    for p in packets:
        assert len(p) <= 1280
        resp, ack = oracle_decode(p)
        assert int(ack, 16) == len(resp["records"]) == len(T.decode_packet(p))
        recs += resp["records"]
    assert rep["records"] == len(recs) and rep["fixes"] == summary["records"]["pos"] > 0
    mine = mapped(blocks)
    check_against_box({s: r for (s, _a), r in zip(mine, recs)}, blocks, truth, summary, oracle=True)


def test_drive_through_virtual_box_and_agent_reaches_traccar(tmp_path, commute):
    """Done-when of issue 16: the bundled drive replayed by the firmware in the MicroPython VM (virtual
    box), its link to the real agent process, the agent's Traccar output to the fake server; the
    independent decoder reads back every record with the box's odometer and events."""
    from tools.installer.virtual_box import VirtualBox

    blocks, truth, summary = commute  # the same firmware under CPython: the records' ground truth
    srv = FakeTraccar(imeis=[IMEI])
    srv.faults = [None, None, "lose_ack"]
    with VirtualBox(COMMUTE, tmp_path / "box", speed=40, exit_at_end=True) as vb:
        info = vb.start()

        class _Box:  # what _agent_cfg needs of a box
            device = "unprovisioned"  # the virtual box's default config
            path = info["link"]

        q = str(tmp_path / "q.db")
        agent = AgentProc(_agent_cfg(str(tmp_path / "a.toml"), _Box, q, traccar=srv),
                          str(tmp_path / "a.log")).start()
        try:
            ev = vb.wait_event("summary", timeout=120)
            assert ev["unacked_blocks"] == 0
            vm = ev["summary"]
            assert wait_for(lambda: _queue_rows(q) == 0, 30), agent.log()[-3000:]
        finally:
            agent.terminate()
            srv.close()
    # the VM's firmware made the same drive as the CPython replay
    assert vm["odometer_mm"] == summary["odometer_mm"] and vm["records"]["pos"] == summary["records"]["pos"]
    mine = mapped(blocks)
    seq_of = {ident(a): s for s, a in mine}
    flat = [ident(a) for p in srv.packets for a in T.decode_packet(p)]
    assert set(flat) == set(seq_of), "the VM's records differ from the replay's, or some were lost"
    assert len(flat) - len(set(flat)) == len(T.decode_packet(srv.packets[2]))  # the lost ACK's packet, twice
    oracle = {}
    for (_imei, r), raw in zip(srv.records, flat):
        oracle.setdefault(seq_of[raw], r)
    check_against_box(oracle, blocks, truth, summary, oracle=True)
    harsh = [r["io_data"] for r in oracle.values() if r["io_data"]["event_id"] == 253]
    assert sorted(e["value"] for io in harsh for e in io["one_byte_io"] if e["id"] == 253) == [1, 2, 3]


# ---- alongside MQTT, and OsmAnd

def test_alongside_mqtt_rows_stay_until_both_outputs_are_done(tmp_path, commute, mosquitto):
    from testbed.simbox import Collector

    blocks, _truth, _summary = commute
    srv = FakeTraccar(imeis=[IMEI])
    srv.faults = ["drop_mid"] * 1000  # Traccar unreachable in effect: every packet cut
    box = SimBox(_device_of(blocks)).start()
    col = Collector(mosquitto.host, mosquitto.port, "paydbox/f1/%s/#" % box.device)
    for fs, ls, prio, b in blocks:
        box.store.append(b, fs, ls, prio, decoder.decode_header(b)[0]["count"])
    q = str(tmp_path / "q.db")
    agent = AgentProc(_agent_cfg(str(tmp_path / "a.toml"), box, q, traccar=srv, mqtt=mosquitto),
                      str(tmp_path / "a.log")).start()
    try:
        assert wait_for(lambda: col.count() == len(blocks), 30), agent.log()[-2000:]
        time.sleep(1.0)
        assert _queue_rows(q) == len(blocks)  # MQTT has them all, Traccar none: every row stays
        srv.faults = []
        assert wait_for(lambda: _queue_rows(q) == 0, 30), agent.log()[-2000:]
    finally:
        agent.terminate()
        col.close()
        box.stop()
        srv.close()
    mine = mapped(blocks)
    flat = [ident(a) for p in srv.packets for a in T.decode_packet(p)]
    assert sorted(flat) == sorted(ident(a) for _s, a in mine)  # exactly once (no ACK was lost)
    assert col.dups == 0


class FakeOsmAnd:
    """Traccar's OsmAnd endpoint at byte level (HTTP/1.1 keep-alive): 200 for a known id, 400 else.
    fail_next: answer the next n requests 503 (the record must come again)."""

    def __init__(self, ids):
        import http.server
        import threading
        from urllib.parse import parse_qsl, urlsplit

        fake = self
        self.ids = set(ids)
        self.got = []
        self.refused = 0  # 400 answers (unknown id)
        self.fail_next = 0

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                q = dict(parse_qsl(urlsplit(self.path).query))
                if fake.fail_next:
                    fake.fail_next -= 1
                    code = 503
                elif q.get("id") in fake.ids:
                    fake.got.append(q)
                    code = 200
                else:
                    fake.refused += 1
                    code = 400
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.addr = self.httpd.server_address
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_osmand_output(tmp_path, commute):
    from edge_agent.osmand import params

    blocks, truth, summary = commute
    web = FakeOsmAnd(ids=[])
    box = SimBox(_device_of(blocks)).start()
    for fs, ls, prio, b in blocks:
        box.store.append(b, fs, ls, prio, decoder.decode_header(b)[0]["count"])
    q = str(tmp_path / "q.db")
    agent = AgentProc(_agent_cfg(str(tmp_path / "a.toml"), box, q, osmand=web.addr),
                      str(tmp_path / "a.log")).start()
    try:
        # the agent's start, the pull of every block and a first refused post take seconds on a loaded
        # machine (it was a fixed 1.5 s: the queue did not exist yet); the wait ends once they are done
        def all_queued_and_refused():
            try:
                return web.refused and os.path.exists(q) and _queue_rows(q) == len(blocks)
            except sqlite3.OperationalError:  # the agent has not created its queue yet
                return False
        assert wait_for(all_queued_and_refused, 60), agent.log()[-2000:]
        assert not web.got  # unknown device: refused, nothing dropped
        web.fail_next = 3
        web.ids.add(IMEI)
        assert wait_for(lambda: _queue_rows(q) == 0, 60), agent.log()[-2000:]
    finally:
        agent.terminate()
        box.stop()
        web.close()
    mine = mapped(blocks)
    assert len(web.got) == len(mine)
    recs = {r["seq"]: r for r in _decoded(blocks)}
    alarms = {"harsh_accel": "hardAcceleration", "harsh_brake": "hardBraking",
              "harsh_corner_left": "hardCornering"}
    by_key = {}
    for g in web.got:
        by_key.setdefault((g["timestamp"], g["lat"], g["lon"], g.get("alarm")), []).append(g)
    for seq, a in mine:
        p = dict(params(a, IMEI))
        g = by_key[(p["timestamp"], p["lat"], p["lon"], p.get("alarm"))].pop()
        r = recs[seq]
        assert abs(float(g["odometer"]) - truth[seq]) <= 25
        if r["type"] == "pos":
            assert float(g["lat"]) == pytest.approx(r["lat_e7"] / 1e7, abs=1e-7)
            assert float(g["speed"]) == pytest.approx(r["speed_mmps"] / 1000 * 3600 / 1852, abs=0.01)  # knots
            assert g["ignition"] == "true"
        if r["type"] == "event":
            assert g["alarm"] == alarms[r["kind"]]
        if r["type"] == "trip_end":
            assert int(g["tripOdometer"]) == r["distance_m"] and g["ignition"] == "false"


def test_config_errors_are_one_line(tmp_path):
    from edge_agent.agent import main

    base = ('[device]\nfleet = "f"\nid = "b"\n[serial]\nurl = "loop://"\n[queue]\npath = "%s"\n'
            % (tmp_path / "q.db"))
    cases = [("[mqtt]\nenabled = false\n", "no output"),
             ("[traccar]\nport = 5027\n", "traccar.host is required"),
             ('[traccar]\nhost = "h"\nimei = ""\n', "imei"),
             ('[osmand]\nurl = "ftp://x/"\n', "osmand.url")]
    for extra, msg in cases:
        p = tmp_path / "a.toml"
        p.write_text(base + extra)
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["--config", str(p)]) == 2
        line = err.getvalue().strip()
        assert msg in line and "\n" not in line, line


def test_agent_killed_mid_delivery_loses_nothing(tmp_path, commute):
    """SIGKILL of the agent while it feeds Traccar, three times: every record arrives; duplicates only
    from packets in flight at a kill (at-least-once), at most one packet per kill."""
    import random

    blocks, _truth, _summary = commute
    srv = FakeTraccar(imeis=[IMEI])
    box = SimBox(_device_of(blocks)).start()
    for fs, ls, prio, b in blocks:
        box.store.append(b, fs, ls, prio, decoder.decode_header(b)[0]["count"])
    q = str(tmp_path / "q.db")
    cfg = _agent_cfg(str(tmp_path / "a.toml"), box, q, traccar=srv)
    agent = AgentProc(cfg, str(tmp_path / "a.log")).start()
    rng = random.Random(16)
    n_pk = len(T.split_packets([a for _s, a in mapped(blocks)], 400))
    try:
        for k in range(3):
            target = (k + 1) * n_pk // 4
            assert srv.wait(lambda s: len(s.packets) >= target, 30), agent.log()[-2000:]
            time.sleep(rng.uniform(0, 0.05))
            agent.kill()
            agent.start()
        assert wait_for(lambda: _queue_rows(q) == 0, 60), agent.log()[-2000:]
    finally:
        agent.terminate()
        box.stop()
        srv.close()
    mine = mapped(blocks)
    want = [ident(a) for _s, a in mine]
    flat = [ident(a) for p in srv.packets for a in T.decode_packet(p)]
    assert set(flat) == set(want)
    extra = len(flat) - len(want)
    biggest = max(len(T.decode_packet(p)) for p in srv.packets)
    assert 0 <= extra <= 3 * biggest, (extra, biggest)


@pytest.mark.parametrize("scenario,alarm_io", [("crash", T.IO_CRASH), ("towing", T.IO_TOWING),
                                                ("unplugged", T.IO_UNPLUG)])
def test_alarms_from_simulated_drives(tmp_path, scenario, alarm_io):
    """Crash, tow and unplug, each simulated (tools/sim) and replayed through the firmware, reach the
    independent decoder as the alarm IO Traccar knows, once, with the box's odometer on every record,
    blocks mapped in the agent's delivery order (highest priority first)."""
    from tools.sim.engine import simulate

    path = str(tmp_path / (scenario + ".jsonl.gz"))
    simulate(path, scenario, seed=1)
    blocks, truth, summary = firmware_blocks(path)
    m = T.Mapper()
    mine = []
    for _fs, _ls, _p, b in sorted(blocks, key=lambda x: (-x[2], x[0])):
        hdr, recs = T.records_of_block(b)
        mine += m.map_block(hdr, recs)
    recs = []
    for _i, _j, p in T.split_packets([a for _s, a in mine]):
        recs += oracle_decode(p)[0]["records"]
    by_seq = {s: r for (s, _a), r in zip(mine, recs)}
    # the simulator's truth: the towing scenario's ignition is off all along (its positions and trip
    # start must not say it is on); the others drive with it on
    ign = {o["ign"] for o in _truth_lines(path) if o.get("kind") == "pos"}
    assert ign == ({0} if scenario == "towing" else ign)
    check_against_box(by_seq, blocks, truth, summary, oracle=True, pos_ignition=1 if 1 in ign else 0)
    if scenario == "towing":
        (start,) = [by_seq[r["seq"]] for r in _decoded(blocks) if r["type"] == "trip_start"]
        one = {e["id"]: e["value"] for e in start["io_data"]["one_byte_io"]}
        assert start["io_data"]["event_id"] == 240 and (one[239], one[240]) == (0, 1)
    alarms = [r for r in recs if r["io_data"]["event_id"] == alarm_io]
    assert len(alarms) == 1, [r["io_data"]["event_id"] for r in recs if r["io_data"]["event_id"]]
    assert {e["id"]: e["value"] for e in alarms[0]["io_data"]["one_byte_io"]}[alarm_io] == 1
    if scenario == "crash":
        assert alarms[0]["priority"] == 2  # panic
