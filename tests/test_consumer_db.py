"""consumer_db.store_blocks on both backends (SQLite file, real PostgreSQL): a batch is stored in a few
statements whatever its size, with the result of storing its blocks one by one. Expected values come from the
input (set arithmetic over the keys and seqs published), never from a run of the store."""
import copy
import random

import pytest

from firmware import decoder
from postgres_fixture import postgres_server  # noqa: F401  (fixture imported by name)
from tools.consumer import db as consumer_db
from tools.consumer import fleet_sim


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        d = consumer_db.connect(str(tmp_path / "c.db"))
    else:
        d = consumer_db.connect(request.getfixturevalue("postgres_server").new_database())
    yield d
    d.close()


def items_for(device, recs, boot=1, topic_device=None, fleet="f"):
    out = []
    for _, _, blk in fleet_sim.encode_blocks(device, boot, recs, 512):
        h, rr = decoder.decode_block(blk)
        td = topic_device or device
        it = {"topic": "paydbox/%s/%s/records" % (fleet, td), "fleet": fleet, "device": td, "size": len(blk),
              "received_at": 100.0, "header": h, "records": rr}
        if td != device:
            it.update(quarantine="header names %s" % device, payload=blk)
        out.append(it)
    return out


def ranges_of(seqs):
    out = []
    for q in sorted(set(seqs)):
        if out and q == out[-1][1] + 1:
            out[-1][1] = q
        else:
            out.append([q, q])
    return [tuple(r) for r in out]


class Counting:
    """The connection with every statement counted (execute, executemany and a COPY count one each)."""

    def __init__(self, db):
        self.db, self.n = db, 0
        self.dialect = getattr(db, "dialect", None)

    def __getattr__(self, name):
        attr = getattr(self.db, name)
        if name in ("execute", "executemany", "copy_rows", "execute_translated"):
            def counted(*a, **kw):
                self.n += 1
                return attr(*a, **kw)
            return counted
        return attr


def test_a_batch_is_a_few_statements_whatever_its_size(db):
    """No statement per record: a batch of 24 blocks (~1800 records) takes as many statements as a batch of
    one."""
    recs = fleet_sim.synth_records(2000, seed=3)
    its = items_for("box-n", recs)
    assert len(its) >= 25
    one, many = Counting(db), Counting(db)
    consumer_db.store_blocks(one, its[:1])
    consumer_db.store_blocks(many, its[1:25])
    n_trip_rows = sum(1 for it in its[1:25] for r in it["records"] if r["type"] in ("trip_start", "trip_end"))
    # one upsert per trip_start / trip_end record (a handful per drive) is the only per-record statement
    assert many.n <= one.n + n_trip_rows + 3, (one.n, many.n, n_trip_rows)
    assert many.n < 30


def test_batched_store_equals_the_truth_of_the_input(db):
    """Duplicates inside one batch and across batches, a forged header, records that come again with other
    content, holes, a second boot, a damaged block: whatever the batch size, the store keeps the first copy of
    every key, counts every other copy once, quarantines what differs, and covers exactly the seqs it
    holds."""
    rnd = random.Random(2)
    stream, first_content = [], {}
    for i in range(3):
        dev = "d%d" % i
        recs = fleet_sim.synth_records(500, seed=i)
        its = items_for(dev, recs)
        kept = [it for j, it in enumerate(its) if not (i == 0 and j % 4 == 1)]  # d0: every 4th block missing
        stream += kept + [copy.deepcopy(kept[2])]  # an agent retrying: one block twice
    # same keys as d1's first ones, other content
    other = items_for("d1", fleet_sim.synth_records(150, seed=77))
    boot2 = items_for("d1", fleet_sim.synth_records(120, seed=78, boot=2), boot=2)
    forged = items_for("d2", fleet_sim.synth_records(60, seed=79), topic_device="evil")
    damaged = [{"topic": "paydbox/f/d2/records", "fleet": "f", "device": "d2", "size": 3, "received_at": 1.0,
                "error": "CodecError: at byte offset 0: bad", "payload": b"abc"}]
    stream += other + boot2 + forged + damaged
    rnd.shuffle(stream)
    # the truth, from the input in arrival order: first copy wins
    n_copies, n_conflicts = 0, 0
    for it in stream:
        if "header" not in it or it.get("quarantine"):
            continue
        for r in it["records"]:
            k = (it["device"], it["header"]["boot"], r["seq"])
            n_copies += 1
            if k not in first_content:
                first_content[k] = r
            elif r != first_content[k]:
                n_conflicts += 1
    got = {"new": 0, "dup": 0, "bad": 0}
    batch = rnd.choice((1, 7, 64))
    for k in range(0, len(stream), batch):
        n, d, b, _ = consumer_db.store_blocks(db, copy.deepcopy(stream[k:k + batch]))
        got["new"] += n
        got["dup"] += d
        got["bad"] += b
    assert got == {"new": len(first_content), "dup": n_copies - len(first_content),
                   "bad": len(forged) + len(damaged)}, batch
    held = {(r[0], r[1], r[2]): r[3]
            for r in db.execute("SELECT device, boot, seq, type FROM records").fetchall()}
    assert held == {k: r["type"] for k, r in first_content.items()}
    pos = db.execute("SELECT device, boot, seq, lat_e7 FROM positions").fetchall()
    assert sorted(tuple(p) for p in pos) == sorted(
        (k[0], k[1], k[2], r["lat_e7"]) for k, r in first_content.items() if r["type"] == "pos")
    assert db.execute("SELECT COUNT(*) FROM quarantine WHERE device='evil'").fetchone()[0] == len(forged)
    assert db.execute("SELECT COUNT(*) FROM quarantine WHERE device<>'evil'").fetchone()[0] == n_conflicts > 0
    assert db.execute("SELECT COUNT(*) FROM damaged").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM records WHERE device='evil'").fetchone()[0] == 0
    for dev, boot in {(k[0], k[1]) for k in first_content}:
        want = ranges_of(k[2] for k in first_content if k[:2] == (dev, boot))
        assert consumer_db.coverage(db, dev, boot) == want, (dev, boot)
    assert len(consumer_db.coverage(db, "d0", 1)) > 1  # the holes are holes
    many = consumer_db.coverage_many(db, [("d0", 1), ("d1", 2), ("nobody", 1)], limit=2)
    assert many == {("d0", 1): consumer_db.coverage(db, "d0", 1, limit=2),
                    ("d1", 2): consumer_db.coverage(db, "d1", 2), ("nobody", 1): []}
    n_per_dev = dict(db.execute("SELECT device, n_records FROM devices").fetchall())
    assert n_per_dev == {d: sum(1 for k in first_content if k[0] == d) for d in ("d0", "d1", "d2")}
    trips = db.execute("SELECT device, boot, trip, end_seq FROM trips").fetchall()
    assert sorted(tuple(t) for t in trips) == sorted(
        (k[0], k[1], r["trip"], r["seq"]) for k, r in first_content.items() if r["type"] == "trip_end")


def test_a_failed_batch_leaves_nothing(db):
    """One transaction per batch: a batch that fails half way stores none of its records."""
    its = items_for("box-f", fleet_sim.synth_records(300, seed=5))
    bad = copy.deepcopy(its[1])
    r = bad["records"][3]  # a crash record whose samples are not bytes: fails after the records are written
    bad["records"][3] = {"type": "crash", "seq": r["seq"], "t_ms": r["t_ms"], "utc_s": r["utc_s"],
                         "samples": "zz"}
    with pytest.raises(Exception):
        consumer_db.store_blocks(db, [its[0], bad] + its[2:])
    assert db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM coverage").fetchone()[0] == 0
    n, d, b, _ = consumer_db.store_blocks(db, its)
    assert (n, d, b) == (sum(len(it["records"]) for it in its), 0, 0)


def test_a_device_first_seen_by_its_status_gets_its_boot(db):
    """The agent's retained status can create the device row before any block (last_boot unknown): the
    first blocks then set last_boot to their boot (SQLite's MAX(NULL, x) is NULL, PostgreSQL's GREATEST is
    x)."""
    db.execute("BEGIN IMMEDIATE")
    consumer_db.store_agent_status(db, "f", "box-s", b'{"online": true}')
    db.execute("COMMIT")
    recs = fleet_sim.synth_records(100, seed=6, boot=4)
    consumer_db.store_blocks(db, items_for("box-s", recs, boot=4))
    row = db.execute("SELECT last_boot, n_records, fleet FROM devices WHERE device='box-s'").fetchone()
    assert tuple(row) == (4, len(recs), "f")


def _status(seq, t_ms, supply_mv=None):
    r = {"type": "status", "seq": seq, "t_ms": t_ms, "utc_s": -1, "fw": "x", "boot": 1, "store_used": 0,
         "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": 0, "calib": "none",
         "calib_quality": 0}
    if supply_mv is not None:
        r["supply_mv"] = supply_mv
    return r


# seq -> supply_mv published (None: a box without power input)
SUPPLY = {1: 12650, 2: None, 3: 11870, 4: 14100}


def test_status_supply_voltage_is_stored(db):
    """Record format 5's status.supply_mv reaches the statuses table through the real codec, on both
    databases; a status without a reading (no power input) stores NULL, not the codec's -1."""
    recs = [_status(s, 1000 * s, mv) for s, mv in SUPPLY.items()]
    consumer_db.store_blocks(db, items_for("box-v", recs))
    got = dict(tuple(r) for r in db.execute(
        "SELECT seq, supply_mv FROM statuses WHERE device='box-v'").fetchall())
    assert got == SUPPLY


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "old.db")
    return request.getfixturevalue("postgres_server").new_database()


def test_an_older_database_gets_supply_mv_filled_from_its_records(target):
    """A database written before statuses had supply_mv (its records.data kept every decoded field): the next
    connect adds the column and fills it from what the records say; a second connect changes nothing."""
    db = consumer_db.connect(target)
    db.execute("ALTER TABLE statuses DROP COLUMN supply_mv")  # the table as the older consumer made it
    recs = [_status(s, 1000 * s, mv) for s, mv in SUPPLY.items()]
    db.execute("BEGIN IMMEDIATE")
    for r in recs:  # as the older consumer stored them: the typed row without supply_mv, the record whole
        db.execute("INSERT INTO records(device, boot, seq, type, t_ms, utc_s, data) VALUES (?,?,?,?,?,?,?)",
                   ("box-o", 1, r["seq"], "status", r["t_ms"], -1,
                    __import__("json").dumps(r, sort_keys=True)))
        db.execute("INSERT INTO statuses(device, boot, seq, t_ms, utc_s, fw) VALUES (?,?,?,?,?,?)",
                   ("box-o", 1, r["seq"], r["t_ms"], -1, r["fw"]))
    db.execute("COMMIT")
    db.close()
    for create in (False, True):  # a reader first (`paydbox trips`, `report`), then `paydbox ingest`
        db = consumer_db.connect(target, create=create)
        got = dict(tuple(r) for r in db.execute("SELECT seq, supply_mv FROM statuses").fetchall())
        assert got == SUPPLY
        db.close()
    db = consumer_db.connect(target)  # and new statuses go in as on a fresh database
    consumer_db.store_blocks(db, items_for("box-o", [_status(9, 9000, 12001)]))
    assert db.execute("SELECT supply_mv FROM statuses WHERE seq=9").fetchone()[0] == 12001
    db.close()
