"""Billing from the consumer's trips (docs/fleet.md "Billing"): a trip whose km may be short of the
distance driven is flagged (`km_incomplete` and its reasons: loop faults, GNSS silence, the box's own
odometer ahead of the trip, missing records), towed km are left out of the bill and the trip out of the
score, and `paydbox bill` says how much of its total is flagged. Records go through the real codec and
the consumer's store (as `paydbox ingest` stores them), on both databases; the firmware's own records
under memory faults come from a replay with MemoryErrors raised where the board runs out of heap."""
import json

import pytest

from postgres_fixture import dbt, postgres_server  # noqa: F401  (fixtures imported by name)
from test_report import known_records, store
from tools.cli import main as cli
from tools.consumer import bill, trips
from tools.consumer import db as consumer_db

DIST = 2345  # known_records(): the trip_end's distance_m


def renumber(recs, first=1):
    """Seqs made contiguous again from `first` (as the box gives them) after records were put in; a
    trip_end names its trip_start's new seq."""
    new = {}
    for i, r in enumerate(recs):
        if r["type"] == "trip_start":
            new[r["seq"]] = first + i
            r["trip"] = first + i
        r["seq"] = first + i
    for r in recs:
        if r["type"] == "trip_end":
            r["trip"] = new[r["trip"]]
    return recs


def tamper(reason, t_ms, value=0):
    return {"type": "tamper", "seq": 0, "t_ms": t_ms, "utc_s": -1, "reason": reason, "value": value}


def odometer(total_m, t_ms):
    return {"type": "odometer", "seq": 0, "t_ms": t_ms, "utc_s": -1, "total_m": total_m}


def drive(extra=(), odo=None, shift_ms=0):
    """known_records() with `extra` [(index, record)] put in (index into the list as it grows), and, when
    odo=(start m, last m), the box's odometer after the trip_start (same t_ms, as firmware/app.py writes
    it) and as the last record before the trip_end."""
    recs = known_records()
    if odo is not None:
        recs.insert(2, odometer(odo[0], recs[1]["t_ms"]))
        recs.insert(len(recs) - 1, odometer(odo[1], recs[-1]["t_ms"] - 500))
    for i, r in extra:
        recs.insert(i, r)
    for r in recs:
        r["t_ms"] += shift_ms
        for k in ("start_t_ms", "end_t_ms"):
            if k in r:
                r[k] += shift_ms
    return recs


def _trips(path, capsys):
    assert cli(["trips", "--db", path, "--json"]) == 0
    return {(t["device"], t["boot"], t["trip"]): t for t in json.loads(capsys.readouterr().out)}


def test_trips_whose_km_may_be_short_are_flagged(dbt, capsys, tmp_path):
    path = dbt("k.db")
    store(path, "box-clean", 1, renumber(drive(odo=(12345, 12345 + DIST))))
    store(path, "box-loop", 1, renumber(drive([(10, tamper("loop_fault", 9100)),
                                               (14, tamper("loop_fault", 12100))])))
    store(path, "box-gnss", 1, renumber(drive([(10, tamper("gnss_missing", 9100))])))
    # the box's odometer went 394 m further over the trip's records than the trip's distance
    store(path, "box-odo", 1, renumber(drive(odo=(12345, 12345 + DIST + 394))))
    # other tampers say nothing of the km
    store(path, "box-accel", 1, renumber(drive([(10, tamper("accel_fault", 9100, 5)),
                                                (11, tamper("accel_restored", 9200, 100))])))
    got = _trips(path, capsys)
    flags = {dev: (t["km_incomplete"], t["km_incomplete_reasons"]) for (dev, _b, _t), t in got.items()}
    assert flags == {"box-clean": (False, {}), "box-loop": (True, {"loop_fault": 2}),
                     "box-gnss": (True, {"gnss_missing": 1}), "box-odo": (True, {"odometer_extra_m": 394}),
                     "box-accel": (False, {})}
    assert cli(["trips", "--db", path]) == 0
    rows = {ln.split()[1]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert rows["box-loop"].endswith(" INCOMPLETE (loop_fault 2)")
    assert rows["box-odo"].endswith(" INCOMPLETE (odometer +394 m)")
    assert rows["box-clean"].endswith(" -")
    out = tmp_path / "odo.html"
    assert cli(["report", str(got[("box-odo", 1, 2)]["id"]), "--db", path, "-o", str(out)]) == 0
    assert "Distance INCOMPLETE" in out.read_text() and "odometer +394 m" in out.read_text()
    capsys.readouterr()
    # the bill: every trip's km billed, the flagged ones' km said apart
    assert cli(["bill", "--db", path, "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["total"]["billed_m"] == 5 * DIST and b["total"]["flagged_m"] == 3 * DIST
    assert b["total"]["flagged_trips"] == 3
    assert b["total"]["flagged_reasons"] == {"loop_fault": 2, "gnss_missing": 1, "odometer_extra_m": 394}
    assert cli(["bill", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "billed %.2f km, of which %.2f km flagged" % (5 * DIST / 1000, 3 * DIST / 1000) in out


def test_loop_faults_past_the_box_s_cap_flag_the_rest_of_the_boot(dbt, capsys):
    """firmware/runner.py writes at most LOOP_FAULT_RECORDS_MAX loop_fault records a boot: a trip that ends
    after the boot wrote them all cannot be known to be fault-free; a new boot starts counting again."""
    path = dbt("c.db")
    three = [(10 + k, tamper("loop_fault", 9100 + 10 * k)) for k in range(consumer_db.LOOP_FAULT_RECORDS_MAX)]
    first = renumber(drive(three))
    second = renumber(drive(shift_ms=100000), first=first[-1]["seq"] + 1)
    store(path, "box-m", 4, first + second)
    store(path, "box-m", 5, renumber(drive()))
    got = _trips(path, capsys)
    assert got[("box-m", 4, first[1]["seq"])]["km_incomplete_reasons"] == {
        "loop_fault": consumer_db.LOOP_FAULT_RECORDS_MAX, "loop_fault_cap": 1}
    assert got[("box-m", 4, second[1]["seq"])]["km_incomplete_reasons"] == {"loop_fault_cap": 1}
    boot5 = [t for t in got.values() if t["boot"] == 5]
    assert [t["km_incomplete"] for t in boot5] == [False]
    assert cli(["trips", "--db", path]) == 0
    assert "INCOMPLETE (loop faults no longer recorded)" in capsys.readouterr().out


def test_the_cap_is_the_firmware_s():
    """LOOP_FAULT_RECORDS_MAX is what firmware/runner.py's loop_fault writes in a boot of many faults."""
    from firmware.runner import Runner

    class Box:
        faults = {"loop_faults": 0}
        recs = []

        def _tamper(self, t_ms, reason, value):
            self.recs.append({"type": "tamper", "t_ms": t_ms, "reason": reason, "value": value})

    class Clock:
        def ticks_ms(self):
            return 5

    class Me:
        board = type("B", (), {"clock": Clock()})()

    box = Box()
    for _ in range(10):
        Runner.loop_fault(Me(), box, MemoryError())
    assert box.faults["loop_faults"] == 10
    assert [r["reason"] for r in box.recs] == ["loop_fault"] * consumer_db.LOOP_FAULT_RECORDS_MAX


def test_missing_records_are_in_the_same_flag(tmp_path, capsys):
    path = str(tmp_path / "g.db")
    recs = renumber(drive())
    store(path, "box-g", 1, [r for r in recs if not 8 <= r["seq"] <= 12], max_bytes=4096)
    (t,) = _trips(path, capsys).values()
    assert t["km_incomplete_reasons"] == {"records_missing": 5}
    store(path, "box-o", 1, renumber(drive())[:-1])  # no trip_end yet
    t = next(t for t in _trips(path, capsys).values() if t["device"] == "box-o")
    assert t["km_incomplete_reasons"] == {"open": 1}
    assert cli(["bill", "--db", path, "--json"]) == 0
    b = json.loads(capsys.readouterr().out)["total"]
    assert (b["trips"], b["billed_m"], b["flagged_m"], b["open_trips"]) == (1, DIST, DIST, 1)
    assert b["open_m"] == t["distance_m"] > 0


def test_a_lost_trip_shows_in_the_box_s_odometer(dbt, capsys):
    """Three trips of a boot, each with the box's odometer after its trip_start (firmware/app.py); the
    middle one's blocks never arrive: the bill says the box's odometer counted its km in no trip held."""
    path = dbt("l.db")
    a = renumber(drive(odo=(12345, 12345 + DIST)))
    b = renumber(drive(odo=(12345 + DIST, 12345 + 2 * DIST), shift_ms=100000), first=a[-1]["seq"] + 1)
    c = renumber(drive(odo=(12345 + 2 * DIST, 12345 + 3 * DIST), shift_ms=200000), first=b[-1]["seq"] + 1)
    store(path, "box-all", 1, a + b + c)
    store(path, "box-lost", 1, a + c)
    assert cli(["bill", "--db", path, "--json"]) == 0
    got = {d["device"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
    assert (got["box-all"]["billed_m"], got["box-all"]["odometer_outside_trips_m"]) == (3 * DIST, 0)
    assert (got["box-lost"]["billed_m"], got["box-lost"]["odometer_outside_trips_m"]) == (2 * DIST, DIST)
    assert cli(["bill", "--db", path]) == 0
    assert "odometers counted %.2f km in no trip held" % (DIST / 1000) in capsys.readouterr().out


def test_an_open_trip_ends_at_the_next_trip_start(tmp_path, capsys):
    """A trip whose trip_end never came is followed by another trip of the boot: the next trip's loop fault
    is that trip's, not the open one's."""
    path = str(tmp_path / "n.db")
    first = renumber(drive())[:-1]
    second = renumber(drive([(10, tamper("loop_fault", 9100))], shift_ms=100000), first=first[-1]["seq"] + 2)
    store(path, "box-n", 1, first + second)
    got = {t["trip"]: t for t in _trips(path, capsys).values()}
    assert got[first[1]["seq"]]["km_incomplete_reasons"] == {"open": 1}
    assert got[second[1]["seq"]]["km_incomplete_reasons"] == {"loop_fault": 1}


def _tow_at(i_pos):
    """known_records() with its harsh brake turned into the box's `towing` event (moved with the ignition
    off), begun at the time of position i_pos (firmware/trip.py: the event's t_ms is when the tow began)."""
    recs = known_records()
    ev = next(r for r in recs if r.get("kind") == "harsh_brake")
    ev.update(kind="towing", peak_mg=0, mean_mg=0, t_ms=3000 + 1000 * i_pos if i_pos >= 0 else 2500)
    end = recs[-1]
    end.update(score=91, n_harsh_brake=0)
    return recs


def test_towed_km_are_not_billed_nor_scored(dbt, capsys, tmp_path):
    path = dbt("t.db")
    store(path, "box-t", 1, _tow_at(-1))   # towed from the start: the whole trip
    store(path, "box-t", 2, _tow_at(10))   # driven, then towed from the 11th of its 20 positions
    store(path, "box-t", 3, known_records())  # driven
    got = {t["boot"]: t for t in _trips(path, capsys).values()}
    assert got[1]["towed"] and got[1]["towed_m"] == DIST
    # the 20 positions are evenly spaced: the tow drew 10 of the 19 steps (the one into it included)
    assert got[2]["towed"] and got[2]["towed_m"] == round(DIST * 10 / 19)
    assert not got[3]["towed"] and got[3]["towed_m"] == 0
    assert not any(t["km_incomplete"] for t in got.values())
    assert cli(["bill", "--db", path, "--json"]) == 0
    b = json.loads(capsys.readouterr().out)["total"]
    towed = DIST + round(DIST * 10 / 19)
    assert b["billed_m"] == 3 * DIST - towed and b["towed_m"] == towed and b["towed_trips"] == 2
    assert (b["score_avg"], b["score_trips"]) == (71, 1)  # the two tows (91) are not the driver's score
    assert cli(["bill", "--db", path, "--bill-towed", "--json"]) == 0
    b = json.loads(capsys.readouterr().out)["total"]
    assert b["billed_m"] == 3 * DIST and b["towed_m"] == towed and b["score_avg"] == 71
    assert cli(["bill", "--db", path]) == 0
    want = "towed %.2f km (2 trip(s)): not billed, not in the score" % (towed / 1000)
    assert want in capsys.readouterr().out
    assert cli(["trips", "--db", path]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert rows[0].endswith(" TOWED %.2f km" % (DIST / 1000)) and rows[2].endswith(" -")
    out = str(tmp_path / "t.html")
    assert cli(["report", str(got[2]["id"]), "--db", path, "-o", out]) == 0
    html = open(out, encoding="utf-8").read()
    assert "Billed distance" in html and "%.2f km (%.2f km towed, not billed)" % (
        (DIST - round(DIST * 10 / 19)) / 1000, round(DIST * 10 / 19) / 1000) in html


def test_unaccounted_distance_is_listed_apart(dbt):
    """The car moved while the box was off (tamper unaccounted_distance, mm): in no trip, said in the bill."""
    path = dbt("u.db")
    recs = renumber([tamper("unaccounted_distance", 500, 1234567)] + known_records())
    store(path, "box-u", 2, recs)
    db = consumer_db.connect(path, create=False)
    try:
        res = bill.bill(db)
        (t,) = consumer_db.list_trips(db)
    finally:
        db.close()
    assert res["total"]["unaccounted_m"] == 1234 and res["total"]["billed_m"] == DIST
    assert "moved 1.23 km while the box was off" in bill.format_bill(res)
    assert trips.billing_cell(t) == "-"


# ---- the firmware's own records when the loop runs out of heap

COMMUTE = "tests/traces/commute.jsonl.gz"


def _replay_into(path, fault_window_ms=None):
    """The bundled drive replayed through the firmware (CPython); with fault_window_ms=(a, b), every GNSS
    fix the trip tracker is given in that window of box time raises MemoryError, as an allocation there
    does on a board short of heap (the supervisor catches it: runner.loop_fault). The store's blocks go
    into the consumer database. -> the replay summary."""
    import os

    from firmware import decoder
    from firmware import trip as trip_mod
    from tools.trace.export import replay_blocks

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    orig = trip_mod.TripTracker.on_fix

    def on_fix(self, t_ms, *a):
        if fault_window_ms[0] <= t_ms < fault_window_ms[1]:
            raise MemoryError("memory allocation failed, allocating 1764 bytes")
        return orig(self, t_ms, *a)

    if fault_window_ms is not None:
        trip_mod.TripTracker.on_fix = on_fix
    try:
        blocks, summary = replay_blocks(os.path.join(root, COMMUTE))
    finally:
        trip_mod.TripTracker.on_fix = orig
    items = []
    for _fs, _ls, _p, b in blocks:
        h, rr = decoder.decode_block(b)
        items.append({"topic": "paydbox/f/%s/records" % h["device"], "fleet": "f", "device": str(h["device"]),
                      "size": len(b), "received_at": 0.0, "header": h, "records": rr})
    db = consumer_db.connect(path)
    consumer_db.store_blocks(db, items)
    db.close()
    return summary


def test_a_drive_with_loop_faults_is_flagged_with_what_its_odometer_counted(tmp_path, capsys):
    clean = str(tmp_path / "clean.db")
    s_clean = _replay_into(clean)
    (t,) = _trips(clean, capsys).values()
    assert not t["km_incomplete"] and t["km_incomplete_reasons"] == {}
    assert t["distance_m"] == s_clean["odometer_mm"] // 1000  # one trip: all the box's km
    faulty = str(tmp_path / "faulty.db")
    s = _replay_into(faulty, (300000, 330000))
    (t,) = _trips(faulty, capsys).values()
    # the box's odometer counted the fixes the trip lost (its figure is the clean run's)
    assert s["odometer_mm"] // 1000 == s_clean["odometer_mm"] // 1000
    lost = s["odometer_mm"] // 1000 - t["distance_m"]
    assert lost > consumer_db.ODOMETER_SLACK_M  # the trip lost km: what the flag must say
    assert t["km_incomplete"] and t["km_incomplete_reasons"] == {
        "loop_fault": consumer_db.LOOP_FAULT_RECORDS_MAX, "loop_fault_cap": 1,
        "odometer_extra_m": pytest.approx(lost, abs=consumer_db.ODOMETER_SLACK_M)}
    assert cli(["bill", "--db", faulty, "--json"]) == 0
    b = json.loads(capsys.readouterr().out)["total"]
    assert b["billed_m"] == b["flagged_m"] == t["distance_m"]
