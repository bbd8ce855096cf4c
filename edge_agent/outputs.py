"""Per-output delivery state of the agent's queue (same SQLite file, own tables).

With more than one output configured (MQTT, Traccar, OsmAnd) a queue row leaves the pending queue
(edge_agent/queue.py: pending -> archived) only when every output is done with it. MQTT is done at the
consumer's end-to-end acknowledgement (or the PUBACK with `mqtt.e2e_ack = false`). Each output's progress on a
row is a row of `out_done`
(qid = queue row id, output name, `sent` = records of the block the output has delivered, `done`).
An output that delivers a block in pieces (Traccar: AVL packets of at most 1280 bytes) records the
pieces acknowledged so far, so a restart resends only the unacknowledged rest.
With MQTT alone nothing here is written: rows are archived as before. A row the consumer asks for
again (queue.unarchive) is MQTT's business only: its other outputs stay done.
"""
import json

from edge_agent.queue import first_rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS out_done(
    qid INTEGER NOT NULL,
    output TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(qid, output)
);
CREATE TABLE IF NOT EXISTS out_state(
    output TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
"""


class Delivery:
    def __init__(self, queue, outputs):
        """outputs: names of the configured outputs (e.g. ["mqtt", "traccar"])."""
        if not outputs:
            raise ValueError("agent: no output configured (mqtt, traccar or osmand)")
        self.queue = queue
        self.outputs = list(outputs)
        self.db = queue.db
        self.db.executescript(_SCHEMA)
        # rows of a previous run whose outputs were since removed from the config count as done for them
        self._forget_gone()

    def _forget_gone(self):
        marks = ",".join("?" * len(self.outputs))
        self.db.execute("DELETE FROM out_done WHERE output NOT IN (%s)" % marks, self.outputs)
        self._collect(None)

    @property
    def shared(self):
        return len(self.outputs) > 1

    def head(self, output, n, skip_ids=()):
        """Up to n queue rows `output` has not finished, crash first then oldest (as Queue.head), with
        the number of records already delivered: [(id, device, boot, first_seq, last_seq, prio, block,
        sent)]."""
        return first_rows(self.db.execute(
            "SELECT q.id, q.device, q.boot, q.first_seq, q.last_seq, q.prio, q.block, COALESCE(d.sent, 0) "
            "FROM q LEFT JOIN out_done d ON d.qid = q.id AND d.output = ? "
            "WHERE q.state = 0 AND COALESCE(d.done, 0) = 0 ORDER BY q.prio DESC, q.id LIMIT ?",
            (output, n + len(skip_ids))), n, skip_ids)

    def progress(self, output, qid, sent):
        """`output` has delivered the first `sent` records of row qid (committed on return)."""
        self.db.execute(
            "INSERT INTO out_done(qid, output, sent, done) VALUES (?,?,?,0) "
            "ON CONFLICT(qid, output) DO UPDATE SET sent = excluded.sent", (qid, output, sent))

    def done_ids(self, output):
        """Pending rows `output` has finished (the agent does not schedule them for it again)."""
        return {r[0] for r in self.db.execute(
            "SELECT d.qid FROM out_done d JOIN q ON q.id = d.qid WHERE d.output = ? AND d.done = 1 AND "
            "q.state = 0",
            (output,))}

    def done(self, output, ids):
        """`output` is finished with these rows; rows every output has finished leave the pending queue."""
        ids = list(ids)
        if not ids:
            return
        if not self.shared:
            self.queue.archive(ids)
            if output != "mqtt":
                self.db.executemany("DELETE FROM out_done WHERE qid = ?", [(i,) for i in ids])
            return
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for i in ids:
                cur.execute(
                    "INSERT INTO out_done(qid, output, sent, done) VALUES (?,?,0,1) "
                    "ON CONFLICT(qid, output) DO UPDATE SET done = 1", (i, output))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._collect(ids)

    def _collect(self, ids):
        n = len(self.outputs)
        marks = ",".join("?" * n)
        q = ("SELECT qid FROM out_done WHERE done = 1 AND output IN (%s) %s GROUP BY qid HAVING COUNT(*) = ?"
             % (marks, "" if ids is None else "AND qid IN (%s)" % ",".join("?" * len(ids))))
        args = list(self.outputs) + ([] if ids is None else list(ids)) + [n]
        pending = {r[0] for r in self.db.execute("SELECT id FROM q WHERE state = 0")} if ids is None else {
            r[0] for r in self.db.execute("SELECT id FROM q WHERE state = 0 AND id IN (%s)"
                                          % ",".join("?" * len(ids)), list(ids))}
        finished = [r[0] for r in self.db.execute(q, args) if r[0] in pending]
        if finished:
            self.queue.archive(finished)
            # an archived row asked for again (gap repair) is MQTT's to send again, not the others'
            self.db.executemany("DELETE FROM out_done WHERE qid = ? AND output = 'mqtt'",
                                [(i,) for i in finished])
        # progress rows of queue rows gone (archive pruned, drop_oldest)
        self.db.execute("DELETE FROM out_done WHERE qid NOT IN (SELECT id FROM q)")

    def pending(self, output):
        """Queue rows `output` has not finished."""
        if not self.shared:
            return self.queue.rows
        r = self.db.execute("SELECT COUNT(*) FROM q LEFT JOIN out_done d ON d.qid = q.id AND d.output = ? "
                            "WHERE q.state = 0 AND COALESCE(d.done, 0) = 0", (output,)).fetchone()
        return r[0]

    # small JSON state per output (e.g. the Traccar mapper's trip odometer bases)
    def load_state(self, output):
        r = self.db.execute("SELECT state FROM out_state WHERE output = ?", (output,)).fetchone()
        return json.loads(r[0]) if r else {}

    def save_state(self, output, state):
        self.db.execute("INSERT INTO out_state(output, state) VALUES (?, ?) "
                        "ON CONFLICT(output) DO UPDATE SET state = excluded.state",
                        (output, json.dumps(state)))
