"""Shared plumbing of the agent's TCP outputs (Traccar Codec 8 Extended, OsmAnd HTTP): a non-blocking
connection driven from the agent's single loop, reconnect backoff with full jitter (monotonic time), and
the row-by-row delivery both outputs run (`RowForwarder`)."""
import errno
import logging
import random
import socket
import time

log = logging.getLogger("paydbox.agent.out")


class LinkDown(Exception):
    pass


class Conn:
    """A non-blocking TCP connection: connect() then poll() every loop pass; send() queues bytes,
    recv_into_buffer() appends what arrived to self.rx. LinkDown on any failure or peer close."""

    def __init__(self, host, port):
        self.host, self.port = host, int(port)
        self.sock = None
        self.connected = False
        self.tx = bytearray()
        self.rx = bytearray()

    def connect(self):
        try:
            addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        except OSError as e:
            raise LinkDown("cannot resolve %s: %s" % (self.host, e))
        s = socket.socket(addr[0], socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(addr[4])
        if rc not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            s.close()
            raise LinkDown("connect %s:%d: %s" % (self.host, self.port, errno.errorcode.get(rc, rc)))
        self.sock = s
        self.connected = rc == 0

    def poll(self):
        """Advance connect and send; read what is there. Returns True once connected."""
        import select

        s = self.sock
        if s is None:
            raise LinkDown("not connected")
        r, w, _ = select.select([s], [s] if (not self.connected or self.tx) else [], [], 0)
        if not self.connected:
            if not w:
                return False
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise LinkDown("connect %s:%d: %s" % (self.host, self.port, errno.errorcode.get(err, err)))
            self.connected = True
        if self.tx and w:
            try:
                n = s.send(self.tx)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                raise LinkDown("send: %s" % e)
            del self.tx[:n]
        if r:
            try:
                d = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                d = None
            except OSError as e:
                raise LinkDown("recv: %s" % e)
            if d == b"":
                raise LinkDown("closed by the server")
            if d:
                self.rx += d
        return True

    def send(self, data):
        self.tx += data

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.connected = False
        self.tx = bytearray()
        self.rx = bytearray()


class Backoff:
    def __init__(self, lo=0.5, hi=60.0):
        self.lo, self.hi = float(lo), float(hi)
        self.attempt = 0

    def next_delay(self, at_least=0.0):
        self.attempt += 1
        cap = min(self.hi, self.lo * 2 ** min(self.attempt, 20))
        return max(at_least, random.uniform(self.lo / 2, cap))

    def reset(self):
        self.attempt = 0


class RowForwarder:
    """What both TCP outputs share: one queue row at a time (its records mapped to AVL by
    teltonika.Mapper, the mapper's state saved with the row), this output's progress on the row saved
    after every accepted record, the row done for this output when all are accepted; any LinkDown
    closes the connection and retries after a backoff. A subclass gives `name`, the counter a link
    error bumps, `_opened(now)` and `_step(now, device)` (its protocol), and calls `_next_records()` and
    `_accepted(first, n)`."""

    name = None
    link_error_counter = "link_errors"

    def __init__(self, cfg, delivery, host, port, counters):
        from edge_agent import teltonika

        self.host, self.port = host, port
        self.refused_retry_s = float(cfg.get("refused_retry_s", 60))
        self.backoff = Backoff(cfg.get("backoff_min_s", 0.5), cfg.get("backoff_max_s", 60))
        self.delivery = delivery
        self.mapper = teltonika.Mapper(delivery.load_state(self.name))
        self.conn = None
        self.state = "down"
        self.next_try = 0.0
        self.t_sent = 0.0
        self.current = None  # (qid, [avl records], sent) of the row being delivered
        self.last_error = ""
        self.counters = dict(counters)
        self.counters.update(records=0, rows=0, undecodable=0)
        self.log = logging.getLogger("paydbox.agent." + self.name)

    def _on_down(self):
        """Subclass hook: the connection just went down."""

    def _opened(self, now):
        """Subclass hook: a new connection is under way (self.conn); set the protocol's first state."""

    def _down(self, why, delay=0.0):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self._on_down()
        self.state = "down"
        self.last_error = why
        d = self.backoff.next_delay(delay or 0.0)
        self.next_try = time.monotonic() + d
        self.log.warning("%s %s:%d: %s (retry in %.1f s)", self.name, self.host, self.port, why, d)

    def step(self, now, device):
        if device is None:
            return
        try:
            if self.state == "down":
                if now < self.next_try:
                    return
                self.conn = Conn(self.host, self.port)
                self.conn.connect()
                self._opened(now)
            self._step(now, device)
        except LinkDown as e:
            self.counters[self.link_error_counter] += 1
            self._down(str(e))

    def _load_row(self):
        from edge_agent import teltonika

        rows = self.delivery.head(self.name, 1)
        if not rows:
            return False
        qid, _dev, _boot, _fs, _ls, _prio, block, sent = rows[0]
        try:
            hdr, recs = teltonika.records_of_block(block)
        except Exception as e:  # noqa: BLE001  (decoder.CodecError: a block this output cannot read)
            self.counters["undecodable"] += 1
            self.log.error("%s: queue row %d cannot be decoded (%s); skipped for this output", self.name, qid,
                           e)
            self.delivery.done(self.name, [qid])
            return True
        avl = [a for _seq, a in self.mapper.map_block(hdr, recs)]
        self.delivery.save_state(self.name, self.mapper.state)
        self.current = (qid, avl, min(sent, len(avl)))
        return True

    def _next_records(self):
        """(qid, avl, sent) of the row to send from (rows loaded and finished as needed), None when the
        queue holds nothing for this output."""
        while self.current is None or self.current[2] >= len(self.current[1]):
            if self.current is not None:
                self._row_done()
            if not self._load_row():
                return None
        return self.current

    def _accepted(self, first, n):
        """The server accepted n records of the current row from index `first` on."""
        qid, avl, _sent = self.current
        self.counters["records"] += n
        self.current = (qid, avl, first + n)
        if first + n >= len(avl):
            self._row_done()
        else:
            self.delivery.progress(self.name, qid, first + n)

    def _row_done(self):
        qid = self.current[0]
        self.current = None
        self.delivery.done(self.name, [qid])
        self.counters["rows"] += 1

    def stats(self):
        return {"state": self.state, "pending_rows": self.delivery.pending(self.name),
                "last_error": self.last_error, "counters": dict(self.counters)}

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None
