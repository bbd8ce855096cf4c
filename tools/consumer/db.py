"""SQLite store of the reference consumer (shared by `paydbox ingest`, `trips`, `report`, `fleet-sim`).

Identity: a block is stored under the fleet and device of the topic it arrived on, which the broker's
ACL binds to the authenticated client (docs/mqtt-topics.md), never under the device its header names. A
block whose header disagrees with its topic is quarantined (table `quarantine`) and counted; so is a
record that arrives again under an existing (device, boot, seq) with different content.

Completeness: `coverage` holds, per (device, boot), the merged seq ranges of every block committed.
Sequence numbers are contiguous within a boot (firmware/app.py), so a hole between two ranges, or inside
a trip's [trip_start seq, trip_end seq], is a gap (`gaps()`; `paydbox ingest` asks the agent to send it
again); `lost` holds ranges the agent and the box both reported they no longer have.

Deduplication: every record is keyed by (device, boot, seq) with a UNIQUE constraint on `records`;
a record already present is counted as a duplicate and not stored again. Typed tables (positions,
events, crashes, statuses, tampers, trips) are only written for records that are new, so they inherit
the same guarantee. A trip is keyed by (device, boot, trip) where `trip` is the seq of its trip_start.

The database runs in WAL mode with synchronous=FULL: `store_blocks()` commits before the caller
acknowledges the MQTT messages, so a consumer killed at any point loses nothing and a redelivered
message only yields duplicates.

A batch is one transaction of a few statements whatever its size (a PostgreSQL server is a round trip
away): the keys already held are read in one SELECT, the new records and their typed rows are appended
with one COPY per table (SQLite: executemany), coverage ranges are read, merged and rewritten once for the
whole batch. Only trip_start / trip_end rows are upserted one by one (a few per drive).
"""
import json
import sqlite3
import time

from edge_agent.seqranges import subtract

DEFAULT_DB = "paydbox.db"
UTC2000 = 946684800  # unix time of 2000-01-01T00:00:00Z (record utc_s epoch)

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, fleet TEXT, first_seen REAL, last_seen REAL, last_boot INTEGER,
    n_records INTEGER NOT NULL DEFAULT 0, agent_status TEXT, agent_status_at REAL);
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY, device TEXT, boot INTEGER, first_seq INTEGER, count INTEGER, topic TEXT,
    size INTEGER, received_at REAL, committed_at REAL, n_new INTEGER, n_dup INTEGER, consumer TEXT);
CREATE INDEX IF NOT EXISTS blocks_key ON blocks(device, boot, first_seq);
CREATE TABLE IF NOT EXISTS damaged (
    id INTEGER PRIMARY KEY, topic TEXT, received_at REAL, size INTEGER, error TEXT, payload BLOB);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, t_ms INTEGER, utc_s INTEGER, block_id INTEGER, data TEXT,
    UNIQUE (device, boot, seq));
CREATE TABLE IF NOT EXISTS positions (
    device TEXT, boot INTEGER, seq INTEGER, t_ms INTEGER, utc_s INTEGER, lat_e7 INTEGER, lon_e7 INTEGER,
    speed_mmps INTEGER, course_cdeg INTEGER, hdop_x10 INTEGER, sats INTEGER, UNIQUE (device, boot, seq));
CREATE TABLE IF NOT EXISTS events (
    device TEXT, boot INTEGER, seq INTEGER, t_ms INTEGER, utc_s INTEGER, kind TEXT, dur_ms INTEGER,
    peak_mg INTEGER, mean_mg INTEGER, speed_start_mmps INTEGER, speed_end_mmps INTEGER, lat_e7 INTEGER,
    lon_e7 INTEGER, course_cdeg INTEGER, UNIQUE (device, boot, seq));
CREATE TABLE IF NOT EXISTS crashes (
    device TEXT, boot INTEGER, seq INTEGER, t_ms INTEGER, utc_s INTEGER, peak_mg INTEGER, lat_e7 INTEGER,
    lon_e7 INTEGER, speed_mmps INTEGER, rate_hz INTEGER, pre_ms INTEGER, samples BLOB,
    UNIQUE (device, boot, seq));
CREATE TABLE IF NOT EXISTS statuses (
    device TEXT, boot INTEGER, seq INTEGER, t_ms INTEGER, utc_s INTEGER, fw TEXT, store_used INTEGER,
    store_evicted INTEGER, gnss_ok INTEGER, accel_ok INTEGER, odometer_m INTEGER, calib TEXT,
    calib_quality INTEGER, supply_mv INTEGER, UNIQUE (device, boot, seq));
CREATE TABLE IF NOT EXISTS tampers (
    device TEXT, boot INTEGER, seq INTEGER, t_ms INTEGER, utc_s INTEGER, reason TEXT, value INTEGER,
    UNIQUE (device, boot, seq));
CREATE TABLE IF NOT EXISTS trips (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, boot INTEGER NOT NULL, trip INTEGER NOT NULL,
    start_seq INTEGER, end_seq INTEGER, start_t_ms INTEGER, end_t_ms INTEGER,
    start_utc_s INTEGER, end_utc_s INTEGER, start_lat_e7 INTEGER, start_lon_e7 INTEGER,
    end_lat_e7 INTEGER, end_lon_e7 INTEGER, distance_m INTEGER, duration_s INTEGER, score INTEGER,
    n_events INTEGER, summary TEXT, UNIQUE (device, boot, trip));
CREATE TABLE IF NOT EXISTS coverage (
    device TEXT NOT NULL, boot INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS coverage_key ON coverage(device, boot, lo);
CREATE TABLE IF NOT EXISTS lost (
    device TEXT NOT NULL, boot INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, reason TEXT,
    reported_at REAL, UNIQUE (device, boot, lo, hi));
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, topic TEXT, fleet TEXT, device TEXT, claimed_device TEXT, received_at REAL,
    reason TEXT, payload BLOB);
CREATE TABLE IF NOT EXISTS consumer_stats (
    consumer TEXT PRIMARY KEY, messages INTEGER, blocks INTEGER, records_new INTEGER,
    records_dup INTEGER, damaged INTEGER, updated_at REAL);
"""

TYPED = {
    "pos": ("positions", ("lat_e7", "lon_e7", "speed_mmps", "course_cdeg", "hdop_x10", "sats")),
    "event": ("events", ("kind", "dur_ms", "peak_mg", "mean_mg", "speed_start_mmps", "speed_end_mmps",
                         "lat_e7", "lon_e7", "course_cdeg")),
    "crash": ("crashes", ("peak_mg", "lat_e7", "lon_e7", "speed_mmps", "rate_hz", "pre_ms", "samples")),
    # supply_mv: the box's supply (the car battery) as read, mV; NULL when the box has no power input or
    # its firmware predates record format 5
    "status": ("statuses", ("fw", "store_used", "store_evicted", "gnss_ok", "accel_ok", "odometer_m",
                            "calib", "calib_quality", "supply_mv")),
    "tamper": ("tampers", ("reason", "value")),
}
EVENT_COUNT_FIELDS = ("n_harsh_accel", "n_harsh_brake", "n_harsh_corner_left", "n_harsh_corner_right",
                      "n_crash", "n_overspeed", "n_unclassified")


def is_postgres(target):
    """True when --db names a PostgreSQL server (postgresql:// or postgres:// URL), else it is a SQLite
    path."""
    return str(target).startswith(("postgresql://", "postgres://"))


class _PgRow(tuple):
    """A row like sqlite3.Row: r[0], r["name"], dict(r), keys()."""
    __slots__ = ()
    _names = ()

    def __getitem__(self, k):
        if isinstance(k, str):
            return tuple.__getitem__(self, self._names.index(k))
        return tuple.__getitem__(self, k)

    def keys(self):
        return list(self._names)


_ROW_CLASSES = {}  # column names -> row class (one class per result shape, not per cursor)


def _pg_row_factory(cursor):
    names = tuple(c.name for c in (cursor.description or ()))
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        cls = _ROW_CLASSES[names] = type("Row", (_PgRow,), {"__slots__": (), "_names": names})

    def make(values):  # SUM() of BIGINT is NUMERIC (Decimal) in PostgreSQL; SQLite gives int
        return cls(_num(v) for v in values)
    return make


def _num(v):
    import decimal
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


class PgConnection:
    """The subset of sqlite3.Connection the consumer uses, on psycopg 3 (autocommit: explicit BEGIN/COMMIT,
    as with SQLite's isolation_level=None). SQL is written once in SQLite's dialect; `_sql` translates:
    ? -> %s, INSERT OR IGNORE -> ON CONFLICT DO NOTHING, BEGIN IMMEDIATE -> BEGIN, and an INSERT's
    lastrowid comes from RETURNING id."""
    dialect = "postgresql"

    def __init__(self, url):
        import psycopg
        self.Error = psycopg.Error
        class Cursor(psycopg.Cursor):
            lastrowid = None  # set by an INSERT into a table with an id column, as sqlite3's
        self._c = psycopg.connect(url, autocommit=True, row_factory=_pg_row_factory, cursor_factory=Cursor)
        self._types = None

    @staticmethod
    def _sql(q):
        q = q.replace("%", "%%").replace("?", "%s")
        if q.startswith("INSERT OR IGNORE "):
            q = "INSERT " + q[len("INSERT OR IGNORE "):] + " ON CONFLICT DO NOTHING"
        elif q == "BEGIN IMMEDIATE":
            q = "BEGIN"
        # 2-arg MAX: SQLite's
        q = q.replace("MAX(COALESCE(devices.last_boot,", "GREATEST(COALESCE(devices.last_boot,")
        return q

    def execute(self, q, args=()):
        if q == "BEGIN IMMEDIATE":  # one writer at a time, as in SQLite: coverage merges read then write
            cur = self._c.cursor()
            cur.execute("BEGIN; SELECT pg_advisory_xact_lock(4243)")  # one round trip (no parameters)
            return cur
        q = self._sql(q)
        cur = self._c.cursor()
        if (q.startswith("INSERT INTO ") and q.split("(", 1)[0].split()[2] in _ID_TABLES
                and " RETURNING " not in q and "(id," not in q):
            cur.execute(q + " RETURNING id", args)
            row = cur.fetchone()
            cur.lastrowid = row[0] if row else None
            return cur
        cur.execute(q, args)
        return cur

    def execute_translated(self, q, args):
        """A query already in psycopg's syntax (%s / %b placeholders)."""
        cur = self._c.cursor()
        cur.execute(q, args)
        return cur

    def copy_rows(self, table, cols, rows):
        """COPY rows into table(cols), binary, typed after the table's columns."""
        types = self.column_types(table)
        with self._c.cursor() as cur:
            with cur.copy("COPY %s (%s) FROM STDIN (FORMAT BINARY)" % (table, ", ".join(cols))) as cp:
                cp.set_types([types[c] for c in cols])
                for r in rows:
                    cp.write_row(r)

    def column_types(self, table):
        """{column: PostgreSQL type} of a consumer table (read once per connection)."""
        if self._types is None:
            self._types = {}
            for t, c, ty in self.execute("SELECT table_name, column_name, data_type FROM "
                                         "information_schema.columns WHERE table_schema = "
                                         "current_schema()").fetchall():
                self._types.setdefault(t, {})[c] = ty
        return self._types[table]

    def executemany(self, q, rows):
        cur = self._c.cursor()
        cur.executemany(self._sql(q), list(rows))
        return cur

    def executescript(self, script):
        self._c.execute(script)

    def close(self):
        self._c.close()


_ID_TABLES = ("blocks", "damaged", "quarantine", "trips")


def _pg_schema():
    """SCHEMA in PostgreSQL: BIGINT ids from an identity, BYTEA for BLOB, DOUBLE PRECISION for REAL, and
    INTEGER widened to BIGINT (seqs, t_ms and utc_s are unsigned 32-bit on the box)."""
    s = SCHEMA.replace("id INTEGER PRIMARY KEY", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    s = s.replace(" BLOB", " BYTEA").replace(" REAL", " DOUBLE PRECISION").replace(" INTEGER", " BIGINT")
    s = s.replace("CREATE TABLE IF NOT EXISTS coverage (",
                  "CREATE TABLE IF NOT EXISTS coverage (\n    id BIGINT GENERATED BY DEFAULT AS IDENTITY "
                  "PRIMARY KEY,")
    s = s.replace("size BIGINT, received_at DOUBLE PRECISION, committed_at",
                  "last_seq BIGINT, size BIGINT, received_at DOUBLE PRECISION, committed_at")
    return s


def connect(path, create=True):
    """Open (and create) the consumer database. A path: SQLite in WAL mode, synchronous=FULL, 30 s busy
    timeout. A postgresql:// URL: the same schema on PostgreSQL (each COMMIT is durable with the server's
    default synchronous_commit=on)."""
    if is_postgres(path):
        db = PgConnection(path)
        if create:
            db.execute("SELECT pg_advisory_lock(4242)")  # consumers of one group start together
            try:
                db.executescript(_pg_schema())
                _migrate(db)
            finally:
                db.execute("SELECT pg_advisory_unlock(4242)")
        else:
            _migrate(db)  # a reader (trips, report) of an older database reads today's schema too
        return db
    if not create:
        import os
        if not os.path.exists(path):
            raise FileNotFoundError("no consumer database at %s (run `paydbox ingest --db %s` first)"
                                    % (path, path))
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as e:
        db.close()
        raise ValueError("--db %s: not a consumer database (%s)" % (path, e))
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    if create:
        db.executescript(SCHEMA)
    _migrate(db)  # a reader (trips, report) of an older database reads today's schema too
    return db


# Columns added after databases were already in use: (table, column, SQLite type, backfill). CREATE TABLE IF
# NOT EXISTS leaves an older table as it was, so connect() adds what it lacks (both databases, the same
# schema). backfill: the JSON key of records.data that fills the new column of the rows already stored (the
# typed tables are a projection of `records`, which keeps every decoded field).
MIGRATIONS = (
    ("blocks", "last_seq", "INTEGER", None),    # coverage (a block's highest seq)
    ("statuses", "supply_mv", "INTEGER", "supply_mv"),  # record format 5: the box's supply voltage
)


def _columns(db, table):
    if getattr(db, "dialect", None) == "postgresql":
        return set(r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?", (table,)))
    return set(r[1] for r in db.execute("PRAGMA table_info(%s)" % table))


def _migrate(db):
    """Bring an existing database to SCHEMA (see MIGRATIONS); a no-op on a current one."""
    pg = getattr(db, "dialect", None) == "postgresql"
    for table, col, typ, key in MIGRATIONS:
        cols = _columns(db, table)
        if not cols or col in cols:  # no such table (not a consumer database yet), or up to date
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if col in _columns(db, table):  # another consumer of the database did it meanwhile
                db.execute("COMMIT")
                continue
            db.execute("ALTER TABLE %s ADD COLUMN %s %s"
                       % (table, col, "BIGINT" if pg and typ == "INTEGER" else typ))
            if key is not None:
                val = ("(r.data::json->>'%s')::bigint" if pg else "json_extract(r.data, '$.%s')") % key
                db.execute("UPDATE %s SET %s = (SELECT %s FROM records r WHERE r.device=%s.device"
                           " AND r.boot=%s.boot AND r.seq=%s.seq)" % (table, col, val, table, table, table))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _jsonable(rec):
    out = {}
    for k, v in rec.items():
        if isinstance(v, (bytes, bytearray, memoryview)):
            out[k] = {"bytes_len": len(v)}  # raw bytes live in their typed table (crashes.samples)
        else:
            out[k] = v
    return out


def store_blocks(db, items, consumer="ingest"):
    """Store decoded blocks in ONE transaction and commit. `items`: list of dicts with keys
    topic, fleet, device (both from the topic), size, received_at, and header + records (decoded), or
    error (damaged block, payload), or quarantine (reason, payload).
    Returns (n_new, n_dup, n_damaged, touched): touched = {(fleet, device, boot): [[first_seq, last_seq]]}
    of the blocks committed now, which the caller acknowledges end to end with the boot's coverage. Raises
    the database's error if the commit fails (the caller must then acknowledge nothing).

    The batch costs a handful of statements, not one per record (PostgreSQL is a round trip away): one
    SELECT for the keys already held (and their content), one COPY per table for the new records and
    their typed rows (SQLite: executemany), one SELECT / DELETE / INSERT for the coverage ranges of every
    (device, boot) in the batch, one upsert for the devices; only trip_start / trip_end rows are upserted
    one by one. The result is the same as storing the blocks one by one in order: within the batch the
    first copy of a key wins and later copies count as duplicates (or conflicts)."""
    n_new = n_dup = n_bad = 0
    touched = {}
    db.execute("BEGIN IMMEDIATE")
    try:
        # good blocks, in order:
        # [device, boot, first_seq, last_seq, count, topic, size, received_at, fleet, n_new, n_dup]
        blocks = []
        quar = []  # ((item index, record index), quarantine row): written in arrival order
        # (device, boot, seq) -> (block index, record index, rec, type, data): first copy in the batch
        first = {}
        repeats = []  # (block index, record index, key, type, data, item): later copies in the batch
        runs = {}  # (device, boot) -> [[lo, hi]] seq runs of the batch's blocks (coverage)
        for ii, it in enumerate(items):
            if it.get("error") is not None:
                n_bad += 1
                db.execute("INSERT INTO damaged(topic, received_at, size, error, payload) VALUES (?,?,?,?,?)",
                           (it["topic"], it["received_at"], it["size"], it["error"], it.get("payload")))
                continue
            if it.get("quarantine") is not None:
                n_bad += 1
                quar.append(((ii, -1), _quarantine_row(it, it["quarantine"], it.get("payload"))))
                continue
            h = it["header"]
            device, boot = str(it["device"]), int(h["boot"])
            seqs = [int(r["seq"]) for r in it["records"]]
            last_seq = max(seqs or [h["first_seq"]])
            bi = len(blocks)
            blocks.append([device, boot, h["first_seq"], last_seq, h["count"], it["topic"], it["size"],
                           it["received_at"], it.get("fleet"), 0, 0, ii])
            for ri, rec in enumerate(it["records"]):
                key = (device, boot, int(rec["seq"]))
                data = json.dumps(_jsonable(rec), sort_keys=True)
                if key in first:
                    repeats.append((bi, ri, key, rec["type"], data, it))
                else:
                    first[key] = (bi, ri, rec, rec["type"], data)
            # coverage from the records themselves (a block may skip seqs): contiguous runs
            rs = runs.setdefault((device, boot), [])
            for q in sorted(seqs):
                if rs and rs[-1][0] <= q <= rs[-1][1] + 1:
                    rs[-1][1] = max(rs[-1][1], q)
                else:
                    rs.append([q, q])
            touched.setdefault((it.get("fleet"), device, boot), []).append([h["first_seq"], last_seq])
        ids = _new_ids(db, "blocks", len(blocks))
        # records: the keys already held are read (one statement), every other first copy is new and
        # written in one COPY; the write lock (BEGIN IMMEDIATE) keeps any other writer out in between
        order = sorted(first.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        stored = _stored_records(db, first)  # key -> (type, data) already held
        new = set(k for k in first if k not in stored)
        _copy(db, "records", ("device", "boot", "seq", "type", "t_ms", "utc_s", "block_id", "data"),
              [(k[0], k[1], k[2], v[3], v[2].get("t_ms"), v[2].get("utc_s", -1), ids[v[0]], v[4])
               for k, v in order if k in new])
        for k, v in order:
            if k in new:
                stored[k] = (v[3], v[4])
        resolved = [(v[0], v[1], k, v[3], v[4], items[blocks[v[0]][11]]) for k, v in order if k not in new]
        for bi, ri, key, rtype, data, it in sorted(resolved + repeats, key=lambda x: (x[0], x[1])):
            blocks[bi][10] += 1
            old = stored.get(key)
            if old is not None and (old[0] != rtype or old[1] != data):
                # same key, other content: keep the first, quarantine the other
                quar.append(((blocks[bi][11], ri), _quarantine_row(
                    it, "record (%s, %d, %d) differs from the one stored" % key, data.encode())))
        typed = {}
        for k, v in order:
            if k not in new:
                continue
            blocks[v[0]][9] += 1
            rec, rtype = v[2], v[3]
            if rtype in TYPED:
                table, fields = TYPED[rtype]
                vals = [rec.get(f) for f in fields]
                if rtype == "crash" and vals[-1] is not None:
                    vals[-1] = bytes(vals[-1])
                typed.setdefault(rtype,
                                 []).append([k[0], k[1], k[2], rec.get("t_ms"), rec.get("utc_s", -1)] + vals)
            elif rtype in ("trip_start", "trip_end"):  # upserts of one row: in record order, one by one
                _store_trip(db, k[0], k[1], rec)
        for rtype, rows in typed.items():
            table, fields = TYPED[rtype]
            _copy(db, table, ("device", "boot", "seq", "t_ms", "utc_s") + fields, rows)  # new records only
        if quar:
            quar.sort(key=lambda q: q[0])
            db.executemany("INSERT INTO quarantine(topic, fleet, device, claimed_device, received_at, "
                           "reason, payload) VALUES (?,?,?,?,?,?,?)", [q[1] for q in quar])
        _cover_many(db, runs)
        # device -> [fleet, first_seen, last_seen, last_boot, n_records] as block-by-block upserts leave it
        devs = {}
        for b in blocks:
            d = devs.get(b[0])
            if d is None:
                devs[b[0]] = [b[8], b[7], b[7], b[1], b[9]]
            else:
                d[0] = b[8] if b[8] is not None else d[0]
                d[2], d[3], d[4] = b[7], max(d[3], b[1]), d[4] + b[9]
        _bulk(db, "devices", ("device", "fleet", "first_seen", "last_seen", "last_boot", "n_records"),
              [[dev] + d for dev, d in devs.items()],
              "INSERT INTO devices({c}) SELECT {c} FROM {r} WHERE true"
              " ON CONFLICT(device) DO UPDATE SET last_seen=excluded.last_seen,"
              # a status-only row has none
              " last_boot=MAX(COALESCE(devices.last_boot, -1), excluded.last_boot),"
              " n_records=devices.n_records+excluded.n_records, fleet=COALESCE(excluded.fleet, "
              "devices.fleet)")
        # committed_at: taken just before COMMIT (the fsync of the WAL is the only thing after it)
        now = time.time()
        _copy(db, "blocks", ("id", "device", "boot", "first_seq", "last_seq", "count", "topic", "size",
                             "received_at", "committed_at", "n_new", "n_dup", "consumer"),
              [[ids[i]] + b[:8] + [now, b[9], b[10], consumer] for i, b in enumerate(blocks)])
        n_new = sum(b[9] for b in blocks)
        n_dup = sum(b[10] for b in blocks)
        db.execute(
            "INSERT INTO consumer_stats(consumer, messages, blocks, records_new, records_dup, damaged, "
            "updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(consumer) DO UPDATE SET "
            "messages=consumer_stats.messages+excluded.messages, "
            "blocks=consumer_stats.blocks+excluded.blocks, "
            "records_new=consumer_stats.records_new+excluded.records_new, "
            "records_dup=consumer_stats.records_dup+excluded.records_dup, "
            "damaged=consumer_stats.damaged+excluded.damaged, updated_at=excluded.updated_at",
            (consumer, len(items), len(items) - n_bad, n_new, n_dup, n_bad, now))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return n_new, n_dup, n_bad, touched


def _chunks(rows, n):
    rows = list(rows)
    return [rows[i:i + n] for i in range(0, len(rows), n)]


def _bulk(db, table, cols, rows, sql):
    """Run `sql` over many rows at once and return what it selects or RETURNs. In `sql`, {r} is a FROM item
    holding the rows as a table r(cols) and {c} the column list. PostgreSQL: unnest() of one array per
    column, typed after `table`'s columns: one short statement whatever the number of rows, parsed and
    planned once per shape. SQLite: a VALUES list (in-process, so only its variable limit cuts it up)."""
    out = []
    if not rows:
        return out
    names = ", ".join(cols)
    if getattr(db, "dialect", None) == "postgresql":
        types = db.column_types(table)
        # binary parameters (%b): text arrays go as they are, not quoted and escaped element by element
        frag = "unnest(%s) AS r(%s)" % (", ".join("%%b::%s[]" % types[c] for c in cols), names)
        q = db._sql(sql.format(r="\0R\0", c=names)).replace("\0R\0", frag)
        for ch in _chunks(rows, 20000):
            cur = db.execute_translated(q, [list(col) for col in zip(*ch)])
            if cur.description:
                out += cur.fetchall()
        return out
    per = max(1, 30000 // len(cols))  # SQLite's limit: 32766 variables per statement
    for ch in _chunks(rows, per):
        frag = "(SELECT %s FROM (VALUES %s)) AS r" % (
            ", ".join("column%d AS %s" % (i + 1, c) for i, c in enumerate(cols)),
            ",".join(["(" + ",".join("?" * len(cols)) + ")"] * len(ch)))
        cur = db.execute(sql.format(r=frag, c=names), [x for r in ch for x in r])
        if cur.description:
            out += cur.fetchall()
    return out


def _copy(db, table, cols, rows):
    """Append rows that are known to be new (no conflict handling): PostgreSQL's COPY (binary), SQLite's
    executemany of one INSERT."""
    if not rows:
        return
    if getattr(db, "dialect", None) == "postgresql":
        db.copy_rows(table, cols, rows)
    else:
        db.executemany("INSERT INTO %s(%s) VALUES (%s)" % (table, ", ".join(cols), ",".join("?" * len(cols))),
                       rows)


def _new_ids(db, table, n):
    """n ids for new rows of `table`, taken inside the writer's transaction (BEGIN IMMEDIATE)."""
    if n == 0:
        return []
    if getattr(db, "dialect", None) == "postgresql":
        return [r[0] for r in db.execute("SELECT nextval(pg_get_serial_sequence(?, 'id')) FROM "
                                         "generate_series(1, ?)",
                                         (table, n)).fetchall()]
    top = db.execute("SELECT COALESCE(MAX(id), 0) FROM %s" % table).fetchone()[0]  # the write lock is ours
    return list(range(top + 1, top + 1 + n))


def _stored_records(db, keys):
    """{(device, boot, seq): (type, data)} of the keys already in `records` (one statement)."""
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in _bulk(
        db, "records", ("device", "boot", "seq"), list(keys),
        "SELECT x.device, x.boot, x.seq, x.type, x.data FROM records x JOIN {r}"
        " ON x.device=r.device AND x.boot=r.boot AND x.seq=r.seq")}


def _merge(ranges):
    """Union of [lo, hi] ranges, adjacent ones joined, ascending."""
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _quarantine_row(it, reason, payload):
    claimed = it.get("header", {}).get("device") if it.get("header") else None
    return (it["topic"], it.get("fleet"), it.get("device"), claimed, it["received_at"], reason, payload)


def _cover_many(db, runs):
    """Merge the seq runs {(device, boot): [[lo, hi]]} into the coverage table (adjacent ranges join): the
    stored ranges touching any run are read in one statement, merged here, and only changed rows rewritten.
    Stored ranges never touch one another, so a merged range cannot reach a range that was not read."""
    rid = _rowid(db)
    new = {k: _merge(v) for k, v in runs.items() if v}
    old = {}
    for r in _bulk(db, "coverage", ("device", "boot", "lo", "hi"),
                   [(k[0], k[1], lo, hi) for k, rs in new.items() for lo, hi in rs],
                   "SELECT c.%s, c.device, c.boot, c.lo, c.hi FROM coverage c JOIN {r} ON c.device=r.device"
                   " AND c.boot=r.boot AND c.lo<=r.hi+1 AND c.hi>=r.lo-1" % rid):
        old.setdefault((r[1], r[2]), {})[r[0]] = (r[3], r[4])
    dead, fresh = [], []
    for k, rs in new.items():
        have = old.get(k, {})
        merged = _merge(rs + [list(v) for v in have.values()])
        keep = set(tuple(m) for m in merged)
        dead += [(i,) for i, v in have.items() if v not in keep]
        held = set(have.values())
        fresh += [(k[0], k[1], lo, hi) for lo, hi in merged if (lo, hi) not in held]
    _bulk(db, "coverage", ("id",), dead, "DELETE FROM coverage WHERE %s IN (SELECT id FROM {r})" % rid)
    _copy(db, "coverage", ("device", "boot", "lo", "hi"), fresh)


def coverage_many(db, keys, limit=None):
    """{(device, boot): [(lo, hi)]} for many (device, boot) at once (the newest `limit` ranges of each),
    ascending: what `coverage()` gives for each, in one statement."""
    out = {tuple(k): [] for k in keys}
    rank = "ROW_NUMBER() OVER (PARTITION BY c.device, c.boot ORDER BY c.lo DESC)"
    for r in _bulk(db, "coverage", ("device", "boot"), list(out),
                   "SELECT device, boot, lo, hi FROM (SELECT c.device, c.boot, c.lo, c.hi, %s AS rn FROM "
                   "coverage c JOIN {r} ON c.device=r.device AND c.boot=r.boot) AS z%s" % (
                       rank, " WHERE rn <= %d" % int(limit) if limit else "")):
        out[(r[0], r[1])].append((r[2], r[3]))
    return {k: sorted(v) for k, v in out.items()}


def _rowid(db):
    return "id" if getattr(db, "dialect", None) == "postgresql" else "rowid"


def coverage(db, device, boot, limit=None):
    """[(lo, hi)] seq ranges held for (device, boot), ascending (the newest `limit` when given)."""
    if limit:
        rows = db.execute("SELECT lo, hi FROM coverage WHERE device=? AND boot=? ORDER BY lo DESC LIMIT ?",
                          (device, boot, limit)).fetchall()
        return sorted((r[0], r[1]) for r in rows)
    return [(r[0], r[1]) for r in db.execute(
        "SELECT lo, hi FROM coverage WHERE device=? AND boot=? ORDER BY lo", (device, boot))]


def gaps(db, device=None):
    """[(fleet, device, boot, lo, hi)]: seqs missing between held ranges of a boot, or inside a known trip
    ([trip_start seq, trip_end seq]), minus ranges reported lost."""
    q = "SELECT DISTINCT c.device, c.boot, d.fleet FROM coverage c LEFT JOIN devices d ON d.device=c.device"
    args = ()
    if device:
        q += " WHERE c.device=?"
        args = (device,)
    out = []
    for dev, boot, fleet in db.execute(q, args).fetchall():
        cov = coverage(db, dev, boot)
        want = []
        if len(cov) > 1:
            want.append((cov[0][0], cov[-1][1]))
        for r in db.execute("SELECT trip, end_seq FROM trips WHERE device=? AND boot=? AND end_seq IS NOT "
                            "NULL",
                            (dev, boot)):
            want.append((r[0], r[1]))
        if not want:
            continue
        lost = [(r[0], r[1]) for r in db.execute(
            "SELECT lo, hi FROM lost WHERE device=? AND boot=? ORDER BY lo", (dev, boot))]
        holes = set()
        for lo, hi in want:
            for a, b in subtract(lo, hi, cov):
                for c in subtract(a, b, lost):
                    holes.add(c)
        out += [(fleet, dev, boot, a, b) for a, b in sorted(holes)]
    return out


def mark_lost(db, device, boot, ranges, reason, now=None):
    """Ranges the agent and the box no longer hold (evicted before they were sent): they stop being asked
    for and show as lost in the completeness figures."""
    now = time.time() if now is None else now
    db.execute("BEGIN IMMEDIATE")
    try:
        for lo, hi in ranges:
            db.execute("INSERT OR IGNORE INTO lost(device, boot, lo, hi, reason, reported_at) VALUES "
                       "(?,?,?,?,?,?)",
                       (device, boot, int(lo), int(hi), reason, now))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _store_trip(db, device, boot, rec):
    """A new trip_start or trip_end record into its trip row (keyed by (device, boot, trip)): a trip_end
    fills the whole row, a trip_start fills only what is still unknown."""
    seq = int(rec["seq"])
    t_ms = rec.get("t_ms")
    utc_s = rec.get("utc_s", -1)
    if rec["type"] == "trip_start":
        trip = int(rec.get("trip", seq))
        db.execute(
            "INSERT INTO trips(device, boot, trip, start_seq, start_t_ms, start_utc_s, start_lat_e7, "
            "start_lon_e7) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(device, boot, trip) DO UPDATE SET "
            "start_seq=excluded.start_seq, start_t_ms=COALESCE(trips.start_t_ms, excluded.start_t_ms),"
            " start_utc_s=COALESCE(trips.start_utc_s, excluded.start_utc_s),"
            " start_lat_e7=COALESCE(trips.start_lat_e7, excluded.start_lat_e7),"
            " start_lon_e7=COALESCE(trips.start_lon_e7, excluded.start_lon_e7)",
            (device, boot, trip, seq, t_ms, utc_s, rec.get("lat_e7"), rec.get("lon_e7")))
    elif rec["type"] == "trip_end":
        trip = int(rec["trip"])
        n_events = sum(int(rec.get(f, 0) or 0) for f in EVENT_COUNT_FIELDS)
        db.execute(
            "INSERT INTO trips(device, boot, trip, end_seq, start_t_ms, end_t_ms, start_utc_s, end_utc_s,"
            " start_lat_e7, start_lon_e7, end_lat_e7, end_lon_e7, distance_m, duration_s, score, n_events, "
            "summary) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(device, boot, trip) DO UPDATE "
            "SET end_seq=excluded.end_seq, start_t_ms=excluded.start_t_ms, end_t_ms=excluded.end_t_ms,"
            " start_utc_s=excluded.start_utc_s, end_utc_s=excluded.end_utc_s,"
            " start_lat_e7=excluded.start_lat_e7, start_lon_e7=excluded.start_lon_e7,"
            " end_lat_e7=excluded.end_lat_e7, end_lon_e7=excluded.end_lon_e7, distance_m=excluded.distance_m,"
            " duration_s=excluded.duration_s, score=excluded.score, n_events=excluded.n_events,"
            " summary=excluded.summary",
            (device, boot, trip, seq, rec.get("start_t_ms"), rec.get("end_t_ms"), rec.get("start_utc_s"),
             rec.get("end_utc_s"), rec.get("start_lat_e7"), rec.get("start_lon_e7"), rec.get("end_lat_e7"),
             rec.get("end_lon_e7"), rec.get("distance_m"), rec.get("duration_s"), rec.get("score"), n_events,
             json.dumps(_jsonable(rec), sort_keys=True)))


def store_agent_status(db, fleet, device, payload, now=None):
    """The edge agent's retained `.../status` JSON (not a codec block): kept as text on the device row."""
    now = time.time() if now is None else now
    try:
        text = payload.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError):
        text = json.dumps({"invalid": payload[:64].hex()})
    db.execute(
        "INSERT INTO devices(device, fleet, first_seen, last_seen, agent_status, agent_status_at)"
        " VALUES (?,?,?,?,?,?) ON CONFLICT(device) DO UPDATE SET agent_status=excluded.agent_status,"
        " agent_status_at=excluded.agent_status_at, fleet=COALESCE(devices.fleet, excluded.fleet)",
        (device, fleet, now, now, text, now))


# ---------------------------------------------------------------- queries (trips, report, fleet-sim)

def utc_iso(utc_s):
    """Record utc_s (seconds since 2000-01-01Z) -> ISO 8601 'YYYY-MM-DDTHH:MM:SSZ', None if unknown."""
    if utc_s is None or utc_s < 0:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(UTC2000 + int(utc_s)))


def list_trips(db, device=None):
    q = "SELECT * FROM trips"
    args = ()
    if device:
        q += " WHERE device=?"
        args = (device,)
    q += " ORDER BY device, boot, trip"
    trips = []
    for r in db.execute(q, args).fetchall():
        trips.append(trip_row(db, r))
    return trips


def trip_row(db, r):
    """A trip as a plain dict (summary decoded; km/duration from trip_end, else from the positions)."""
    t = dict(r)
    t["summary"] = json.loads(r["summary"]) if r["summary"] else None
    t["closed"] = t["summary"] is not None  # its trip_end is in
    _completeness(db, t)
    _supply(db, t)
    # moved with the ignition off (the box's `towing` event inside the trip): a tow, not the driver's drive
    lo, hi = seq_range(t)
    tow = db.execute("SELECT MIN(t_ms), COUNT(*) FROM events WHERE device=? AND boot=? AND seq>? AND seq<?"
                     " AND kind='towing'", (t["device"], t["boot"], lo, hi)).fetchone()
    t["towed"] = tow[1] > 0
    t["tow_start_t_ms"] = tow[0] if t["towed"] else None
    if not t["closed"]:
        pos = trip_positions(db, t)
        t["distance_m"] = int(round(path_length_m(pos)))
        if pos:
            t["start_t_ms"] = t["start_t_ms"] if t["start_t_ms"] is not None else pos[0]["t_ms"]
            t["end_t_ms"] = pos[-1]["t_ms"]
            t["end_utc_s"] = pos[-1]["utc_s"]
            t["duration_s"] = (pos[-1]["t_ms"] - t["start_t_ms"]) // 1000
        lo, hi = seq_range(t)
        t["n_events"] = db.execute(
            "SELECT COUNT(*) FROM records WHERE device=? AND boot=? AND seq>? AND seq<? AND type IN "
            "('event','crash')",
            (t["device"], t["boot"], lo, hi)).fetchone()[0]
    _towed(db, t)
    _km_flags(db, t)
    return t


# Billing (docs/fleet.md "Billing"): what can make a trip's km (the box's trip_end distance_m) fall short of
# the distance driven, from the records the box already writes. The tamper reasons: `loop_fault` (the
# supervisor caught a MemoryError or OSError no subsystem caught: that main-loop pass, and the GNSS fixes it
# would have read, are lost; firmware/runner.py), `gnss_missing` (no GNSS byte for 30 s: no fix, no km)
KM_TAMPERS = ("loop_fault", "gnss_missing")
# firmware/runner.py loop_fault writes at most this many loop_fault records per boot: once a boot has them
# all, its later faults are not recorded, so a trip ending after that cannot be known to be fault-free
LOOP_FAULT_RECORDS_MAX = 3
# the box's odometer over the trip's records against its distance: both are the same count of mm
# (firmware/app.py: the trip is credited what the odometer counts while it is open), each floored to m
ODOMETER_SLACK_M = 1


def _km_flags(db, t):
    """`km_incomplete` and its reasons {reason: count} (empty: none known):
      loop_fault, gnss_missing  tamper records of those reasons inside the trip (KM_TAMPERS)
      loop_fault_cap            1: the boot had written all its loop_fault records (LOOP_FAULT_RECORDS_MAX)
                                by the trip's end: faults during the trip may be unrecorded
      odometer_extra_m          the box's own odometer (`odometer` and `status` records inside the trip)
                                advanced this many m more than the trip's distance: km the trip lost
      records_missing           records of the trip not held (gaps, lost ones included: _completeness)
      open                      1: no trip_end yet, the km are the consumer's estimate from positions"""
    dev, boot = t["device"], t["boot"]
    lo, hi = seq_range(t)
    if not t["closed"]:  # an open trip's records end at the next trip_start, if one is held
        nxt = db.execute("SELECT MIN(seq) FROM records WHERE device=? AND boot=? AND seq>? AND "
                         "type='trip_start'", (dev, boot, lo)).fetchone()[0]
        hi = nxt if nxt is not None else hi
    why = {}
    for reason, n in db.execute("SELECT reason, COUNT(*) FROM tampers WHERE device=? AND boot=? AND seq>?"
                                " AND seq<? GROUP BY reason", (dev, boot, lo, hi)).fetchall():
        if reason in KM_TAMPERS:
            why[reason] = n
    n_loop = db.execute("SELECT COUNT(*) FROM tampers WHERE device=? AND boot=? AND seq<? AND "
                        "reason='loop_fault'", (dev, boot, hi)).fetchone()[0]
    if n_loop >= LOOP_FAULT_RECORDS_MAX:
        why["loop_fault_cap"] = 1
    if t["closed"] and t.get("distance_m") is not None:
        # the odometer at the trip's start: firmware/app.py writes it right after the trip_start (same t_ms)
        start = db.execute("SELECT r.data FROM records r WHERE r.device=? AND r.boot=? AND r.seq=? AND "
                           "r.type='odometer'", (dev, boot, lo + 1)).fetchone()
        top = [r[0] for r in db.execute(
            "SELECT data FROM records WHERE device=? AND boot=? AND seq>? AND seq<? AND type='odometer'",
            (dev, boot, lo + 1, hi)).fetchall()]
        odo = [json.loads(d)["total_m"] for d in top]
        odo += [r[0] for r in db.execute("SELECT odometer_m FROM statuses WHERE device=? AND boot=? AND "
                                         "seq>? AND seq<?", (dev, boot, lo, hi)).fetchall()]
        if start is not None and odo:
            extra = max(odo) - json.loads(start[0])["total_m"] - t["distance_m"]
            if extra > ODOMETER_SLACK_M:
                why["odometer_extra_m"] = extra
        missing = t["records_expected"] - t["records_held"]
        if missing > 0:
            why["records_missing"] = missing
    if not t["closed"]:
        why["open"] = 1
    t["km_incomplete"] = bool(why)
    t["km_incomplete_reasons"] = why


def odometer_outside_trips_m(db, device, boot):
    """m the box's own odometer counted in boot `boot` outside the closed trips held: before the first,
    between two (the next one's start odometer, written right after its trip_start, against this one's
    start + distance_m) and after the last (the highest odometer reading after its trip_end), each beyond
    ODOMETER_SLACK_M (the two figures' rounding). A lost trip's km are here; so is what the box counted
    while a start was not confirmed. Trips without a start odometer are skipped (no figure to compare)."""
    reads = [(r[0], json.loads(r[1])["total_m"]) for r in db.execute(
        "SELECT seq, data FROM records WHERE device=? AND boot=? AND type='odometer'", (device, boot))]
    reads += [(r[0], r[1]) for r in db.execute(
        "SELECT seq, odometer_m FROM statuses WHERE device=? AND boot=? AND odometer_m IS NOT NULL",
        (device, boot))]
    if not reads:
        return 0
    at = dict(reads)
    reads.sort()
    out = 0
    prev = None  # (end seq, odometer at the end) of the trip before
    for trip, end, dist in db.execute("SELECT trip, end_seq, distance_m FROM trips WHERE device=? AND boot=?"
                                      " AND end_seq IS NOT NULL ORDER BY trip", (device, boot)).fetchall():
        start = at.get(trip + 1)
        if start is None:
            prev = None
            continue
        if prev is None:
            before = [v for q, v in reads if q < trip]
            base = before[0] if before else start
        else:
            base = prev[1]
        if start - base > ODOMETER_SLACK_M:
            out += start - base
        prev = (end, start + (dist or 0))
    if prev is not None:
        after = [v for q, v in reads if q > prev[0]]
        if after and max(after) - prev[1] > ODOMETER_SLACK_M:
            out += max(after) - prev[1]
    return out


def _towed(db, t):
    """`towed_m`: the part of the trip's distance after its first `towing` event began (moved with the
    ignition off, firmware/trip.py; the event's t_ms is when the tow began), in proportion of the path its
    positions draw before and after that time; the whole distance when the trip has no positions to tell
    (privacy no_positions). 0 for a trip that was not towed. An insurer bills distance driven: the bill
    leaves towed_m out (tools/consumer/bill.py)."""
    d = t.get("distance_m")
    if not t["towed"] or not d:
        t["towed_m"] = 0
        return
    pos = trip_positions(db, t)
    whole = path_length_m(pos)
    if whole <= 0:
        t["towed_m"] = d
        return
    t0 = t["tow_start_t_ms"]
    after = path_length_m([p for p in pos if p["t_ms"] >= t0])
    # the step into the tow (last fix before it began, first one after) is the tow's
    before = [p for p in pos if p["t_ms"] < t0]
    first = next((p for p in pos if p["t_ms"] >= t0), None)
    if before and first is not None:
        after += path_length_m([before[-1], first])
    t["towed_m"] = int(round(d * min(1.0, after / whole)))


# a resting 12 V lead-acid battery: ~12.6 V full, ~12.2 V half charged, ~12.0 V a quarter (the usual rule of
# thumb for a flooded battery at rest); also where the box ends its cut-off (cutoff_mv + cutoff_hyst_mv)
LOW_BATTERY_MV = 12200
SUPPLY_MAX_AGE_MS = 6 * 3600 * 1000  # a reading older than this (box time) says nothing of this trip


def _supply(db, t):
    """The car battery as the box read it (status records' supply_mv), for a fleet operator: at the trip
    start (the last reading at or before its trip_start, in the same boot: the box writes a status when it
    wakes, so the resting voltage before the crank) and at its end (the last reading at or before its
    trip_end: the same reading when none came during the trip). Readings older than SUPPLY_MAX_AGE_MS of
    box time are not the trip's (None). `low_battery`: the start reading below LOW_BATTERY_MV (None when
    unknown)."""
    lo = t["start_seq"] if t.get("start_seq") is not None else t["trip"]
    ends = [(lo, t.get("start_t_ms"), "supply_start")]
    if t.get("end_seq") is not None:
        ends.append((t["end_seq"], t.get("end_t_ms"), "supply_end"))
    else:
        t["supply_end_mv"] = t["supply_end_t_ms"] = None
    for seq, at_ms, name in ends:
        r = db.execute("SELECT supply_mv, t_ms FROM statuses WHERE device=? AND boot=? AND seq<=?"
                       " AND supply_mv IS NOT NULL ORDER BY seq DESC LIMIT 1",
                       (t["device"], t["boot"], seq)).fetchone()
        if r is not None and at_ms is not None and r[1] is not None and at_ms - r[1] > SUPPLY_MAX_AGE_MS:
            r = None
        t[name + "_mv"] = r[0] if r is not None else None
        t[name + "_t_ms"] = r[1] if r is not None else None
    mv = t["supply_start_mv"]
    t["low_battery"] = None if mv is None else mv < LOW_BATTERY_MV


def _completeness(db, t):
    """Records expected against records held. A closed trip spans the seqs [trip_start, trip_end] (seqs
    are contiguous within a boot), so it expects end_seq - trip + 1 records and is `complete` only when all
    are held; `gaps` are the missing ranges, `records_lost` those the agent and the box reported gone. An
    open trip (no trip_end yet) expects at least up to its highest held record and is never complete."""
    lo = t["trip"]
    hi = t["end_seq"] if t.get("end_seq") is not None else None
    if hi is None:
        nxt = db.execute("SELECT MIN(seq) FROM records WHERE device=? AND boot=? AND seq>? AND "
                         "type='trip_start'",
                         (t["device"], t["boot"], lo)).fetchone()[0]
        top = db.execute("SELECT MAX(seq) FROM records WHERE device=? AND boot=? AND seq>=? AND seq<?",
                         (t["device"], t["boot"], lo, nxt if nxt is not None else 1 << 62)).fetchone()[0]
        hi = top if top is not None else lo
    held = db.execute("SELECT COUNT(*) FROM records WHERE device=? AND boot=? AND seq>=? AND seq<=?",
                      (t["device"], t["boot"], lo, hi)).fetchone()[0]
    cov = coverage(db, t["device"], t["boot"])
    holes = subtract(lo, hi, cov)
    lost = [(r[0], r[1]) for r in db.execute("SELECT lo, hi FROM lost WHERE device=? AND boot=? ORDER BY lo",
                                             (t["device"], t["boot"]))]
    n_lost = 0
    for a, b in holes:
        for c, d in lost:
            n_lost += max(0, min(b, d) - max(a, c) + 1)
    t["records_expected"] = hi - lo + 1
    t["records_held"] = held
    t["records_lost"] = n_lost
    t["gaps"] = [list(h) for h in holes]
    t["complete"] = bool(t["closed"] and held == hi - lo + 1)


def get_trip(db, trip_id):
    """TRIP is the trips.id shown by `paydbox trips`, or DEVICE:BOOT:TRIP."""
    s = str(trip_id)
    if ":" in s:
        parts = s.rsplit(":", 2)
        if len(parts) != 3:
            raise ValueError("trip: expected ID or DEVICE:BOOT:TRIP, got %r" % s)
        r = db.execute("SELECT * FROM trips WHERE device=? AND boot=? AND trip=?",
                       (parts[0], int(parts[1]), int(parts[2]))).fetchone()
    else:
        try:
            r = db.execute("SELECT * FROM trips WHERE id=?", (int(s),)).fetchone()
        except ValueError:
            raise ValueError("trip: expected ID or DEVICE:BOOT:TRIP, got %r" % s)
    if r is None:
        raise LookupError("trip %s: not in the database (see `paydbox trips`)" % s)
    return trip_row(db, r)


def seq_range(t):
    """Exclusive seq bounds of a trip's records: after its trip_start, before its trip_end."""
    lo = t["start_seq"] if t.get("start_seq") is not None else t["trip"]
    hi = t["end_seq"] if t.get("end_seq") is not None else (1 << 62)
    return lo, hi


def trip_positions(db, t):
    lo, hi = seq_range(t)
    rows = db.execute("SELECT * FROM positions WHERE device=? AND boot=? AND seq>? AND seq<? ORDER BY seq",
                      (t["device"], t["boot"], lo, hi)).fetchall()
    if t.get("end_seq") is None:  # open trip: stop at the next trip_start
        nxt = db.execute("SELECT MIN(seq) FROM records WHERE device=? AND boot=? AND seq>? AND "
                         "type='trip_start'",
                         (t["device"], t["boot"], lo)).fetchone()[0]
        if nxt is not None:
            rows = [r for r in rows if r["seq"] < nxt]
    return [dict(r) for r in rows]


def trip_events(db, t):
    lo, hi = seq_range(t)
    ev = [dict(r) for r in db.execute(
        "SELECT * FROM events WHERE device=? AND boot=? AND seq>? AND seq<? ORDER BY seq",
        (t["device"], t["boot"], lo, hi)).fetchall()]
    for r in db.execute("SELECT device, boot, seq, t_ms, utc_s, peak_mg, lat_e7, lon_e7, speed_mmps FROM "
                        "crashes WHERE device=? AND boot=? AND seq>? AND seq<? ORDER BY seq",
                        (t["device"], t["boot"], lo, hi)).fetchall():
        d = dict(r)
        d["kind"] = "crash"
        ev.append(d)
    ev.sort(key=lambda e: e["seq"])
    return ev


def haversine_m(lat1_e7, lon1_e7, lat2_e7, lon2_e7):
    import math
    la1, lo1, la2, lo2 = (math.radians(v / 1e7) for v in (lat1_e7, lon1_e7, lat2_e7, lon2_e7))
    a = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(a)))


def path_length_m(pos):
    d = 0.0
    for a, b in zip(pos, pos[1:]):
        d += haversine_m(a["lat_e7"], a["lon_e7"], b["lat_e7"], b["lon_e7"])
    return d
