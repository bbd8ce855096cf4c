"""trips table and trip report (HTML/PNG/GPX/GeoJSON) from known records stored through the real codec."""
import json
import xml.etree.ElementTree as ET

import pytest

from firmware import decoder
from postgres_fixture import dbt, postgres_server  # noqa: F401  (fixtures imported by name)
from tools.cli import main as cli
from tools.consumer import db as consumer_db
from tools.consumer import fleet_sim, trips
from tools.consumer.report import cli as report
from tools.consumer.report.draw import map_canvas

UTC0 = 848800000  # 2026-11-24T01:46:40Z in record time (s since 2000)


def known_records():
    """One hand-made trip: 20 positions going north-east, 2 events and a crash, then its trip_end."""
    recs = [{"type": "status", "seq": 1, "t_ms": 1000, "utc_s": UTC0, "fw": "1.0", "boot": 3,
             "store_used": 10,
             "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 12345, "calib": "calibrated",
             "calib_quality": 90},
            {"type": "trip_start", "seq": 2, "t_ms": 2000, "utc_s": UTC0 + 1, "trip": 2,
             "lat_e7": 450000000, "lon_e7": 50000000}]
    seq = 3
    for i in range(20):
        recs.append({"type": "pos", "seq": seq, "t_ms": 3000 + 1000 * i, "utc_s": UTC0 + 2 + i,
                     "lat_e7": 450000000 + 1000 * i, "lon_e7": 50000000 + 1500 * i, "speed_mmps": 1000 * i,
                     "course_cdeg": 4500, "hdop_x10": 9, "sats": 10})
        seq += 1
        if i in (8, 14):
            recs.append({"type": "event", "seq": seq, "t_ms": 3500 + 1000 * i, "utc_s": UTC0 + 2 + i,
                         "kind": "harsh_brake" if i == 8 else "harsh_corner_left", "dur_ms": 900,
                         "peak_mg": 480,
                         "mean_mg": 300, "speed_start_mmps": 1000 * i, "speed_end_mmps": 1000 * i - 3000,
                         "lat_e7": 450000000 + 1000 * i, "lon_e7": 50000000 + 1500 * i, "course_cdeg": 4500})
            seq += 1
    recs.append({"type": "crash", "seq": seq, "t_ms": 22500, "utc_s": UTC0 + 21, "peak_mg": 4200,
                 "lat_e7": 450019000, "lon_e7": 50028500, "speed_mmps": 19000, "rate_hz": 100, "pre_ms": 1000,
                 "samples": bytes(range(12)) * 4})
    seq += 1
    recs.append({"type": "trip_end", "seq": seq, "t_ms": 24000, "utc_s": UTC0 + 23, "trip": 2,
                 "start_t_ms": 2000, "end_t_ms": 24000, "start_utc_s": UTC0 + 1, "end_utc_s": UTC0 + 23,
                 "start_lat_e7": 450000000,
                 "start_lon_e7": 50000000, "end_lat_e7": 450019000, "end_lon_e7": 50028500,
                 "distance_m": 2345,
                 "bridged_m": 0, "duration_s": 22, "max_speed_mmps": 19000, "n_harsh_accel": 0,
                 "n_harsh_brake": 1,
                 "n_harsh_corner_left": 1, "n_harsh_corner_right": 0, "n_crash": 1, "n_overspeed": 0,
                 "idle_s": 0, "night_s": 0, "overspeed_s": 0, "score": 71})
    return recs


def store(db_path, device, boot, recs, max_bytes=256):
    """Through the real codec: encode into blocks, decode, store (as ingest does)."""
    db = consumer_db.connect(db_path)
    items = []
    for fs, n, blk in fleet_sim.encode_blocks(device, boot, recs, max_bytes):
        h, rr = decoder.decode_block(blk)
        items.append({"topic": "paydbox/t/%s/records" % device, "fleet": "t", "device": device,
                      "size": len(blk), "received_at": 0.0, "header": h, "records": rr})
    res = consumer_db.store_blocks(db, items)
    db.close()
    return res[:3]


@pytest.fixture
def tripdb(dbt):
    path = dbt("r.db")
    assert store(path, "box-7", 3, known_records()) == (len(known_records()), 0, 0)
    return path


def test_trips_table_from_known_records(tripdb, capsys):
    assert cli(["trips", "--db", tripdb, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    n_trip = len([r for r in known_records() if r["seq"] >= 2])  # trip_start (seq 2) .. trip_end
    assert rows == [{"id": 1, "device": "box-7", "boot": 3, "trip": 2, "start": "2026-11-24T01:46:41Z",
                     "end": "2026-11-24T01:47:03Z", "distance_m": 2345, "duration_s": 22, "events": 3,
                     "score": 71, "closed": True, "complete": True, "records_expected": n_trip,
                     "records_held": n_trip, "records_lost": 0, "gaps": [], "score_note": "",
                     "supply_start_mv": None, "supply_end_mv": None, "low_battery": None,  # no reading sent
                     "towed": False, "towed_m": 0, "km_incomplete": False, "km_incomplete_reasons": {}}]
    assert cli(["trips", "--db", tripdb]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "DEVICE", "START", "(UTC)", "END", "(UTC)", "KM", "DURATION", "EVENTS",
                              "SCORE", "BATTERY", "RECORDS", "BILLING"]
    assert out[1].split() == ["1", "box-7", "2026-11-24", "01:46:41", "2026-11-24", "01:47:03", "2.35",
                              "0:00:22", "3", "71", "-", "%d/%d" % (n_trip, n_trip), "-"]
    assert cli(["trips", "--db", tripdb, "--device", "nope"]) == 0
    assert "no trips" in capsys.readouterr().out


def test_trip_with_a_missing_block_is_flagged(dbt, capsys):
    """The summary says 2.35 km and 3 events whatever is missing; completeness must not: a lost block of
    positions shows as a gap, then as lost once the agent and the box say they no longer have it."""
    path = dbt("g.db")
    recs = known_records()
    gone = [r for r in recs if 8 <= r["seq"] <= 12]
    store(path, "box-g", 3, [r for r in recs if not 8 <= r["seq"] <= 12], max_bytes=4096)
    assert cli(["trips", "--db", path, "--json"]) == 0
    (t,) = json.loads(capsys.readouterr().out)
    assert t["closed"] and not t["complete"]
    assert (t["records_expected"], t["records_held"]) == (len(recs) - 1, len(recs) - 1 - len(gone))
    assert t["gaps"] == [[8, 12]] and t["records_lost"] == 0
    assert cli(["trips", "--db", path]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(" GAPS  INCOMPLETE (5 records missing)")
    db = consumer_db.connect(path)
    assert consumer_db.gaps(db) == [("t", "box-g", 3, 8, 12)]
    consumer_db.mark_lost(db, "box-g", 3, [[8, 12]], "evicted")
    assert consumer_db.gaps(db) == []
    (t,) = consumer_db.list_trips(db)
    db.close()
    assert not t["complete"] and t["records_lost"] == len(gone)
    assert "LOST 5" in trips.format_table([t])


def test_partial_score_shown(tmp_path):
    """An uncalibrated trip's trip_end (score_note, n_unclassified, n_gnss_only) goes through the real codec
    to the trips table, its JSON and the report: the score is marked partial, never a clean 100."""
    recs = known_records()
    end = recs[-1]
    end.update(score=93, n_unclassified=2, n_gnss_only=1, score_note="partial_unclassified+gnss_only")
    next(r for r in recs if r.get("kind") == "harsh_brake")["kind"] = "harsh_brake_gnss"
    path = str(tmp_path / "p.db")
    store(path, "box-p", 1, recs)
    db = consumer_db.connect(path)
    (t,) = consumer_db.list_trips(db)
    db.close()
    assert t["summary"]["n_unclassified"] == 2 and t["n_events"] == 5
    assert trips.trip_dict(t)["score_note"] == "partial_unclassified+gnss_only"
    assert trips.format_table([t]).splitlines()[1].split()[-7:-3] == ["5", "93", "partial", "gnss"]
    out = str(tmp_path / "p.html")
    assert cli(["report", "1", "--db", path, "-o", out]) == 0
    html = open(out, encoding="utf-8").read()
    assert "partial score / 100" in html and "2 event(s) not classified" in html
    assert "harsh braking (GNSS only)" in html


def with_supply(start_mv, during_mv=None, shift_ms=0, status_t_ms=1000):
    """known_records() with the status before the trip reading start_mv (at box time status_t_ms), every
    other record shift_ms later, and, when during_mv is given, one more status inside the trip (just
    before its trip_end, as the box writes one on its hourly period while driving)."""
    recs = known_records()
    for r in recs:
        r["t_ms"] += shift_ms
        for k in ("start_t_ms", "end_t_ms"):
            if k in r:
                r[k] += shift_ms
    recs[0].update(supply_mv=start_mv, t_ms=status_t_ms)
    if during_mv is not None:
        end = recs.pop()
        st = dict(recs[0], seq=end["seq"], t_ms=end["t_ms"] - 100, supply_mv=during_mv)
        end["seq"] += 1
        recs += [st, end]
    return recs


def test_battery_voltage_at_trip_start_and_end(dbt, capsys, tmp_path):
    """The status records' supply_mv (record format 5) shows where a fleet operator looks: `paydbox trips`
    (the reading at the trip start, LOW below 12.2 V), its JSON (start and end) and the report, on both
    databases. A reading from hours before the trip is not the trip's."""
    path = dbt("b.db")
    store(path, "box-ok", 1, with_supply(12480, during_mv=14100))
    store(path, "box-low", 1, with_supply(11900))
    store(path, "box-old", 1, with_supply(12600, shift_ms=7 * 3600 * 1000))  # read 7 h before the trip start
    assert cli(["trips", "--db", path, "--json"]) == 0
    got = {t["device"]: (t["supply_start_mv"], t["supply_end_mv"], t["low_battery"])
           for t in json.loads(capsys.readouterr().out)}
    assert got == {"box-ok": (12480, 14100, False), "box-low": (11900, 11900, True),
                   "box-old": (None, None, None)}
    assert cli(["trips", "--db", path]) == 0
    rows = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert " 12.48 V " in rows["box-ok"] and " LOW 11.90 V " in rows["box-low"]
    assert "LOW" not in rows["box-ok"]
    db = consumer_db.connect(path)
    ids = {t["device"]: t["id"] for t in consumer_db.list_trips(db)}
    db.close()
    for dev, want in (("box-ok", "12.48 V / 14.10 V"), ("box-low", "11.90 V / 11.90 V LOW"),
                      ("box-old", "- / -")):
        out = str(tmp_path / ("%s.html" % dev))
        assert cli(["report", str(ids[dev]), "--db", path, "-o", out]) == 0
        html = open(out, encoding="utf-8").read()
        assert "Battery (start / end)" in html and want in html, dev
        assert ("LOW" in html) == (dev == "box-low")


def test_a_towed_trip_is_flagged(dbt, capsys, tmp_path):
    """The box records a tow as a trip with its `towing` event (moved with the ignition off,
    firmware/trip.py): `paydbox trips` marks its score TOW, --json says towed, the report says so."""
    path = dbt("t.db")
    recs = known_records()
    brake = next(r for r in recs if r.get("kind") == "harsh_brake")
    brake.update(kind="towing", peak_mg=0, mean_mg=0)
    store(path, "box-t", 1, recs)
    store(path, "box-d", 1, known_records())
    assert cli(["trips", "--db", path, "--json"]) == 0
    towed = {t["device"]: t["towed"] for t in json.loads(capsys.readouterr().out)}
    assert towed == {"box-t": True, "box-d": False}
    assert cli(["trips", "--db", path]) == 0
    rows = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert " 71 TOW " in rows["box-t"] and "TOW" not in rows["box-d"]
    out = str(tmp_path / "t.html")
    db = consumer_db.connect(path)
    tid = next(t["id"] for t in consumer_db.list_trips(db) if t["device"] == "box-t")
    db.close()
    assert cli(["report", str(tid), "--db", path, "-o", out]) == 0
    assert "a tow, not the driver&#x27;s drive" in open(out, encoding="utf-8").read()


def test_open_trip_and_duplicates(dbt):
    """A trip whose trip_end has not arrived is listed as open with km from its positions; storing the
    same records again adds nothing."""
    path = dbt("o.db")
    recs = known_records()[:-1]
    store(path, "box-o", 1, recs)
    assert store(path, "box-o", 1, recs) == (0, len(recs), 0)
    db = consumer_db.connect(path)
    (t,) = consumer_db.list_trips(db)
    db.close()
    assert not t["closed"] and not t["complete"] and t["n_events"] == 3 and t["duration_s"] == 20
    # 19 steps of (1000, 1500) e-7 deg at 45N: ~ 19 * 15.6 m
    assert 280 < t["distance_m"] < 310
    assert "(open)" in trips.format_table([t])


def test_report_html_svg_route_and_coach(tripdb, tmp_path):
    out = str(tmp_path / "r.html")
    assert cli(["report", "1", "--db", tripdb, "-o", out]) == 0
    html = open(out, encoding="utf-8").read()
    assert html.count("<svg") == 2 and "<polyline" in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<script" not in html
    assert "2.35 km" in html and ">71<" in html and "harsh braking" in html and "CRASH" in html
    for lang in ("en", "fr"):
        assert 'lang="%s"' % lang in html
    import firmware.coach as coach_mod
    summary = [r for r in known_records() if r["type"] == "trip_end"][0]
    for lang in ("en", "fr"):
        sentences = coach_mod.coach(summary, lang)
        assert sentences
        for s in sentences:
            assert __import__("html").escape(s) in html


def test_route_is_drawn_in_the_bbox(tripdb):
    t, pos, ev = report.load(tripdb, "box-7:3:2")
    c = map_canvas(pos, ev, 600, 400)
    pts = [p for op in c.ops if op[0] == "poly" for p in op[1]]
    assert pts and all(0 <= x <= 600 and 0 <= y <= 400 - 34 for x, y in pts)
    # north-east drive: x grows and y (screen) shrinks from the first to the last point
    assert pts[-1][0] > pts[0][0] and pts[-1][1] < pts[0][1]
    colours = set(op[2] for op in c.ops if op[0] == "poly" and op[2] != "#ffffff")
    assert len(colours) >= 2  # 0 .. 68 km/h spans several speed bands


def test_gpx_and_geojson_exports(tripdb, tmp_path):
    gpx = str(tmp_path / "r.gpx")
    gj = str(tmp_path / "r.geojson")
    assert cli(["report", "1", "--db", tripdb, "-o", gpx]) == 0
    assert cli(["report", "1", "--db", tripdb, "-o", gj]) == 0
    ns = {"g": "http://www.topografix.com/GPX/1/1"}
    root = ET.parse(gpx).getroot()
    assert root.tag == "{http://www.topografix.com/GPX/1/1}gpx" and root.get("version") == "1.1"
    pts = root.findall("g:trk/g:trkseg/g:trkpt", ns)
    assert len(pts) == 20
    assert pts[0].get("lat") == "45.0000000" and pts[0].get("lon") == "5.0000000"
    assert pts[0].find("g:time", ns).text == "2026-11-24T01:46:42Z"
    assert len(root.findall("g:wpt", ns)) == 3
    # schema order: metadata, wpt*, trk
    assert [c.tag.split("}")[1] for c in root][:2] == ["metadata", "wpt"] and root[-1].tag.endswith("trk")
    fc = json.load(open(gj))
    assert fc["type"] == "FeatureCollection"
    lines = [f for f in fc["features"] if f["geometry"]["type"] == "LineString"]
    points = [f for f in fc["features"] if f["geometry"]["type"] == "Point"]
    assert len(lines) == 1 and len(lines[0]["geometry"]["coordinates"]) == 20
    assert lines[0]["geometry"]["coordinates"][0] == [5.0, 45.0]  # lon, lat (RFC 7946)
    assert sorted(p["properties"]["kind"] for p in points) == ["crash", "harsh_brake", "harsh_corner_left"]


def test_png_report(tripdb, tmp_path):
    import PIL  # noqa: F401 - a declared dependency: missing it is a failure, not a skip
    from PIL import Image
    out = str(tmp_path / "r.png")
    assert cli(["report", "1", "--db", tripdb, "-o", out]) == 0
    im = Image.open(out)
    assert im.format == "PNG" and im.size[0] == 940 and im.size[1] > 900
    assert len(im.convert("RGB").getcolors(1 << 20)) > 20  # not blank


def test_report_errors(tripdb, tmp_path, capsys):
    assert cli(["report", "99", "--db", tripdb, "-o", str(tmp_path / "x.html")]) == 2
    assert "trip 99: not in the database" in capsys.readouterr().err
    assert cli(["report", "1", "--db", tripdb, "-o", str(tmp_path / "x.pdf")]) == 2
    assert "unknown output type" in capsys.readouterr().err
    assert cli(["trips", "--db", str(tmp_path / "missing.db")]) == 2
    assert "no consumer database" in capsys.readouterr().err
