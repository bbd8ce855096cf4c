"""Durable agent queue: SQLite in WAL mode with synchronous=FULL.

A block is inserted (and committed, fsync'd) before the agent acknowledges it to the box, and deleted
only after the broker's PUBACK for it. The `seen` table remembers (device, first_seq) of recently
stored blocks so a block the box retransmits (lost ACK, agent restart) is acknowledged again but not
queued twice. Sequence numbers never repeat for a device (firmware/store.py), so (device, first_seq)
identifies a block across box reboots.
"""
import os
import shutil
import sqlite3

SEEN_KEEP = 200_000  # remembered (device, first_seq) pairs for duplicate suppression

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
"""


class QueueFull(Exception):
    pass


class Queue:
    def __init__(self, path, max_bytes=50_000_000, min_free_bytes=0, resume_ratio=0.9):
        if max_bytes <= 0:
            raise ValueError("queue max_bytes: must be > 0, got %r" % (max_bytes,))
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.path = path
        self.dir = d
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.resume_ratio = resume_ratio
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        r = self.db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(block)), 0) FROM q").fetchone()
        self.rows, self.bytes = r[0], r[1]
        self.full = False
        self._since_prune = 0
        self._check_full()

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

    # ---- writes
    def add_batch(self, device, boot, items):
        """items: [(first_seq, last_seq, prio, block)]. Stores what fits in one transaction (committed
        and fsync'd on return). Returns (ack, refused): first_seqs safe to acknowledge to the box
        (stored now or already seen) and first_seqs refused because the queue is full."""
        ack = []
        refused = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for first_seq, last_seq, prio, block in items:
                r = cur.execute("SELECT 1 FROM seen WHERE device=? AND first_seq=?", (device, first_seq)).fetchone()
                if r is not None:
                    ack.append(first_seq)
                    continue
                if self._check_full() or self.bytes + len(block) > self.max_bytes:
                    self.full = True
                    refused.append(first_seq)
                    continue
                cur.execute(
                    "INSERT INTO q(device, boot, first_seq, last_seq, prio, block) VALUES (?,?,?,?,?,?)",
                    (device, boot, first_seq, last_seq, prio, bytes(block)),
                )
                cur.execute("INSERT INTO seen(device, first_seq) VALUES (?,?)", (device, first_seq))
                self.rows += 1
                self.bytes += len(block)
                self._since_prune += 1
                ack.append(first_seq)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            r = self.db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(block)), 0) FROM q").fetchone()
            self.rows, self.bytes = r[0], r[1]
            raise
        if self._since_prune > 10_000:
            self._prune_seen()
        return ack, refused

    def _prune_seen(self):
        self._since_prune = 0
        self.db.execute("DELETE FROM seen WHERE id < (SELECT MAX(id) FROM seen) - ?", (SEEN_KEEP,))

    def delete(self, ids):
        if not ids:
            return
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for i in ids:
                r = cur.execute("SELECT LENGTH(block) FROM q WHERE id=?", (i,)).fetchone()
                if r is None:
                    continue
                cur.execute("DELETE FROM q WHERE id=?", (i,))
                self.rows -= 1
                self.bytes -= r[0]
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._check_full()

    # ---- reads
    def head(self, n, skip_ids=()):
        """Up to n rows not in skip_ids, crash (highest prio) first, then oldest:
        [(id, device, boot, first_seq, last_seq, prio, block)]."""
        out = []
        limit = n + len(skip_ids)
        for row in self.db.execute(
            "SELECT id, device, boot, first_seq, last_seq, prio, block FROM q ORDER BY prio DESC, id LIMIT ?",
            (limit,),
        ):
            if row[0] in skip_ids:
                continue
            out.append(row)
            if len(out) >= n:
                break
        return out

    def ids(self):
        return [r[0] for r in self.db.execute("SELECT id FROM q")]

    def close(self):
        try:
            self.db.close()
        except sqlite3.Error:
            pass
