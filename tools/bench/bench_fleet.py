"""Fleet load check (`paydbox fleet-sim`) against a Mosquitto and a PostgreSQL started here, on both
consumer databases, so `paydbox bench` has the fleet figures of docs/fleet.md. Runs the CLI as a
subprocess and keeps its JSON result. The SQLite and PostgreSQL runs of one configuration alternate
(each configuration on both before the next), so both see the same load on a shared machine."""
import json
import os
import subprocess
import sys
import tempfile

from tools.brokers import Mosquitto
from tools.pgserver import PostgresServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = [  # (boxes, records per box, duration s, consumers): paced (the fleet's real rate), then a backlog
    (5, 400, 5, 1),
    (200, 120, 60, 1),
    (50, 600, 0, 1),
    (50, 600, 0, 2),
]
QUICK = [(5, 100, 2, 1), (20, 300, 0, 1)]
KEYS = ("records_published", "records_stored", "records_lost", "blocks_resent", "offered_records_per_s",
        "ingest_records_per_s", "lag_p50_ms", "lag_p95_ms", "lag_max_ms")
DBS = ("sqlite", "postgresql")
NOTE = ("`paydbox fleet-sim` with the consumer(s) on each database (`--db`: a fresh SQLite file, or a fresh "
        "database on a PostgreSQL server on the same host, started by the bench), Mosquitto on the same "
        "host. Paced runs spread each box's records over the duration (the fleet's real rate); `over 0 s` is "
        "a backlog, published as fast as the boxes can, which measures what the consumer keeps up with. Lag: "
        "publish to the consumer's commit. blocks_resent: blocks a box published again because its "
        "end-to-end ack was more than 3 s late. `store_blocks alone`: the database path by itself (blocks "
        "decoded beforehand, no broker), best of 3.")


def name_of(boxes, per_box, duration, consumers):
    return "%d boxes x %d records over %d s%s" % (boxes, per_box, duration,
                                                   ", %d consumers" % consumers if consumers > 1 else "")


def _fleet(port, boxes, per_box, duration, consumers, db):
    p = subprocess.run([sys.executable, "-m", "tools.cli", "fleet-sim", "--broker",
                        "mqtt://127.0.0.1:%d" % port,
                        "--boxes", str(boxes), "--records-per-box", str(per_box), "--duration", str(duration),
                        "--consumers", str(consumers), "--db", db, "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    try:
        r = json.loads(p.stdout[p.stdout.index("{"):])
    except ValueError:
        tail = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        raise RuntimeError("fleet-sim failed: %s" % tail)
    return {k: r.get(k) for k in KEYS}


def store_rate(db_url, n_boxes=10, per_box=600, batch=20, reps=3):
    """records/s of consumer_db.store_blocks alone (no broker, no decoding: blocks decoded beforehand),
    `batch` blocks per transaction, best of `reps` fresh runs: the database path by itself."""
    import time

    from firmware import decoder
    from tools.consumer import db as consumer_db
    from tools.consumer import fleet_sim
    items = []
    for i in range(n_boxes):
        dev = "store-%03d" % i
        for _, _, blk in fleet_sim.encode_blocks(dev, 1, fleet_sim.synth_records(per_box, seed=i)):
            h, rs = decoder.decode_block(blk)
            items.append({"topic": "paydbox/b/%s/records" % dev, "fleet": "b", "device": dev,
                          "size": len(blk), "received_at": time.time(), "header": h, "records": rs})
    n = sum(len(it["records"]) for it in items)
    best = 0.0
    for rep in range(reps):
        db = consumer_db.connect(db_url() if callable(db_url) else "%s.%d" % (db_url, rep))
        try:
            t = time.perf_counter()
            for k in range(0, len(items), batch):
                consumer_db.store_blocks(db, items[k:k + batch])
            best = max(best, n / (time.perf_counter() - t))
        finally:
            db.close()
    return n, round(best)


def run(quick=False):
    out = {}
    with tempfile.TemporaryDirectory(prefix="paydbox-bench-fleet-") as w:
        with Mosquitto(w) as b, PostgresServer() as pg:
            out["postgresql_server"] = pg.version
            for db in DBS:
                n, rate = store_rate(pg.new_database if db == "postgresql" else os.path.join(w, "store.db"),
                                     n_boxes=3 if quick else 10)
                out["%s, store_blocks alone (%d records, 20 blocks per transaction): records/s"
                    % (db, n)] = rate
            for i, cfg in enumerate(QUICK if quick else RUNS):
                for db in DBS:
                    url = pg.new_database() if db == "postgresql" else os.path.join(w, "fleet%d.db" % i)
                    r = _fleet(b.port, *cfg, db=url)
                    for k, v in r.items():
                        out["%s, %s: %s" % (db, name_of(*cfg), k)] = v
                a, b_ = (out.get("%s, %s: ingest_records_per_s" % (db, name_of(*cfg)))
                         for db in ("postgresql", "sqlite"))
                if a and b_:
                    out["%s: postgresql / sqlite ingest rate" % name_of(*cfg)] = round(a / float(b_), 2)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
