"""Durable agent queue: SQLite in WAL mode with synchronous=FULL.

Lifecycle of a row (docs/mqtt-topics.md, "End-to-end delivery"):
- `pending` (state 0): inserted and committed (fsync'd) before the agent acknowledges the block to the
  box. It stays pending through the broker's PUBACK: only the consumer's end-to-end acknowledgement
  (it has committed every record of the block) moves it on.
- `archived` (state 1): acknowledged end to end. Kept, within `archive_max_bytes` (oldest pruned first),
  so a consumer that asks for a range again (gap repair, a restored database) can be served.
- `quarantined` (state 2): a block whose own CRC or header does not check (a box's flash damage, a
  forged frame). Acknowledged to the box so it does not block its window, never forwarded, never deleted
  by the agent, counted in the status.

Capacity: only pending bytes count against `max_bytes`. At the limit the agent stops acknowledging the
box (back-pressure: the box keeps the data), or with `on_full = "drop_oldest"` drops the oldest pending
rows of the lowest priority and says so (counters `dropped_blocks` / `dropped_records`, alarm).

The `seen` table remembers (device, first_seq) of recently stored blocks so a block the box retransmits
(lost ACK, agent restart) is acknowledged again but not queued twice. Sequence numbers never repeat for
a device (firmware/store.py), so (device, first_seq) identifies a block across box reboots.
"""
import os
import shutil
import sqlite3

SEEN_KEEP = 200_000  # remembered (device, first_seq) pairs for duplicate suppression
PENDING = 0
ARCHIVED = 1
QUARANTINED = 2
ON_FULL = ("backpressure", "drop_oldest")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS q(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    prio INTEGER NOT NULL,
    block BLOB NOT NULL,
    UNIQUE(device, first_seq)
);
CREATE INDEX IF NOT EXISTS q_order ON q(prio DESC, id);
CREATE TABLE IF NOT EXISTS seen(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    UNIQUE(device, first_seq)
);
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT);
"""



def first_rows(rows, n, skip_ids=()):
    """The first n of `rows` whose id (row[0]) is not in skip_ids (the queue's and the outputs' head)."""
    out = []
    for row in rows:
        if row[0] in skip_ids:
            continue
        out.append(row)
        if len(out) >= n:
            break
    return out

class QueueFull(Exception):
    pass


class Queue:
    def __init__(self, path, max_bytes=50_000_000, min_free_bytes=0, resume_ratio=0.9,
                 archive_max_bytes=10_000_000, on_full="backpressure"):
        if max_bytes <= 0:
            raise ValueError("queue max_bytes: must be > 0, got %r" % (max_bytes,))
        if archive_max_bytes < 0:
            raise ValueError("queue archive_max_bytes: must be >= 0, got %r" % (archive_max_bytes,))
        if on_full not in ON_FULL:
            raise ValueError("queue on_full: %r is not one of %s" % (on_full, ", ".join(ON_FULL)))
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.path = path
        self.dir = d
        self.max_bytes = int(max_bytes)
        self.archive_max_bytes = int(archive_max_bytes)
        self.on_full = on_full
        self.min_free_bytes = int(min_free_bytes)
        self.resume_ratio = resume_ratio
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(q)")]
        if "state" not in cols:  # a queue written by an older agent: every row is pending
            self.db.execute("ALTER TABLE q ADD COLUMN state INTEGER NOT NULL DEFAULT 0")
        self.db.execute("CREATE INDEX IF NOT EXISTS q_state ON q(state, id)")
        self.dropped_blocks = 0
        self.dropped_records = 0
        self._recount()
        self.full = False
        self._since_prune = 0
        self._check_full()

    def _recount(self):
        self.rows = self.bytes = self.archive_rows = self.archive_bytes = self.quarantined = 0
        for state, n, b in self.db.execute(
                "SELECT state, COUNT(*), COALESCE(SUM(LENGTH(block)), 0) FROM q GROUP BY state"):
            if state == PENDING:
                self.rows, self.bytes = n, b
            elif state == ARCHIVED:
                self.archive_rows, self.archive_bytes = n, b
            else:
                self.quarantined += n

    # ---- identity (an agent is bound to one box: the first it ever stored, or the configured one)
    def get_meta(self, k):
        r = self.db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return r[0] if r else None

    def set_meta(self, k, v):
        self.db.execute("INSERT INTO meta(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                        (k, v))

    # ---- capacity
    def _disk_low(self):
        if not self.min_free_bytes:
            return False
        try:
            return shutil.disk_usage(self.dir).free < self.min_free_bytes
        except OSError:
            return True

    def _check_full(self):
        if self.full:
            if self.bytes <= self.max_bytes * self.resume_ratio and not self._disk_low():
                self.full = False
        elif self.bytes >= self.max_bytes or self._disk_low():
            self.full = True
        return self.full

    def _drop_for(self, cur, need):
        """drop_oldest policy: delete the oldest pending rows of the lowest priority until `need` bytes fit.
        Returns [(id, first_seq, last_seq)] dropped (the caller reports them)."""
        out = []
        while self.bytes + need > self.max_bytes * self.resume_ratio:
            r = cur.execute("SELECT id, first_seq, last_seq, LENGTH(block) FROM q WHERE state=0"
                            " ORDER BY prio, id LIMIT 1").fetchone()
            if r is None:
                break
            cur.execute("DELETE FROM q WHERE id=?", (r[0],))
            self.rows -= 1
            self.bytes -= r[3]
            self.dropped_blocks += 1
            self.dropped_records += r[2] - r[1] + 1
            out.append((r[0], r[1], r[2]))
        return out

    # ---- writes
    def add_batch(self, device, boot, items, wanted=None, quarantine=()):
        """items: [(first_seq, last_seq, prio, block)]. Stores what fits in one transaction (committed
        and fsync'd on return). `wanted(first_seq)`: True for a block asked for again (gap repair) that
        must be stored although it was seen before. `quarantine`: first_seqs to store as quarantined.
        Returns (ack, refused, stored, dropped): first_seqs safe to acknowledge to the box (stored now or
        already seen), first_seqs refused because the queue is full, [(id, first_seq, last_seq, prio)]
        stored pending now, and [(id, first_seq, last_seq)] dropped by the drop_oldest policy."""
        ack = []
        refused = []
        stored = []
        dropped = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for first_seq, last_seq, prio, block in items:
                if first_seq in quarantine:
                    cur.execute("INSERT OR IGNORE INTO q(device, boot, first_seq, last_seq, prio, block, "
                                "state) VALUES (?,?,?,?,?,?,2)",
                                (device, boot, first_seq, last_seq, prio, bytes(block)))
                    if cur.rowcount:
                        self.quarantined += 1
                    ack.append(first_seq)
                    continue
                r = cur.execute("SELECT 1 FROM seen WHERE device=? AND first_seq=?",
                                (device, first_seq)).fetchone()
                if r is not None:
                    inq = cur.execute("SELECT 1 FROM q WHERE device=? AND first_seq=?",
                                      (device, first_seq)).fetchone()
                    if inq is not None or wanted is None or not wanted(first_seq):
                        ack.append(first_seq)
                        continue
                if self._check_full() or self.bytes + len(block) > self.max_bytes:
                    if self.on_full == "drop_oldest":
                        dropped += self._drop_for(cur, len(block))
                        self._check_full()
                    if self.full or self.bytes + len(block) > self.max_bytes:
                        self.full = True
                        refused.append(first_seq)
                        continue
                cur.execute(
                    "INSERT INTO q(device, boot, first_seq, last_seq, prio, block, state) VALUES "
                    "(?,?,?,?,?,?,0)",
                    (device, boot, first_seq, last_seq, prio, bytes(block)),
                )
                stored.append((cur.lastrowid, first_seq, last_seq, prio))
                cur.execute("INSERT OR IGNORE INTO seen(device, first_seq) VALUES (?,?)", (device, first_seq))
                self.rows += 1
                self.bytes += len(block)
                self._since_prune += 1
                ack.append(first_seq)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            self._recount()
            raise
        if self._since_prune > 10_000:
            self._prune_seen()
        return ack, refused, stored, dropped

    def _prune_seen(self):
        self._since_prune = 0
        self.db.execute("DELETE FROM seen WHERE id < (SELECT MAX(id) FROM seen) - ?", (SEEN_KEEP,))

    def archive(self, ids):
        """Rows acknowledged end to end: pending -> archived (then the archive is pruned to its bound)."""
        if not ids:
            return
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for i in ids:
                r = cur.execute("SELECT LENGTH(block) FROM q WHERE id=? AND state=0", (i,)).fetchone()
                if r is None:
                    continue
                if self.archive_max_bytes:
                    cur.execute("UPDATE q SET state=1 WHERE id=?", (i,))
                    self.archive_rows += 1
                    self.archive_bytes += r[0]
                else:
                    cur.execute("DELETE FROM q WHERE id=?", (i,))
                self.rows -= 1
                self.bytes -= r[0]
            while self.archive_bytes > self.archive_max_bytes:
                r = cur.execute(
                    "SELECT id, LENGTH(block) FROM q WHERE state=1 ORDER BY id LIMIT 1").fetchone()
                if r is None:
                    break
                cur.execute("DELETE FROM q WHERE id=?", (r[0],))
                self.archive_rows -= 1
                self.archive_bytes -= r[1]
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            self._recount()
            raise
        self._check_full()

    # the old name: PUBACK-only delivery (mqtt.e2e_ack = false) archives at the broker's PUBACK
    delete = archive

    def unarchive(self, device, boot, lo, hi):
        """Archived rows of (device, boot) overlapping seqs lo..hi become pending again (a consumer asked
        for them). Returns [(id, first_seq, last_seq, prio)] and the covered [first, last] spans."""
        out = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for rid, fs, ls, prio, ln in cur.execute(
                    "SELECT id, first_seq, last_seq, prio, LENGTH(block) FROM q WHERE device=? AND boot=?"
                    " AND state=1 AND first_seq<=? AND last_seq>=?", (device, boot, hi, lo)).fetchall():
                cur.execute("UPDATE q SET state=0 WHERE id=?", (rid,))
                self.archive_rows -= 1
                self.archive_bytes -= ln
                self.rows += 1
                self.bytes += ln
                out.append((rid, fs, ls, prio))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            self._recount()
            raise
        return out

    # ---- reads
    def get(self, rid):
        """(id, device, boot, first_seq, last_seq, prio, block) of a pending row, or None."""
        return self.db.execute("SELECT id, device, boot, first_seq, last_seq, prio, block FROM q"
                               " WHERE id=? AND state=0", (rid,)).fetchone()

    def pending(self):
        """[(id, boot, first_seq, last_seq, prio)] of every pending row, in id order (no blocks)."""
        return self.db.execute("SELECT id, boot, first_seq, last_seq, prio FROM q WHERE state=0 ORDER BY id"
                               ).fetchall()

    def spans(self, device, boot, lo, hi):
        """[(first_seq, last_seq)] of pending or archived rows of (device, boot) overlapping lo..hi."""
        return self.db.execute("SELECT first_seq, last_seq FROM q WHERE device=? AND boot=? AND state<2"
                               " AND first_seq<=? AND last_seq>=? ORDER BY first_seq",
                               (device, boot, hi, lo)).fetchall()

    def head(self, n, skip_ids=()):
        """Up to n pending rows not in skip_ids, crash (highest prio) first, then oldest:
        [(id, device, boot, first_seq, last_seq, prio, block)]."""
        return first_rows(self.db.execute(
            "SELECT id, device, boot, first_seq, last_seq, prio, block FROM q WHERE state=0"
            " ORDER BY prio DESC, id LIMIT ?", (n + len(skip_ids),)), n, skip_ids)

    def ids(self):
        return [r[0] for r in self.db.execute("SELECT id FROM q WHERE state=0")]

    def sync(self):
        """Before a power-off: every commit is already durable (WAL, synchronous=FULL); the WAL is
        checkpointed into the database file and truncated, so the file alone holds everything."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self):
        try:
            self.db.close()
        except sqlite3.Error:
            pass
