"""paydbox edge agent: box (UART link) -> SQLite queue -> MQTT (QoS 1).

    paydbox-agent --config agent.toml

Invariants (docs/link-protocol.md, docs/mqtt-topics.md):
- a block is committed to SQLite (WAL, synchronous=FULL) before the box gets its ACK;
- a row is deleted only after the broker's PUBACK for it;
- at the queue limit the agent stops acknowledging (the box keeps the data) and raises an alarm;
- ordering and ages use sequence numbers and time.monotonic(), never the wall clock.
One thread: serial I/O, SQLite and paho's network loop are all driven from run().
"""
import argparse
import json
import logging
import os
import signal
import socket
import sys
import time

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import serial

from edge_agent.link import AgentLink
from edge_agent.mqtt import Publisher
from edge_agent.queue import Queue

VERSION = "0.1.0"
log = logging.getLogger("paydbox.agent")


class ConfigError(Exception):
    pass


def sd_notify(msg):
    """systemd notify protocol, without libsystemd: one datagram to $NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(addr)
            s.sendall(msg.encode())
        finally:
            s.close()
        return True
    except OSError:
        return False


def load_config(path):
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except OSError as e:
        raise ConfigError("cannot read config %s: %s" % (path, e.strerror))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config %s: %s" % (path, e))
    dev = cfg.get("device", {})
    if not dev.get("fleet"):
        raise ConfigError("config: device.fleet is required")
    if "serial" not in cfg or not cfg["serial"].get("url"):
        raise ConfigError("config: serial.url is required")
    if "queue" not in cfg or not cfg["queue"].get("path"):
        raise ConfigError("config: queue.path is required")
    cfg.setdefault("mqtt", {})
    cfg.setdefault("agent", {})
    return cfg


class Agent:
    def __init__(self, cfg):
        self.cfg = cfg
        dev = cfg["device"]
        self.fleet = dev["fleet"]
        self.device = dev.get("id") or None  # None: take it from the box's HELLO
        q = cfg["queue"]
        self.queue = Queue(q["path"], int(q.get("max_bytes", 50_000_000)), int(q.get("min_free_bytes", 0)))
        a = cfg["agent"]
        self.status_interval = float(a.get("status_interval_s", 10))
        self.keepalive_s = float(a.get("link_keepalive_s", 2))
        self.link_timeout_s = float(a.get("link_timeout_s", 10))
        self.cmd_retry_s = float(a.get("cmd_retry_s", 2))
        self.cmd_tries = int(a.get("cmd_tries", 5))
        self.republish_after_s = float(a.get("republish_after_s", 120))
        self.ser = None
        self.link = None
        self.ser_next_try = 0.0
        self.ser_attempt = 0
        self.mq = None
        self.inflight = {}  # mid -> (row id, t_published)
        self.inflight_ids = set()
        self.first_seen = {}  # row id -> monotonic time this process first saw it
        self.pending_cmds = {}  # cmd id -> {"d", "tries", "next"}
        self.recent_cmd_ids = []
        self.box_health = {}
        self.last_hello_sent = 0.0
        self.last_ka_sent = 0.0
        self.last_status = 0.0
        self.last_status_key = None
        self.rows_peak = 0     # queue rows / full flag, worst since the last published status
        self.was_full = False
        self.stop = False
        self.started = time.monotonic()
        self.counters = {
            "blocks_rx": 0, "blocks_dup": 0, "blocks_refused": 0, "published": 0, "puback": 0,
            "republished": 0, "cmds": 0, "results": 0, "serial_errors": 0, "device_mismatch": 0,
        }
        now = time.monotonic()
        for i in self.queue.ids():
            self.first_seen[i] = now
        if self.device:
            self._make_mqtt()

    # ---- topics
    def topic(self, leaf):
        return "paydbox/%s/%s/%s" % (self.fleet, self.device, leaf)

    def _make_mqtt(self):
        m = self.cfg["mqtt"]
        cid = m.get("client_id") or ("paydbox-agent-" + self.device)
        self.mq = Publisher(m, cid, self.topic("status"), self._status_json("offline"),
                            on_message=self._on_mqtt_message, sub_topics=[self.topic("cmd")])

    # ---- serial
    def _open_serial(self):
        s = self.cfg["serial"]
        try:
            self.ser = serial.serial_for_url(s["url"], baudrate=int(s.get("baudrate", 115200)), timeout=0.01)
        except (serial.SerialException, OSError, ValueError) as e:
            self.ser_attempt += 1
            self.ser_next_try = time.monotonic() + min(30.0, 0.5 * 2 ** min(self.ser_attempt, 6))
            log.warning("cannot open %s: %s", s["url"], e)
            return
        self.ser_attempt = 0
        self.link = AgentLink(self.ser)
        self.link.send_hello(reply=False, version=VERSION)
        self.last_hello_sent = time.monotonic()
        log.info("serial %s open (session %d)", s["url"], self.link.session)

    def _serial_failed(self, e):
        self.counters["serial_errors"] += 1
        log.warning("serial link error: %s", e)
        try:
            self.ser.close()
        except Exception:
            pass
        self.ser = None
        self.ser_next_try = time.monotonic() + 1.0

    # ---- link handling
    def _link_up(self):
        return (self.link is not None and self.link.box is not None and self.link.last_rx is not None
                and time.monotonic() - self.link.last_rx < self.link_timeout_s)

    def _handle_frames(self, frames):
        data = []
        for kind, v in frames:
            if kind == "data":
                data.append(v)
            elif kind == "hello":
                if v.get("role") != "box":
                    continue
                if self.link.box != v:
                    log.info("box hello: device %s fw %s boot %s", v.get("device"), v.get("fw"), v.get("boot"))
                self.link.box = v
                if self.device is None:
                    self.device = str(v.get("device"))
                    self._make_mqtt()
                self.link.send_hello(reply=True, version=VERSION)
            elif kind == "keepalive":
                self.box_health = v
            elif kind == "result":
                self._on_result(v)
        if data:
            self._store_and_ack(data)

    def _store_and_ack(self, data):
        box = self.link.box
        if box is None:
            # we do not know whose blocks these are: no ack, ask the box who it is
            if time.monotonic() - self.last_hello_sent > 0.5:
                self.link.send_hello(reply=False, version=VERSION)
                self.last_hello_sent = time.monotonic()
            return
        if str(box.get("device")) != self.device:
            self.counters["device_mismatch"] += 1
            return
        self.counters["blocks_rx"] += len(data)
        before = self.queue.rows
        ack, refused = self.queue.add_batch(self.device, int(box.get("boot", 0)), data)
        stored = self.queue.rows - before
        self.counters["blocks_dup"] += len(ack) - stored
        if refused:
            if not self.counters["blocks_refused"]:
                log.error("queue full (%d bytes): not acknowledging the box", self.queue.bytes)
            self.counters["blocks_refused"] += len(refused)
        if stored:
            now = time.monotonic()
            for r in self.queue.db.execute("SELECT id FROM q ORDER BY id DESC LIMIT ?", (stored,)):
                self.first_seen.setdefault(r[0], now)
        if ack:
            self.link.send_ack(ack)

    def _on_result(self, v):
        cid = v.get("id")
        self.pending_cmds.pop(cid, None)
        self.counters["results"] += 1
        if self.mq is not None:
            self.mq.publish(self.topic("cmd/result"), json.dumps(v), qos=1)

    # ---- downlink
    def _on_mqtt_message(self, msg):
        if msg.retain:
            log.warning("ignoring retained command on %s", msg.topic)
            return
        try:
            d = json.loads(msg.payload)
            cid = d["id"]
            d["cmd"]
        except (ValueError, KeyError, TypeError):
            self.mq.publish(self.topic("cmd/result"), json.dumps({"id": None, "ok": False,
                            "error": "command must be JSON with id and cmd"}), qos=1)
            return
        if cid in self.recent_cmd_ids or cid in self.pending_cmds:
            return  # QoS 1 redelivery
        self.recent_cmd_ids = (self.recent_cmd_ids + [cid])[-64:]
        self.counters["cmds"] += 1
        self.pending_cmds[cid] = {"d": d, "tries": 0, "next": 0.0}

    def _service_cmds(self, now):
        for cid in list(self.pending_cmds):
            p = self.pending_cmds[cid]
            if now < p["next"]:
                continue
            if p["tries"] >= self.cmd_tries:
                del self.pending_cmds[cid]
                self.mq.publish(self.topic("cmd/result"), json.dumps(
                    {"id": cid, "ok": False, "error": "box did not answer"}), qos=1)
                continue
            if self._link_up():
                self.link.send_cmd(p["d"])
            p["tries"] += 1
            p["next"] = now + self.cmd_retry_s

    # ---- uplink
    def _publish_more(self, now):
        mq = self.mq
        # PUBACKs: the broker has it, the row may go
        mids = mq.drain_acks()
        if mids:
            ids = []
            for mid in mids:
                e = self.inflight.pop(mid, None)
                if e is not None:
                    ids.append(e[0])
                    self.inflight_ids.discard(e[0])
                    self.first_seen.pop(e[0], None)
            self.queue.delete(ids)
            self.counters["puback"] += len(ids)
        if not mq.connected:
            return
        # after a (re)connection the retained status goes out first, so the backlog built up while the
        # broker was away is visible before the agent drains it
        self._maybe_status(now)
        # safety net: a message paho still has not got acknowledged for a long time is published again
        for mid, (rid, t) in list(self.inflight.items()):
            if now - t > self.republish_after_s:
                del self.inflight[mid]
                self.inflight_ids.discard(rid)
                self.counters["republished"] += 1
        free = mq.free_slots(len(self.inflight))
        if free <= 0:
            return
        for rid, device, boot, fs, ls, prio, block in self.queue.head(free, self.inflight_ids):
            leaf = "records" if prio == 0 else "events"
            mid = mq.publish(self.topic(leaf), block, qos=1,
                             user_props=[("boot", boot), ("first_seq", fs), ("last_seq", ls), ("prio", prio)])
            if mid is None:
                break
            self.inflight[mid] = (rid, now)
            self.inflight_ids.add(rid)
            self.counters["published"] += 1

    # ---- status
    def _status(self, state="online"):
        now = time.monotonic()
        oldest = min(self.first_seen.values()) if self.first_seen else None
        alarms = []
        if self.queue.full:
            alarms.append("queue_full")
        if self.counters["device_mismatch"]:
            alarms.append("device_mismatch")
        if not self._link_up():
            alarms.append("link_down")
        box = self.link.box if self.link is not None else None
        return {
            "state": state,
            "agent": VERSION,
            "fleet": self.fleet,
            "device": self.device,
            "queue_rows": self.queue.rows,
            "queue_bytes": self.queue.bytes,
            "queue_max_bytes": self.queue.max_bytes,
            "queue_full": self.queue.full,
            # worst since the previous status: an outage's backlog stays visible after it drains
            "queue_rows_peak": max(self.rows_peak, self.queue.rows),
            "queue_was_full": self.was_full or self.queue.full,
            "oldest_unsent_s": 0 if oldest is None else int(now - oldest),
            "inflight": len(self.inflight),
            "link": "up" if self._link_up() else "down",
            "box": {"fw": box.get("fw"), "boot": box.get("boot")} if box else None,
            "box_health": self.box_health,
            "alarms": alarms,
            "uptime_s": int(now - self.started),
            "counters": dict(self.counters),
            "link_counters": self.link.stats() if self.link is not None else {},
        }

    def _status_json(self, state="online"):
        return json.dumps(self._status(state), sort_keys=True)

    def _maybe_status(self, now):
        if self.queue.rows > self.rows_peak:
            self.rows_peak = self.queue.rows
        if self.queue.full:
            self.was_full = True
        if self.mq is None or not self.mq.connected:
            return
        key = (self.queue.full, self._link_up(), self.mq.connects)
        if key != self.last_status_key or now - self.last_status >= self.status_interval:
            self.last_status_key = key
            self.last_status = now
            self.mq.publish(self.topic("status"), self._status_json(), qos=1, retain=True)
            self.rows_peak = self.queue.rows
            self.was_full = self.queue.full

    # ---- main loop
    def step(self):
        now = time.monotonic()
        if self.ser is None:
            if now >= self.ser_next_try:
                self._open_serial()
            else:
                time.sleep(0.01)
        if self.ser is not None:
            try:
                frames = self.link.read_frames()
                if frames:
                    self._handle_frames(frames)
                if self.link.box is None and now - self.last_hello_sent > 1.0:
                    self.link.send_hello(reply=False, version=VERSION)
                    self.last_hello_sent = now
                if now - self.last_ka_sent >= self.keepalive_s:
                    self.link.send_keepalive()
                    self.last_ka_sent = now
            except (serial.SerialException, OSError) as e:
                self._serial_failed(e)
        if self.mq is not None:
            self.mq.step(0.0)
            self._publish_more(now)
            self._service_cmds(now)
            self._maybe_status(now)

    def run(self):
        wd_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        wd_every = wd_usec / 2e6 if wd_usec else 0
        last_wd = 0.0
        sd_notify("READY=1\nSTATUS=running")
        while not self.stop:
            self.step()
            if wd_every:
                now = time.monotonic()
                if now - last_wd >= wd_every:
                    sd_notify("WATCHDOG=1")
                    last_wd = now
        sd_notify("STOPPING=1")
        self.close()

    def close(self):
        if self.mq is not None:
            # graceful stop: give outstanding PUBACKs a moment so the rows are not sent twice
            end = time.monotonic() + 2.0
            while self.inflight and self.mq.connected and time.monotonic() < end:
                self.mq.step(0.02)
                mids = self.mq.drain_acks()
                ids = [self.inflight.pop(m)[0] for m in mids if m in self.inflight]
                self.queue.delete(ids)
            self.mq.close(self._status_json("offline"))
        if self.ser is not None:
            try:
                self.ser.close()
            except Exception:
                pass
        self.queue.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="paydbox-agent", description="paydbox edge agent: box link -> MQTT")
    ap.add_argument("--config", required=True, help="agent.toml")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=fmt, stream=sys.stderr)
    try:
        agent = Agent(load_config(args.config))
    except (ConfigError, ValueError) as e:
        print("paydbox-agent: error: %s" % e, file=sys.stderr)
        return 2

    def _term(signum, frame):
        agent.stop = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
