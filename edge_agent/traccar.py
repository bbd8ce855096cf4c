"""Traccar output of the edge agent: Teltonika Codec 8 Extended over TCP (Traccar's `teltonika`
protocol, port 5027 by default).

    [traccar]
    host = "traccar.example.net"
    port = 5027
    imei = "356307042441013"     # the device's identifier in Traccar; default: the box's device id

Delivery (docs/traccar.md): login with the IMEI, wait for 01 (00 = refused: back off, nothing is
dropped); then one AVL packet at a time (records of one queue row, at most 1280 bytes), and the next
only after the server's 4-byte record count. A count equal to the packet's records moves this
output's progress on the row (edge_agent/outputs.py); the row leaves the queue once every output is
done with it. No answer within ack_timeout_s, a short count or a dropped connection: reconnect and
send the unacknowledged packet again. So nothing is lost, and a record reaches Traccar twice only when
its ACK was lost (at-least-once, as with MQTT QoS 1).
"""
import struct

from edge_agent import teltonika
from edge_agent.netout import LinkDown, RowForwarder

NAME = "traccar"


class TraccarForwarder(RowForwarder):
    name = NAME

    def __init__(self, cfg, delivery):
        if not cfg.get("host"):
            raise ValueError("traccar.host is required")
        RowForwarder.__init__(self, cfg, delivery, cfg["host"], int(cfg.get("port", 5027)),
                              {"connects": 0, "refused": 0, "packets": 0, "resent": 0, "ack_timeouts": 0,
                               "bad_acks": 0, "link_errors": 0})
        self.cfg = cfg
        self.imei = cfg.get("imei")
        if self.imei is not None:
            teltonika.login_packet(self.imei)  # ValueError now rather than at the first connection
        self.ack_timeout_s = float(cfg.get("ack_timeout_s", 30))
        self.packet_bytes = int(cfg.get("packet_bytes", teltonika.MAX_PACKET))
        # state: down, connecting, login, ready, wait_ack
        self.packet = None   # (i, j) of the packet waiting for its ACK

    # ---- connection
    def _on_down(self):
        if self.packet is not None:
            self.counters["resent"] += 1  # the packet in flight goes again on the next connection
        self.packet = None

    def _opened(self, now):
        self.state = "connecting"
        self.t_sent = now

    def _step(self, now, device):
        c = self.conn
        if self.state == "connecting":
            if not c.poll():
                if now - self.t_sent > self.ack_timeout_s:
                    raise LinkDown("connect timed out")
                return
            c.send(teltonika.login_packet(self.imei or device))
            self.state = "login"
            self.t_sent = now
            self.counters["connects"] += 1
        c.poll()
        if self.state == "login":
            if not c.rx:
                if now - self.t_sent > self.ack_timeout_s:
                    raise LinkDown("no answer to the login")
                return
            b = c.rx[0]
            del c.rx[:1]
            if b != 1:
                self.counters["refused"] += 1
                self._down("server refused IMEI %r (answer %02x)" % (self.imei or device, b),
                           self.refused_retry_s)
                return
            self.log.info("traccar %s:%d: logged in as %s", self.host, self.port, self.imei or device)
            self.backoff.reset()
            self.state = "ready"
        if self.state == "wait_ack":
            if len(c.rx) < 4:
                if now - self.t_sent > self.ack_timeout_s:
                    self.counters["ack_timeouts"] += 1
                    raise LinkDown("no ACK within %.0f s" % self.ack_timeout_s)
                return
            (n,) = struct.unpack(">I", bytes(c.rx[:4]))
            del c.rx[:4]
            self._on_ack(n)
        if self.state == "ready":
            self._send_next(now)

    # ---- delivery
    def _send_next(self, now):
        if self._next_records() is None:
            return
        qid, avl, sent = self.current
        i, j, pkt = teltonika.split_packets(avl[sent:], self.packet_bytes)[0]
        self.packet = (sent + i, sent + j)
        self.conn.send(pkt)
        self.conn.poll()
        self.t_sent = now
        self.state = "wait_ack"
        self.counters["packets"] += 1

    def _on_ack(self, n):
        i, j = self.packet
        self.packet = None
        self.state = "ready"
        if n == 0 or n > j - i:
            # Traccar answers the number of records it decoded; anything else is not an acceptance
            self.counters["bad_acks"] += 1
            raise LinkDown("ACK for %d records, %d sent" % (n, j - i))
        # n < j - i: the first n were accepted, the rest goes again
        self._accepted(i, n)

    def stats(self):
        st = RowForwarder.stats(self)
        st["skipped_no_time"] = self.mapper.skipped_no_time
        return st
