"""`paydbox ingest`: the reference MQTT consumer.

Subscribes (MQTT 5, QoS 1) with a shared subscription `$share/<group>/paydbox/+/+/records` so several
consumers split a fleet, on a persistent session (fixed client id, clean_start False, session expiry)
so messages published while it is down are delivered when it comes back. Each payload is one codec
block; it is decoded, deduplicated by (device, boot, seq) and stored in SQLite (tools/consumer_db.py).
Messages are acknowledged (manual PUBACK) only after the transaction holding them has committed:
a crash at any point loses nothing, a redelivery only produces counted duplicates.
"""
import hashlib
import os
import queue
import socket
import sys
import threading
import time
from urllib.parse import urlparse

from tools import consumer_db

RECORDS_FILTER = "paydbox/+/+/records"
STATUS_FILTER = "paydbox/+/+/status"
# the agent publishes position blocks on .../records and every other block (events, trips, crash,
# tamper, status records) on .../events; both carry codec blocks
EVENTS_FILTER = "paydbox/+/+/events"


class IngestError(Exception):
    """Consumer cannot run (bad broker URL, connection refused, subscription refused)."""


def add_arguments(p):
    p.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--db", default=consumer_db.DEFAULT_DB, help="SQLite file (default %(default)s)")
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
                   help="exit after S seconds without a message")
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


class Consumer:
    """The ingest loop; usable in-process (tests, fleet-sim) or from the CLI."""

    def __init__(self, broker, db_path, group="paydbox", client_id=None, session_expiry=7 * 86400,
                 batch=200, receive_maximum=200, username=None, password=None, cafile=None, cert=None,
                 key=None, log=None):
        from firmware import codec  # the one and only codec (shared with the box)

        self.codec = codec
        self.db_path = db_path
        self.db = consumer_db.connect(db_path)
        self.group = group
        self.client_id = client_id or default_client_id(group, db_path)
        self.batch = max(1, int(batch))
        self.log = log or (lambda s: None)
        self.q = queue.Queue()
        self.subscribed = threading.Event()
        self.connect_error = None
        self.counters = {"messages": 0, "blocks": 0, "records_new": 0, "records_dup": 0, "damaged": 0,
                         "status_msgs": 0, "unexpected_topic": 0, "device_mismatch": 0, "reconnects": 0}
        self.last_msg_at = time.time()
        self.client = make_client(self.client_id, broker, username, password, cafile, cert, key,
                                  manual_ack=True, clean_start=False, session_expiry=session_expiry,
                                  receive_maximum=receive_maximum)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._connected_once = False

    # -- paho callbacks (network thread): no SQLite here, just queue the message
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.connect_error = "broker refused the connection: %s" % reason_code
            return
        if self._connected_once:
            self.counters["reconnects"] += 1
        self._connected_once = True
        from paho.mqtt.subscribeoptions import SubscribeOptions
        opts = SubscribeOptions(qos=1)
        client.subscribe([("$share/%s/%s" % (self.group, RECORDS_FILTER), opts),
                          ("$share/%s/%s" % (self.group, EVENTS_FILTER), SubscribeOptions(qos=1)),
                          ("$share/%s/%s" % (self.group, STATUS_FILTER), SubscribeOptions(qos=1))])
        self.log("connected as %s (session present: %s)" % (self.client_id, flags.session_present))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            self.connect_error = "broker refused the subscription: %s" % bad[0]
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.subscribed.clear()

    def _on_message(self, client, userdata, msg):
        self.q.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time()))

    # -- worker side
    def start(self, timeout=10.0):
        connect(self.client)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            self.client.loop_stop()
            raise IngestError(self.connect_error or "no subscription acknowledgement from the broker within %gs"
                              % timeout)
        if self.connect_error:
            self.client.loop_stop()
            raise IngestError(self.connect_error)

    def _decode(self, topic, payload, received_at):
        parts = topic.split("/")
        fleet = parts[1] if len(parts) == 4 else None
        device = parts[2] if len(parts) == 4 else None
        item = {"topic": topic, "fleet": fleet, "size": len(payload), "received_at": received_at}
        try:
            header, records = self.codec.decode_block(payload)
        except Exception as e:  # CodecError (or anything a corrupt payload provokes): counted, not fatal
            item["error"] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            item["payload"] = payload[:4096]
            self.log("damaged block on %s (%d bytes): %s" % (topic, len(payload), item["error"]))
            return item
        if device is not None and str(header["device"]) != device:
            # the ACL binds the topic to the device: a mismatch is suspicious, keep the block but count it
            self.counters["device_mismatch"] += 1
            self.log("block for device %s arrived on %s" % (header["device"], topic))
        item["header"] = header
        item["records"] = records
        return item

    def process(self, msgs):
        """Decode and store a batch of (topic, payload, mid, qos, t) then ack them (after the commit)."""
        items = []
        status = []
        for topic, payload, mid, qos, t in msgs:
            if topic.endswith("/status"):
                status.append((topic, payload))
            else:
                items.append(self._decode(topic, payload, t))
        n_new, n_dup, n_bad = consumer_db.store_blocks(self.db, items, consumer=self.client_id) if items else (0, 0, 0)
        if status:
            self.db.execute("BEGIN IMMEDIATE")
            for topic, payload in status:
                parts = topic.split("/")
                if len(parts) == 4 and payload:  # empty payload = retained status cleared
                    consumer_db.store_agent_status(self.db, parts[1], parts[2], payload)
            self.db.execute("COMMIT")
        for topic, payload, mid, qos, t in msgs:  # durable: now the broker may forget them
            if qos > 0:
                self.client.ack(mid, qos)
        c = self.counters
        c["messages"] += len(msgs)
        c["blocks"] += len(items) - n_bad
        c["records_new"] += n_new
        c["records_dup"] += n_dup
        c["damaged"] += n_bad
        c["status_msgs"] += len(status)

    def run(self, once_idle=None, progress=None, stop=None, progress_every=2.0):
        """Main loop: batches messages into transactions. Returns the counters."""
        last_progress = time.time()
        self.last_msg_at = time.time()
        while stop is None or not stop.is_set():
            try:
                first = self.q.get(timeout=0.1)
            except queue.Empty:
                if once_idle is not None and time.time() - self.last_msg_at >= once_idle:
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
            if progress and time.time() - last_progress >= progress_every:
                progress(self.counters)
                last_progress = time.time()
        return self.counters

    def close(self):
        try:
            self.client.disconnect()  # normal disconnect: the session (and its queue) stays on the broker
        finally:
            self.client.loop_stop()
            self.db.close()


def format_counters(c):
    return ("messages %(messages)d  blocks %(blocks)d  records new %(records_new)d  dup %(records_dup)d"
            "  damaged %(damaged)d  status %(status_msgs)d" % c)


def run(args):
    log = (lambda s: None) if args.quiet else (lambda s: print("ingest: " + s, flush=True))
    cons = Consumer(args.broker, args.db, group=args.group, client_id=args.client_id,
                    session_expiry=args.session_expiry, batch=args.batch, receive_maximum=args.receive_maximum,
                    username=args.username, password=args.password, cafile=args.cafile, cert=args.cert,
                    key=args.key, log=log)
    cons.start()
    log("subscribed $share/%s/%s -> %s" % (args.group, RECORDS_FILTER, args.db))
    t0 = time.time()
    try:
        c = cons.run(once_idle=args.once_idle, progress=(lambda c: log(format_counters(c))))
    finally:
        cons.close()
    dt = time.time() - t0
    if args.json:
        import json
        print(json.dumps(dict(c, seconds=round(dt, 3))))
    else:
        log("done after %.1f s: %s" % (dt, format_counters(c)))
    return 0


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["ingest"] + sys.argv[1:]))
