"""`paydbox ingest`: the reference MQTT consumer.

Subscribes (MQTT 5, QoS 1) with a shared subscription `$share/<group>/paydbox/+/+/records` so several
consumers split a fleet, on a persistent session (fixed client id, clean_start False, session expiry)
so messages published while it is down are delivered when it comes back. Each payload is one codec
block; it is decoded, deduplicated by (device, boot, seq) and stored in SQLite (tools/consumer/db.py).
Messages are acknowledged (manual PUBACK) only after the transaction holding them has committed:
a crash at any point loses nothing, a redelivery only produces counted duplicates.

Durability does not rest on the broker's session (a broker restart without persistence, or a shared
subscription the broker did not hold messages for, drops QoS 1 messages): after each commit the consumer
acknowledges end to end, on `paydbox/<fleet>/<device>/ack`, the seq ranges it holds for that (device,
boot); the agent keeps every block until then and publishes it again after a timeout. Holes in the held
ranges are asked for again on the device's `resend` topic, with backoff (gap repair).

Identity is the topic's fleet and device (bound to the authenticated client by the broker's ACL), never
the block header's: a block whose header names another device is quarantined.
"""
import hashlib
import json
import os
import queue
import socket
import sys
import threading
import time
from urllib.parse import urlparse

from edge_agent.mqtt import close_without_reset  # the agent's graceful close too (one home)
from tools.consumer import db as consumer_db

RECORDS_FILTER = "paydbox/+/+/records"
STATUS_FILTER = "paydbox/+/+/status"
# the agent publishes position blocks on .../records and every other block (events, trips, crash,
# tamper, status records) on .../events; both carry codec blocks
EVENTS_FILTER = "paydbox/+/+/events"
# the agent's answers to commands; the consumer reads the `resend` ones (ranges nobody holds any more)
RESULT_FILTER = "paydbox/+/+/cmd/result"
ACK_RANGES = 256  # seq ranges per end-to-end ack message (the newest)


class IngestError(Exception):
    """Consumer cannot run (bad broker URL, connection refused, subscription refused)."""


def add_arguments(p):
    p.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--db", default=consumer_db.DEFAULT_DB,
                   help="SQLite file or postgresql:// URL (default %(default)s)")
    p.add_argument("--group", default="paydbox", help="shared-subscription group (default %(default)s)")
    p.add_argument("--client-id", default=None,
                   help="fixed MQTT client id (default: derived from group, host and db path)")
    p.add_argument("--session-expiry", type=int, default=7 * 86400,
                   help="seconds the broker keeps the session while we are away (default 7 days)")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--cafile")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--batch", type=int, default=200, help="max messages per SQLite transaction")
    p.add_argument("--receive-maximum", type=int, default=200, help="unacked messages the broker may send")
    p.add_argument("--once-idle", type=float, default=None, metavar="S",
                   help="exit after S seconds without a message (counted from the first message)")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                   help="give up if the broker cannot be reached within S seconds (default: retry for ever)")
    p.add_argument("--repair-grace", type=float, default=10.0, metavar="S",
                   help="a gap older than S seconds is asked for again (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the final counters as JSON")


def parse_broker(url):
    u = urlparse(url if "://" in url else "mqtt://" + url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError("--broker: scheme must be mqtt:// or mqtts://, got %r" % url)
    tls = u.scheme in ("mqtts", "ssl")
    if not u.hostname:
        raise ValueError("--broker: no host in %r" % url)
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError("--broker: bad port in %r" % url)
    return u.hostname, port, tls, u.username, u.password


def default_client_id(group, db_path):
    h = hashlib.sha1(os.path.abspath(db_path).encode()).hexdigest()[:8]
    return "paydbox-ingest-%s-%s-%s" % (group, socket.gethostname()[:20], h)


def make_client(client_id, broker, username=None, password=None, cafile=None, cert=None, key=None,
                manual_ack=False, clean_start=False, session_expiry=0, receive_maximum=None):
    """A connected-ready paho 2.x MQTT 5 client (not yet connected). Returns (client, host, port, props)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    host, port, tls, url_user, url_pw = parse_broker(broker)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                    manual_ack=manual_ack)
    user = username or url_user
    if user:
        c.username_pw_set(user, password if password is not None else url_pw)
    if tls or cafile or cert:
        c.tls_set(ca_certs=cafile, certfile=cert, keyfile=key)
    props = Properties(PacketTypes.CONNECT)
    if session_expiry:
        props.SessionExpiryInterval = int(session_expiry)
    if receive_maximum:
        props.ReceiveMaximum = int(receive_maximum)
    c._pb_connect = (host, port, clean_start, props)
    return c


def connect(c, timeout=10.0):
    host, port, clean_start, props = c._pb_connect
    try:
        c.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
    except (OSError, socket.error) as e:
        raise IngestError("cannot connect to MQTT broker %s:%d: %s" % (host, port, e))


def _topic(topic):
    """(fleet, device, leaf) of paydbox/<fleet>/<device>/<leaf>, or None."""
    parts = topic.split("/", 3)
    if len(parts) != 4 or parts[0] != "paydbox" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2], parts[3]


class Consumer:
    """The ingest loop; usable in-process (tests, fleet-sim) or from the CLI."""

    def __init__(self, broker, db_path, group="paydbox", client_id=None, session_expiry=7 * 86400,
                 batch=200, receive_maximum=200, username=None, password=None, cafile=None, cert=None,
                 key=None, log=None, repair_grace_s=10.0, repair_every_s=2.0, e2e_ack=True):
        from firmware import decoder  # the one and only codec's reader (the box's encoder writes)

        self.decoder = decoder
        self.db_path = db_path
        self.db = consumer_db.connect(db_path)
        self.group = group
        self.client_id = client_id or default_client_id(group, db_path)
        self.batch = max(1, int(batch))
        self.log = log or (lambda s: None)
        self.e2e_ack = e2e_ack
        self.repair_grace_s = float(repair_grace_s)
        self.repair_every_s = float(repair_every_s)
        self.repair = {}  # (device, boot, lo, hi) -> [first seen, next ask, tries]
        self.last_repair = 0.0
        self.q = queue.Queue()
        self.subscribed = threading.Event()
        self.connect_error = None
        self.counters = {"messages": 0, "blocks": 0, "records_new": 0, "records_dup": 0, "damaged": 0,
                         "quarantined": 0, "status_msgs": 0, "unexpected_topic": 0, "device_mismatch": 0,
                         "reconnects": 0, "e2e_acks": 0, "repair_requests": 0, "lost_ranges": 0, "results": 0}
        self.first_msg_at = None
        self.last_msg_at = time.time()
        self.client = make_client(self.client_id, broker, username, password, cafile, cert, key,
                                  manual_ack=True, clean_start=False, session_expiry=session_expiry,
                                  receive_maximum=receive_maximum)
        self.client.reconnect_delay_set(0.5, 30)  # paho retries with doubling delays, for ever
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._connected_once = False
        self._closing = False

    # -- paho callbacks (network thread): no SQLite here, just queue the message
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.connect_error = "broker refused the connection: %s" % reason_code
            return
        if self._connected_once:
            self.counters["reconnects"] += 1
        self._connected_once = True
        from paho.mqtt.subscribeoptions import SubscribeOptions
        # subscribed again on every connect: a broker that lost its state (no persistence) forgot them
        client.subscribe([("$share/%s/%s" % (self.group, f), SubscribeOptions(qos=1))
                          for f in (RECORDS_FILTER, EVENTS_FILTER, STATUS_FILTER, RESULT_FILTER)])
        self.log("connected as %s (session present: %s)" % (self.client_id, flags.session_present))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            self.connect_error = "broker refused the subscription: %s" % bad[0]
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.subscribed.clear()
        if self._closing and not flags.is_disconnect_packet_from_server:
            # our DISCONNECT is written and paho closes the socket right after this callback
            close_without_reset(client.socket())

    def _on_message(self, client, userdata, msg):
        self.q.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time()))

    # -- worker side
    def start(self, timeout=None):
        """Connect and subscribe. While the broker is down it retries with backoff (for ever, or until
        `timeout` seconds: IngestError). A refused connection or subscription is an IngestError at once."""
        host, port, clean_start, props = self.client._pb_connect
        self.client.connect_async(host, port, keepalive=30, clean_start=clean_start, properties=props)
        self.client.loop_start()
        t0 = time.monotonic()
        said = False
        while not self.subscribed.wait(0.2):
            if self.connect_error:
                break
            waited = time.monotonic() - t0
            if timeout is not None and waited >= timeout:
                self.client.loop_stop()
                raise IngestError("cannot connect to MQTT broker %s:%d within %gs" % (host, port, timeout))
            if waited >= 2 and not said:
                self.log("broker %s:%d not reachable yet: retrying with backoff" % (host, port))
                said = True
        if self.connect_error:
            self.client.loop_stop()
            raise IngestError(self.connect_error)

    def _decode(self, topic, fleet, device, payload, received_at):
        item = {"topic": topic, "fleet": fleet, "device": device, "size": len(payload),
                "received_at": received_at}
        try:
            header, records = self.decoder.decode_block(payload)
        except Exception as e:  # CodecError (or anything a corrupt payload provokes): counted, not fatal
            item["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            item["payload"] = payload[:4096]
            self.log("damaged block on %s (%d bytes): %s" % (topic, len(payload), item["error"]))
            return item
        item["header"] = header
        item["records"] = records
        if str(header["device"]) != device:
            # the topic is the identity the broker authenticated: never file this under another device
            self.counters["device_mismatch"] += 1
            item["quarantine"] = "header names device %r, topic device %r" % (header["device"], device)
            item["payload"] = payload
            self.log("quarantined: block for device %s arrived on %s" % (header["device"], topic))
        return item

    def process(self, msgs):
        """Decode and store a batch of (topic, payload, mid, qos, t), acknowledge the committed blocks
        end to end, then PUBACK the messages (after the commit)."""
        items = []
        status = []
        results = []
        for topic, payload, mid, qos, t in msgs:
            ident = _topic(topic)
            if ident is None:
                self.counters["unexpected_topic"] += 1
            elif ident[2] == "status":
                status.append((ident, payload))
            elif ident[2] == "cmd/result":
                results.append((ident, payload))
            elif ident[2] in ("records", "events"):
                items.append(self._decode(topic, ident[0], ident[1], payload, t))
            else:
                self.counters["unexpected_topic"] += 1
        n_new = n_dup = n_bad = 0
        touched = {}
        if items:
            n_new, n_dup, n_bad, touched = consumer_db.store_blocks(self.db, items, consumer=self.client_id)
        if status:
            self.db.execute("BEGIN IMMEDIATE")
            for (fleet, device, _), payload in status:
                if payload:  # empty payload = retained status cleared
                    consumer_db.store_agent_status(self.db, fleet, device, payload)
            self.db.execute("COMMIT")
        for (fleet, device, _), payload in results:
            self._on_result(device, payload)
        if self.e2e_ack and touched:  # after the commit: what is acknowledged is durable
            held_by = consumer_db.coverage_many(self.db, [(d, b) for _, d, b in touched], limit=ACK_RANGES)
            for (fleet, device, boot), blocks in touched.items():
                held = held_by[(device, boot)]
                self.client.publish("paydbox/%s/%s/ack" % (fleet, device), json.dumps(
                    {"boot": boot, "held": [list(r) for r in held], "blocks": blocks[-ACK_RANGES:]}), qos=1)
                self.counters["e2e_acks"] += 1
        for topic, payload, mid, qos, t in msgs:  # durable: now the broker may forget them
            if qos > 0:
                self.client.ack(mid, qos)
        c = self.counters
        c["messages"] += len(msgs)
        c["quarantined"] += sum(1 for it in items if it.get("quarantine") is not None)
        c["blocks"] += len(items) - n_bad
        c["records_new"] += n_new
        c["records_dup"] += n_dup
        c["damaged"] += n_bad - sum(1 for it in items if it.get("quarantine") is not None)
        c["status_msgs"] += len(status)

    def _on_result(self, device, payload):
        """A `resend` answer names the ranges neither the agent nor the box holds any more: lost."""
        self.counters["results"] += 1
        try:
            d = json.loads(payload)
        except ValueError:
            return
        if not isinstance(d, dict) or d.get("cmd") != "resend" or not isinstance(d.get("missing"), list):
            return
        boot = d.get("boot")
        ranges = [r for r in d["missing"] if isinstance(r, list) and len(r) == 2
                  and all(isinstance(x, int) and not isinstance(x, bool) for x in r) and 0 <= r[0] <= r[1]]
        if isinstance(boot, int) and ranges:
            consumer_db.mark_lost(self.db, device, boot, ranges, "not held by the agent or the box")
            self.counters["lost_ranges"] += len(ranges)
            self.log("device %s boot %d: %d seq range(s) reported lost: %s" % (
                device, boot, len(ranges), ranges[:4]))

    def repair_gaps(self, now=None):
        """Ask the agents again for the seq ranges missing between what is held (with backoff per gap)."""
        now = time.monotonic() if now is None else now
        live = set()
        for fleet, device, boot, lo, hi in consumer_db.gaps(self.db):
            key = (device, boot, lo, hi)
            live.add(key)
            st = self.repair.get(key)
            if st is None:
                self.repair[key] = st = [now, now + self.repair_grace_s, 0]
            if now < st[1] or fleet is None:
                continue
            cid = "resend-%s-%d-%d-%d-%d" % (device, boot, lo, hi, st[2])
            self.client.publish("paydbox/%s/%s/resend" % (fleet, device), json.dumps(
                {"id": cid, "cmd": "resend", "boot": boot, "ranges": [[lo, hi]]}), qos=1)
            st[2] += 1
            st[1] = now + min(300.0, self.repair_grace_s * 2 ** st[2])
            self.counters["repair_requests"] += 1
        for key in list(self.repair):
            if key not in live:
                del self.repair[key]

    def run(self, once_idle=None, progress=None, stop=None, progress_every=2.0):
        """Main loop: batches messages into transactions. Returns the counters. `once_idle`: stop after that
        many seconds without a message, counted only once the first message has arrived."""
        last_progress = time.time()
        self.last_msg_at = time.time()
        while stop is None or not stop.is_set():
            now = time.monotonic()
            if self.repair_every_s and now - self.last_repair >= self.repair_every_s:
                self.last_repair = now
                self.repair_gaps(now)
            try:
                first = self.q.get(timeout=0.1)
            except queue.Empty:
                if (once_idle is not None and self.first_msg_at is not None
                        and time.time() - self.last_msg_at >= once_idle):
                    break
                if self.connect_error:
                    raise IngestError(self.connect_error)
                continue
            msgs = [first]
            while len(msgs) < self.batch:
                try:
                    msgs.append(self.q.get_nowait())
                except queue.Empty:
                    break
            self.process(msgs)
            self.last_msg_at = time.time()
            if self.first_msg_at is None:
                self.first_msg_at = self.last_msg_at
            if progress and time.time() - last_progress >= progress_every:
                progress(self.counters)
                last_progress = time.time()
        return self.counters

    def close(self):
        self._closing = True
        try:
            self.client.disconnect()  # normal disconnect: the session (and its queue) stays on the broker
        finally:
            self.client.loop_stop()
            self.db.close()


def format_counters(c):
    return ("messages %(messages)d  blocks %(blocks)d  records new %(records_new)d  dup %(records_dup)d"
            "  damaged %(damaged)d  quarantined %(quarantined)d  status %(status_msgs)d  gap requests "
            "%(repair_requests)d  lost ranges %(lost_ranges)d" % c)


def run(args):
    log = (lambda s: None) if args.quiet else (lambda s: print("ingest: " + s, flush=True))
    cons = Consumer(args.broker, args.db, group=args.group, client_id=args.client_id,
                    session_expiry=args.session_expiry, batch=args.batch,
                    receive_maximum=args.receive_maximum,
                    username=args.username, password=args.password, cafile=args.cafile, cert=args.cert,
                    key=args.key, log=log, repair_grace_s=args.repair_grace)
    cons.start(timeout=args.connect_timeout)
    log("subscribed $share/%s/%s -> %s" % (args.group, RECORDS_FILTER, args.db))
    t0 = time.time()
    try:
        c = cons.run(once_idle=args.once_idle, progress=(lambda c: log(format_counters(c))))
    finally:
        cons.close()
    dt = time.time() - t0
    if args.json:
        print(json.dumps(dict(c, seconds=round(dt, 3))))
    else:
        log("done after %.1f s: %s" % (dt, format_counters(c)))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["ingest"] + sys.argv[1:]))
