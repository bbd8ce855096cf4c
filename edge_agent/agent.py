"""paydbox edge agent: box (UART link) -> SQLite queue -> MQTT (QoS 1), Traccar (Codec 8 Extended), OsmAnd.

    paydbox-agent --config agent.toml

Invariants (docs/link-protocol.md, docs/mqtt-topics.md):
- a block is committed to SQLite (WAL, synchronous=FULL) before the box gets its ACK, and only after its
  own CRC and header check (a block that fails is quarantined: acknowledged, kept, never forwarded);
- a row leaves the pending queue only after the consumer's end-to-end acknowledgement (it has committed
  the block's records): the broker's PUBACK alone is not enough. Unacknowledged rows are published again
  after `e2e_timeout_s` (doubling per try). With `mqtt.e2e_ack = false` the PUBACK suffices. Other
  outputs (Traccar: the server's record count, OsmAnd: HTTP 200) must be done with it too
  (edge_agent/outputs.py);
- at the queue limit the agent stops acknowledging (the box keeps the data) and raises an alarm; with
  `queue.on_full = "drop_oldest"` it drops the oldest lowest-priority rows instead, loudly (alarm, counters);
- the agent is bound to one box: the configured `device.id`, else the first box it ever stored (kept in
  the queue database); every other box is refused;
- no frame, however malformed, stops the agent: it is counted (`bad_frames`) and answered;
- ordering and ages use sequence numbers and time.monotonic(), never the wall clock.
One thread: serial I/O, SQLite and paho's network loop are all driven from run().
"""
import argparse
import bisect
import heapq
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import serial

from edge_agent.link import AgentLink
from edge_agent.mqtt import Publisher
from edge_agent.outputs import Delivery
from edge_agent.queue import Queue
from edge_agent.seqranges import subtract
from firmware import decoder

_READY, _INFLIGHT, _WAIT = 0, 1, 2
MAX_RANGES = 256  # seq ranges accepted in one ack / resend message
# downlink command ids remembered (in the queue database) to answer a redelivered command once
CMD_IDS_KEPT = 256
# results of finished commands kept (in the queue database) once the broker has acknowledged them, to answer
# the same id again with its result; results the broker has not acknowledged are all kept
RESULTS_KEPT = 64
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

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
    if not output_names(cfg):
        raise ConfigError("config: no output: enable [mqtt], or configure [traccar] or [osmand]")
    return cfg


def output_names(cfg):
    """Configured outputs, MQTT first: a queue row leaves the pending queue once all of them are done."""
    out = []
    if cfg.get("mqtt", {}).get("enabled", True):
        out.append("mqtt")
    for name in ("traccar", "osmand"):
        if name in cfg:
            out.append(name)
    return out


def make_forwarders(cfg, delivery):
    fw = []
    if "traccar" in cfg:
        from edge_agent.traccar import TraccarForwarder

        fw.append(TraccarForwarder(cfg["traccar"], delivery))
    if "osmand" in cfg:
        from edge_agent.osmand import OsmAndForwarder

        fw.append(OsmAndForwarder(cfg["osmand"], delivery))
    return fw


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _boot_id():
    """This machine's boot id (Linux): time.monotonic() values of one boot compare across processes."""
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _parse_cmd(payload):
    """(command dict, None), or (what could be read, the one-line reason it is refused)."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "payload: not UTF-8 at byte %d" % e.start
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        return None, "payload: not JSON at byte %d (%s)" % (len(text[:e.pos].encode()), e.msg)
    except RecursionError:
        return None, "payload: JSON nested too deep"
    if not isinstance(d, dict):
        return None, "payload: a JSON object expected, got %s" % type(d).__name__
    if "id" not in d:
        return d, "id: missing"
    cid = d["id"]
    if not isinstance(cid, (str, int)) or isinstance(cid, bool):
        return d, "id: a string or an integer expected, got %s" % type(cid).__name__
    if isinstance(cid, str) and (not cid or cid.startswith("\0")):
        return d, "id: must be non-empty and not start with NUL"
    if "cmd" not in d:
        return d, "cmd: missing"
    if not isinstance(d["cmd"], str):
        return d, "cmd: a string expected, got %s" % type(d["cmd"]).__name__
    return d, None


def _valid_box_hello(v):
    """A box HELLO the agent can act on: a dict naming a non-empty device id and an integer boot."""
    return (isinstance(v, dict) and v.get("role") == "box" and isinstance(v.get("device"), str)
            and 0 < len(v["device"]) <= 64 and _is_int(v.get("boot")) and v["boot"] >= 0)


def _ranges(v):
    """[[lo, hi], ...] of non-negative ints with lo <= hi (at most MAX_RANGES), else ValueError."""
    if not isinstance(v, list) or len(v) > MAX_RANGES:
        raise ValueError("ranges: a list of at most %d [lo, hi] pairs expected" % MAX_RANGES)
    out = []
    for r in v:
        if not (isinstance(r, list) and len(r) == 2 and _is_int(r[0]) and _is_int(r[1])
                and 0 <= r[0] <= r[1]):
            raise ValueError("ranges: bad range %r" % (r,))
        out.append((r[0], r[1]))
    return out


class Agent:
    def __init__(self, cfg):
        self.cfg = cfg
        dev = cfg["device"]
        self.fleet = dev["fleet"]
        q = cfg["queue"]
        self.queue = Queue(q["path"], int(q.get("max_bytes", 50_000_000)), int(q.get("min_free_bytes", 0)),
                           archive_max_bytes=int(q.get("archive_max_bytes", 10_000_000)),
                           on_full=str(q.get("on_full", "backpressure")))
        # identity: the configured id, else the first box this queue ever stored
        # (never "whoever speaks first")
        bound = self.queue.get_meta("device")
        self.device = dev.get("id") or bound or None
        if dev.get("id") and bound and bound != dev["id"]:
            log.warning("queue %s was bound to device %s; the configured id %s takes over", q["path"], bound,
                        dev["id"])
        if self.device and bound != self.device:
            self.queue.set_meta("device", self.device)
        a = cfg["agent"]
        m = cfg["mqtt"]
        self.status_interval = float(a.get("status_interval_s", 10))
        self.keepalive_s = float(a.get("link_keepalive_s", 2))
        self.link_timeout_s = float(a.get("link_timeout_s", 10))
        self.cmd_retry_s = float(a.get("cmd_retry_s", 2))
        self.cmd_tries = int(a.get("cmd_tries", 5))
        # a command waits for the box at most this long (or its MQTT 5 message expiry, if sooner), also
        # while the box link is down; then it is answered "expired"
        self.cmd_expiry_s = float(a.get("cmd_expiry_s", 86400))
        if self.cmd_expiry_s <= 0:
            raise ValueError("agent.cmd_expiry_s: must be > 0, got %r" % a.get("cmd_expiry_s"))
        self.republish_after_s = float(a.get("republish_after_s", 120))
        self.e2e = bool(m.get("e2e_ack", True))
        self.e2e_timeout_s = float(a.get("e2e_timeout_s", 30))
        self.e2e_timeout_max_s = float(a.get("e2e_timeout_max_s", 300))
        self.e2e_stall_s = float(a.get("e2e_stall_s", 600))
        if self.e2e_timeout_s <= 0 or self.e2e_timeout_max_s < self.e2e_timeout_s:
            raise ValueError("agent.e2e_timeout_s: must be > 0 and <= agent.e2e_timeout_max_s")
        self.ser = None
        self.link = None
        self.ser_next_try = 0.0
        self.ser_attempt = 0
        self.mq = None
        # pending rows, scheduled in memory:
        # rid -> [boot, first_seq, last_seq, prio, state, due, tries, t_pub]
        self.pend = {}
        self.ready = []  # heap of (-prio, rid): crash first, then oldest
        self.waitq = []  # heap of (due, rid): published, waiting for the consumer's acknowledgement
        self.by_boot = {}  # boot -> sorted [(first_seq, rid)] of pending rows
        self.inflight = {}  # mid -> (row id, t_published)
        self.first_seen = {}  # row id -> monotonic time this process first saw it
        self.wanted = []  # (lo, hi, until) seq ranges asked again from the box (stored even if seen before)
        # downlink commands taken from the broker, kept in the queue's SQLite (meta `cmd_state`) before the
        # PUBACK goes out (paho acks a QoS 1 message after on_message returns), so that a command survives a
        # SIGKILL of the agent and one the persistent session redelivers after a restart is not run twice;
        # their results stay there too until the broker has PUBACKed them (published again after a restart)
        # cmd id -> {"d", "tries", "next", "sent", "until"}: for the box, no result yet. tries: attempts the
        # box was heard after (it could have answered); sent: monotonic time of the attempt not yet counted;
        # until: monotonic deadline (agent.cmd_expiry_s or the message's own expiry)
        self.pending_cmds = {}
        self.recent_cmd_ids = []  # the last CMD_IDS_KEPT ids taken, answered or not
        # cmd id -> {"r": result, "acked": PUBACKed, "agent": the agent's own answer, not the box's,
        # "mid": (Publisher.generation, mid) of the publish in flight, "t": when published}, finish order
        self.cmd_results = {}
        self.result_mids = {}  # mid -> cmd id: result publishes waiting for their PUBACK
        self._load_cmds()
        self.box_health = {}
        self.last_hello_sent = 0.0
        self.last_ka_sent = 0.0
        self.last_status = 0.0
        self.last_status_key = None
        self.rows_peak = 0     # queue rows / full flag, worst since the last published status
        self.was_full = False
        self.stop = False
        self.shutdown_at = None  # time.monotonic() the box asked for a shutdown (power management)
        # run when the box asks to shut down, after the queue is synced and the box answered
        self.poweroff_command = str(a.get("poweroff_command", "systemctl poweroff"))
        self.started = time.monotonic()
        self.counters = {
            "blocks_rx": 0, "blocks_dup": 0, "blocks_refused": 0, "published": 0, "puback": 0,
            "republished": 0, "cmds": 0, "results": 0, "serial_errors": 0, "device_mismatch": 0,
            "bad_frames": 0, "blocks_quarantined": 0, "internal_errors": 0, "e2e_acked": 0, "e2e_resent": 0,
            "e2e_acks": 0, "bad_acks": 0, "resend_requests": 0, "resent_from_archive": 0, "dropped_blocks": 0,
            "dropped_records": 0, "bad_cmds": 0, "cmd_repeats": 0, "cmd_expired": 0, "results_republished": 0,
        }
        for k in ("dropped_blocks", "dropped_records"):  # data loss stays visible across restarts
            self.counters[k] = int(self.queue.get_meta(k) or 0)
        now = time.monotonic()
        # per-output delivery state (edge_agent/outputs.py): with Traccar / OsmAnd configured a row
        # stays pending until every output is done with it
        self.use_mqtt = "mqtt" in output_names(cfg)
        self.delivery = Delivery(self.queue, output_names(cfg))
        self.forwarders = make_forwarders(cfg, self.delivery)
        mqtt_done = self.delivery.done_ids("mqtt")
        for rid, boot, fs, ls, prio in self.queue.pending():
            if self.use_mqtt and rid not in mqtt_done:
                self._track(rid, boot, fs, ls, prio, now)
        if self.device and self.use_mqtt:
            self._make_mqtt()

    # ---- the in-memory schedule of pending rows
    def _track(self, rid, boot, fs, ls, prio, now):
        if rid in self.pend:
            self._make_ready(rid)
            return
        self.pend[rid] = [boot, fs, ls, prio, _READY, 0.0, 0, 0.0]
        heapq.heappush(self.ready, (-prio, rid))
        bisect.insort(self.by_boot.setdefault(boot, []), (fs, rid))
        self.first_seen.setdefault(rid, now)

    def _make_ready(self, rid):
        e = self.pend.get(rid)
        if e is not None and e[4] == _WAIT:
            e[4] = _READY
            heapq.heappush(self.ready, (-e[3], rid))

    def _untrack(self, rid):
        e = self.pend.pop(rid, None)
        self.first_seen.pop(rid, None)
        if e is None:
            return
        lst = self.by_boot.get(e[0])
        if lst:
            i = bisect.bisect_left(lst, (e[1], rid))
            if i < len(lst) and lst[i] == (e[1], rid):
                del lst[i]
            if not lst:
                del self.by_boot[e[0]]

    def _rows_in(self, boot, lo, hi, whole=True):
        """Pending row ids of `boot` inside lo..hi (whole=True) or overlapping it."""
        lst = self.by_boot.get(boot)
        if not lst:
            return []
        out = []
        i = 0 if not whole else bisect.bisect_left(lst, (lo, -1))
        while i < len(lst) and lst[i][0] <= hi:
            rid = lst[i][1]
            ls = self.pend[rid][2]
            if (ls <= hi and lst[i][0] >= lo) if whole else ls >= lo:
                out.append(rid)
            i += 1
        return out

    # ---- topics
    def topic(self, leaf):
        return "paydbox/%s/%s/%s" % (self.fleet, self.device, leaf)

    def _make_mqtt(self):
        m = self.cfg["mqtt"]
        cid = m.get("client_id") or ("paydbox-agent-" + self.device)
        # .../resend: gap-repair requests of the consumer, which may not send commands (least privilege)
        subs = [self.topic("cmd"), self.topic("resend")] + ([self.topic("ack")] if self.e2e else [])
        self.mq = Publisher(m, cid, self.topic("status"), self._will_json(),
                            on_message=self._on_mqtt_message, sub_topics=subs)

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

    def _bad_frame(self, what, v):
        self.counters["bad_frames"] += 1
        log.warning("malformed %s frame ignored: %.80r", what, v)
        # answered: our HELLO tells the box who is listening, so it can start again cleanly
        if time.monotonic() - self.last_hello_sent > 0.5:
            self.link.send_hello(reply=False, version=VERSION)
            self.last_hello_sent = time.monotonic()

    def _handle_frames(self, frames):
        data = []
        for kind, v in frames:
            try:
                if kind == "data":
                    data.append(v)
                elif kind == "hello":
                    self._on_hello(v)
                elif kind == "keepalive":
                    if isinstance(v, dict):
                        self.box_health = v
                    else:
                        self._bad_frame(kind, v)
                elif kind == "result":
                    if (isinstance(v, dict) and isinstance(v.get("id"), (str, int))
                        and not isinstance(v["id"], bool)):
                        self._on_result(v)
                    else:
                        self._bad_frame(kind, v)
                elif kind == "cmd":
                    if isinstance(v, dict) and isinstance(v.get("id"), str):
                        self._on_box_cmd(v)
                    else:
                        self._bad_frame(kind, v)
            except Exception:  # the agent is the supervisor: a frame it did not foresee must not stop it
                self.counters["internal_errors"] += 1
                log.exception("error handling a %s frame", kind)
        if data:
            self._store_and_ack(data)

    def _on_hello(self, v):
        if isinstance(v, dict) and v.get("role") == "agent":
            return  # our own HELLO echoed, or another agent on the line
        if not _valid_box_hello(v):
            self._bad_frame("hello", v)
            return
        if self.device is not None and v["device"] != self.device:
            self.counters["device_mismatch"] += 1
            if self.counters["device_mismatch"] == 1 or self.counters["device_mismatch"] % 100 == 0:
                log.error("box %r is not this agent's device %r: refused", v["device"], self.device)
            self.link.box = None
            return
        if self.link.box != v:
            log.info("box hello: device %s fw %s boot %s", v.get("device"), v.get("fw"), v.get("boot"))
        self.link.box = v
        if self.device is None:
            self.device = v["device"]
            self.queue.set_meta("device", self.device)
            log.info("agent bound to device %s", self.device)
            if self.use_mqtt:
                self._make_mqtt()
        self.link.send_hello(reply=True, version=VERSION)

    def _on_box_cmd(self, v):
        """A command of the box (docs/link-protocol.md). "shutdown": the box is about to cut this
        agent's supply rail. Every acknowledged block is already committed; the queue is checkpointed
        (sync), the box gets its RESULT, then the machine powers off through systemd
        (agent.poweroff_command; systemd stops this service with SIGTERM). A repeated command (the
        RESULT was lost) gets the same answer and no second power-off."""
        if v.get("cmd") != "shutdown":
            self.link.send_result({"id": v["id"], "ok": False, "error": "unsupported command"})
            return
        first = self.shutdown_at is None
        if first:
            self.shutdown_at = time.monotonic()
            self.queue.sync()
        self.link.send_result({"id": v["id"], "ok": True, "cmd": "shutdown", "pending": self.queue.rows})
        if first:
            log.warning("box asks for shutdown: queue synced (%d rows pending), running %r", self.queue.rows,
                        self.poweroff_command)
            if self.poweroff_command:
                try:
                    subprocess.Popen(shlex.split(self.poweroff_command))
                except OSError as e:
                    log.error("poweroff command %r failed: %s", self.poweroff_command, e)

    def _check_block(self, fs, ls, prio, block):
        """None if the block is the bound device's and checks (CRC, header), else the reason."""
        if not (0 <= prio <= 4 and fs <= ls):
            return "bad DATA header"
        try:
            hdr = decoder.decode_header(block)[0]
        except decoder.CodecError as e:
            return "block: %s" % e
        if hdr["device"] != self.device:
            self.counters["device_mismatch"] += 1
            return "block of device %r" % hdr["device"]
        if hdr["first_seq"] != fs or hdr["count"] < 1 or hdr["count"] > ls - fs + 1:
            return "block seqs do not match the DATA header"
        return None

    def _wanted(self, fs):
        now = time.monotonic()
        self.wanted = [w for w in self.wanted if w[2] > now]
        for lo, hi, _ in self.wanted:
            if lo <= fs <= hi:
                return True
        return False

    def _store_and_ack(self, data):
        box = self.link.box
        if box is None:
            # we do not know whose blocks these are: no ack, ask the box who it is
            if time.monotonic() - self.last_hello_sent > 0.5:
                self.link.send_hello(reply=False, version=VERSION)
                self.last_hello_sent = time.monotonic()
            return
        self.counters["blocks_rx"] += len(data)
        # the row's boot is the block's own (a box sends blocks stored before its last reboot too)
        by_boot = {}
        bad = set()
        for fs, ls, prio, block in data:
            why = self._check_block(fs, ls, prio, block)
            if why is None:
                boot = decoder.decode_header(block)[0]["boot"]
            else:
                boot = int(box["boot"])
                bad.add(fs)
                self.counters["blocks_quarantined"] += 1
                log.error("block %d quarantined: %s", fs, why)
            by_boot.setdefault(boot, []).append((fs, ls, min(max(prio, 0), 4), block))
        ack = []
        now = time.monotonic()
        for boot, items in by_boot.items():
            a, refused, stored, dropped = self.queue.add_batch(self.device, boot, items, wanted=self._wanted,
                                                               quarantine=bad)
            ack += a
            self.counters["blocks_dup"] += (len(a) - len(stored)
                                            - len([fs for fs, _, _, _ in items if fs in bad]))
            if refused:
                if not self.counters["blocks_refused"]:
                    log.error("queue full (%d bytes): not acknowledging the box", self.queue.bytes)
                self.counters["blocks_refused"] += len(refused)
            for rid, fs, ls, prio in stored:
                self._track(rid, boot, fs, ls, prio, now)
            if dropped:
                self._dropped(dropped)
        if ack:
            self.link.send_ack(ack)

    def _dropped(self, rows):
        n_rec = 0
        for rid, fs, ls in rows:
            self._untrack(rid)
            n_rec += ls - fs + 1
        self.counters["dropped_blocks"] += len(rows)
        self.counters["dropped_records"] += n_rec
        self.queue.set_meta("dropped_blocks", str(self.counters["dropped_blocks"]))
        self.queue.set_meta("dropped_records", str(self.counters["dropped_records"]))
        log.error("queue full: DROPPED %d unacknowledged blocks (%d records), seqs %s", len(rows), n_rec,
                  ", ".join("%d-%d" % (fs, ls) for _, fs, ls in rows[:8]))
        self.last_status_key = None  # the alarm goes out now

    def _pending(self, d, until):
        return {"d": d, "tries": 0, "next": 0.0, "sent": None, "until": until}

    def _load_cmds(self):
        raw = self.queue.get_meta("cmd_state")
        if not raw:
            return
        now = time.monotonic()
        try:
            st = json.loads(raw)
            if st.get("device") != self.device:  # the queue was bound to another box: not its commands
                return
            self.recent_cmd_ids = list(st["recent"])[-CMD_IDS_KEPT:]
            # deadlines are time.monotonic() of the boot that wrote them; after a reboot of the machine
            # (another boot id) a command's wait is counted again from this start
            same_boot = st.get("boot_id") is not None and st.get("boot_id") == _boot_id()
            for e in st["pending"]:
                d, until = (e["d"], e.get("until")) if "id" not in e else (e, None)  # "id": the older format
                if not same_boot or not isinstance(until, (int, float)):
                    until = now + self.cmd_expiry_s
                self.pending_cmds[d["id"]] = self._pending(d, float(until))
            for cid, res, acked, by_agent in st.get("results", []):
                if not isinstance(res, dict):
                    raise TypeError("result of %r" % (cid,))
                self.cmd_results[cid] = {"r": res, "acked": bool(acked), "agent": bool(by_agent), "mid": None,
                                         "t": 0.0}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.error("queue meta cmd_state unreadable (%s): commands taken before the restart forgotten", e)
            self.pending_cmds, self.recent_cmd_ids, self.cmd_results = {}, [], {}
            return
        if self.pending_cmds:
            log.info("%d downlink command(s) taken before the restart still wait for the box: %s",
                     len(self.pending_cmds), ", ".join(str(c) for c in list(self.pending_cmds)[:8]))
        unacked = [c for c, e in self.cmd_results.items() if not e["acked"]]
        if unacked:
            log.info("%d command result(s) the broker had not acknowledged before the restart are published "
                     "again: %s", len(unacked), ", ".join(str(c) for c in unacked[:8]))

    def _save_cmds(self):
        self.queue.set_meta("cmd_state", json.dumps({
            "device": self.device, "boot_id": _boot_id(), "recent": self.recent_cmd_ids,
            "pending": [{"d": p["d"], "until": p["until"]} for p in self.pending_cmds.values()],
            "results": [[cid, e["r"], e["acked"], e["agent"]] for cid, e in self.cmd_results.items()]}))

    def _answer(self, cid, res, by_agent=False):
        """The result of command `cid` on cmd/result. Kept in the database (cmd_state) before it goes out and
        until the broker's PUBACK for it: the agent killed in between publishes it again after its restart
        (so a result reaches ops at least once, maybe twice); then kept among the last RESULTS_KEPT to
        answer the same id again."""
        self.cmd_results.pop(cid, None)  # moved to the end: the newest finished
        self.cmd_results[cid] = {"r": res, "acked": False, "agent": by_agent, "mid": None, "t": 0.0}
        acked = [c for c, e in self.cmd_results.items() if e["acked"]]
        for c in acked[:-RESULTS_KEPT]:
            del self.cmd_results[c]
        self._save_cmds()
        self._publish_result(cid, time.monotonic())

    def _publish_result(self, cid, now):
        e = self.cmd_results[cid]
        if self.mq is None or not self.mq.connected:
            return  # published once connected (_service_results)
        mid = self.mq.publish(self.topic("cmd/result"), json.dumps(e["r"]), qos=1)
        if mid is None:
            return
        e["mid"] = (self.mq.generation, mid)
        e["t"] = now
        self.result_mids[mid] = cid

    def _result_acked(self, mid):
        cid = self.result_mids.pop(mid, None)
        e = self.cmd_results.get(cid) if cid is not None else None
        if e is None or e["mid"] != (self.mq.generation, mid):
            return
        e["acked"] = True
        e["mid"] = None
        self._save_cmds()

    def _service_results(self, now):
        """Results without a PUBACK: published when the broker is there (after a restart, a publish while
        disconnected), again when paho's client was replaced (its in-flight messages went with it) or
        after republish_after_s without an acknowledgement."""
        if not self.mq.connected:
            return
        for cid, e in list(self.cmd_results.items()):
            if e["acked"]:
                continue
            m = e["mid"]
            if m is not None and m[0] == self.mq.generation and now - e["t"] <= self.republish_after_s:
                continue
            if m is not None:
                self.result_mids.pop(m[1], None)
                self.counters["results_republished"] += 1
            self._publish_result(cid, now)

    def _on_result(self, v):
        """The box's RESULT to a command. The box answers a retransmission of its last command with the
        same result: a second RESULT for a command answered by the box already is not published again."""
        cid = v.get("id")
        self.counters["results"] += 1
        if self.mq is None:
            return
        if self.pending_cmds.pop(cid, None) is None:
            e = self.cmd_results.get(cid)
            if e is not None and not e["agent"]:
                return
            # else a late answer after the agent gave up ("box did not answer", "expired": the box ran it
            # after all), or an id the agent does not know: published
        self._answer(cid, v)

    # ---- downlink
    def _on_mqtt_message(self, msg):
        try:
            if msg.topic == self.topic("ack"):
                self._on_e2e_ack(msg)
            elif msg.topic == self.topic("resend"):
                self._on_cmd_message(msg, resend_only=True)
            else:
                self._on_cmd_message(msg)
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("error handling a message on %s", msg.topic)

    def _on_e2e_ack(self, msg):
        """The consumer's end-to-end acknowledgement: JSON {"boot": B, "held": [[lo, hi], ...], "blocks":
        [[first_seq, last_seq], ...]}: the seq ranges of boot B it has committed, and the blocks it has just
        committed. Every pending row of B inside a held range, or named in blocks, is done."""
        try:
            d = json.loads(msg.payload)
            if not isinstance(d, dict) or not _is_int(d.get("boot")):
                raise ValueError("boot")
            held = _ranges(d.get("held"))
            blocks = _ranges(d.get("blocks", []))
        except (ValueError, TypeError, RecursionError) as e:
            self.counters["bad_acks"] += 1
            log.warning("malformed end-to-end ack ignored: %s", e)
            return
        self.counters["e2e_acks"] += 1
        ids = set()
        for lo, hi in held + blocks:
            ids.update(self._rows_in(d["boot"], lo, hi))
        ids = sorted(ids)
        if ids:
            self.delivery.done("mqtt", ids)
            for rid in ids:
                self._untrack(rid)
            self.counters["e2e_acked"] += len(ids)

    def _bad_cmd(self, topic, d, why):
        """A command the agent cannot take: counted, logged and answered on cmd/result with one line naming
        the problem. The answer is kept like any result (cmd_state) until the broker PUBACKs it, under a key
        of its own (NUL-led: _parse_cmd refuses such ids), so it is never silently lost."""
        self.counters["bad_cmds"] += 1
        cid = d.get("id") if isinstance(d, dict) else None
        if not (isinstance(cid, (str, int)) and not isinstance(cid, bool)):
            cid = None
        log.warning("bad command on %s refused: %s", topic, why)
        key = "\0bad-%d-%d" % (int(time.time() * 1000), self.counters["bad_cmds"])
        self._answer(key, {"id": cid, "ok": False, "error": why}, by_agent=True)

    def _on_cmd_message(self, msg, resend_only=False):
        if msg.retain:
            log.warning("ignoring retained command on %s", msg.topic)
            return
        d, why = _parse_cmd(msg.payload)
        if why is not None:
            self._bad_cmd(msg.topic, d, why)
            return
        cid = d["id"]
        if resend_only and d["cmd"] != "resend":
            self.counters["bad_acks"] += 1
            log.warning("only resend requests are taken on %s, not %r", msg.topic, d["cmd"])
            return
        if cid in self.pending_cmds:
            return  # QoS 1 redelivery of a command still waiting for the box: answered when the box answers
        if cid in self.cmd_results or cid in self.recent_cmd_ids:
            # taken and finished (a redelivery, or ops asking again because no result reached them): the
            # stored result again, the command is not run again
            self.counters["cmd_repeats"] += 1
            e = self.cmd_results.get(cid)
            if e is not None:
                self._answer(cid, e["r"], e["agent"])
            else:
                self._answer(cid, {"id": cid, "ok": False, "error": "command id already taken; its result is "
                                   "no longer kept (command ids must be unique)"}, by_agent=True)
            return
        self.recent_cmd_ids = (self.recent_cmd_ids + [cid])[-CMD_IDS_KEPT:]
        self.counters["cmds"] += 1
        if d["cmd"] == "resend":
            self._on_resend(cid, d)
        else:
            self.pending_cmds[cid] = self._pending(d, time.monotonic() + self._cmd_ttl(msg))
        self._save_cmds()  # durable before paho sends the PUBACK

    def _cmd_ttl(self, msg):
        """Seconds a command may wait for the box: agent.cmd_expiry_s, or the MQTT 5 message expiry interval
        (the broker passes on what is left of it) when that is sooner."""
        ttl = self.cmd_expiry_s
        left = getattr(getattr(msg, "properties", None), "MessageExpiryInterval", None)
        if _is_int(left) and left > 0:
            ttl = min(ttl, float(left))
        return ttl

    def _on_resend(self, cid, d):
        """Gap repair: {"id", "cmd": "resend", "boot": B, "ranges": [[lo, hi], ...]}. What the agent holds
        (pending or archived) is published again; what it does not hold is asked from the box."""
        try:
            boot = d.get("boot")
            if not _is_int(boot):
                raise ValueError("boot: an integer expected")
            ranges = _ranges(d.get("ranges"))
        except ValueError as e:
            self._answer(cid, {"id": cid, "cmd": "resend", "ok": False, "error": str(e)}, by_agent=True)
            return
        self.counters["resend_requests"] += 1
        now = time.monotonic()
        n = 0
        ask = []
        for lo, hi in ranges:
            for rid in self._rows_in(boot, lo, hi, whole=False):
                self._make_ready(rid)
                n += 1
            for rid, fs, ls, prio in self.queue.unarchive(self.device, boot, lo, hi):
                self._track(rid, boot, fs, ls, prio, now)
                self.counters["resent_from_archive"] += 1
                n += 1
            ask += [list(r) for r in subtract(lo, hi, self.queue.spans(self.device, boot, lo, hi))]
        res = {"id": cid, "cmd": "resend", "ok": True, "boot": boot, "agent_resent": n}
        if ask:
            # the box still holds what it has not evicted; it answers with what it could not find
            for lo, hi in ask:  # blocks the box sends again for these are stored although seen before
                self.wanted.append((lo, hi, now + 300.0))
            self.wanted = self.wanted[-MAX_RANGES:]
            self.pending_cmds[cid] = self._pending({"id": cid, "cmd": "resend", "boot": boot,
                                                    "ranges": ask[:64]}, now + self.cmd_expiry_s)
        else:
            res["missing"] = []
            self._answer(cid, res, by_agent=True)

    def _service_cmds(self, now):
        """Commands for the box, sent every cmd_retry_s while the link is up. An attempt counts only if
        the box was heard (any frame) after it was sent and before the retry came due: a box that is away
        (link down, asleep, rebooting, a cable out) had no chance to answer, and its command waits, up to
        its deadline. "box did not answer" after cmd_tries attempts the box was there for; "expired" at the
        deadline."""
        for cid in list(self.pending_cmds):
            p = self.pending_cmds[cid]
            if now < p["next"]:
                continue
            if p["sent"] is not None:
                heard = self.link.last_rx if self.link is not None else None
                if heard is not None and heard > p["sent"]:
                    p["tries"] += 1
                p["sent"] = None
            if p["tries"] >= self.cmd_tries:
                del self.pending_cmds[cid]
                self._answer(cid, {"id": cid, "ok": False, "error": "box did not answer",
                                   "tries": p["tries"]}, by_agent=True)
                continue
            if now >= p["until"]:
                del self.pending_cmds[cid]
                self.counters["cmd_expired"] += 1
                self._answer(cid, {"id": cid, "ok": False, "error": "expired: the box did not answer in time",
                                   "tries": p["tries"]}, by_agent=True)
                continue
            if self._link_up():
                self.link.send_cmd(p["d"])
                p["sent"] = time.monotonic()  # after the frames this step read (link.last_rx)
            p["next"] = now + self.cmd_retry_s

    # ---- uplink
    def _on_pubacks(self, now):
        # PUBACKs: the broker has it; the row waits for the consumer (or goes, without end-to-end acks)
        mids = self.mq.drain_acks()
        if mids:
            done = []
            for mid in mids:
                e = self.inflight.pop(mid, None)
                if e is None:
                    self._result_acked(mid)
                    continue
                self.counters["puback"] += 1
                row = self.pend.get(e[0])
                if row is None or row[4] != _INFLIGHT:
                    continue
                if self.e2e:
                    row[4] = _WAIT
                    row[5] = now + min(self.e2e_timeout_max_s, self.e2e_timeout_s * 2 ** min(row[6], 16))
                    heapq.heappush(self.waitq, (row[5], e[0]))
                else:
                    done.append(e[0])
            if done:
                self.delivery.done("mqtt", done)
                for rid in done:
                    self._untrack(rid)

    def _publish_more(self, now):
        mq = self.mq
        self._on_pubacks(now)
        # rows the consumer has not confirmed in time are published again (duplicates are harmless)
        while self.waitq and self.waitq[0][0] <= now:
            due, rid = heapq.heappop(self.waitq)
            row = self.pend.get(rid)
            if row is not None and row[4] == _WAIT and row[5] == due:
                row[6] += 1
                self._make_ready(rid)
                self.counters["e2e_resent"] += 1
        if not mq.connected:
            return
        # after a (re)connection the retained status goes out first, so the backlog built up while the
        # broker was away is visible before the agent drains it
        self._maybe_status(now)
        # safety net: a message paho still has not got acknowledged for a long time is published again
        for mid, (rid, t) in list(self.inflight.items()):
            if now - t > self.republish_after_s:
                del self.inflight[mid]
                row = self.pend.get(rid)
                if row is not None and row[4] == _INFLIGHT:
                    row[4] = _WAIT
                    self._make_ready(rid)
                self.counters["republished"] += 1
        free = mq.free_slots(len(self.inflight))
        while free > 0 and self.ready:
            negp, rid = self.ready[0]
            row = self.pend.get(rid)
            if row is None or row[4] != _READY:
                heapq.heappop(self.ready)
                continue
            r = self.queue.get(rid)
            if r is None:  # gone from the database (cannot happen while we track it): forget it
                heapq.heappop(self.ready)
                self._untrack(rid)
                continue
            _, device, boot, fs, ls, prio, block = r
            leaf = "records" if prio == 0 else "events"
            mid = mq.publish(self.topic(leaf), block, qos=1,
                             user_props=[("boot", boot), ("first_seq", fs), ("last_seq", ls), ("prio", prio)])
            if mid is None:
                break
            heapq.heappop(self.ready)
            row[4] = _INFLIGHT
            row[7] = now
            self.inflight[mid] = (rid, now)
            self.counters["published"] += 1
            free -= 1

    # ---- status
    def _status(self, state="online"):
        now = time.monotonic()
        oldest = min(self.first_seen.values()) if self.first_seen else None
        awaiting = [r[7] for r in self.pend.values() if r[4] == _WAIT]
        alarms = []
        if self.queue.full:
            alarms.append("queue_full")
        if self.counters["device_mismatch"]:
            alarms.append("device_mismatch")
        if not self._link_up():
            alarms.append("link_down")
        if self.counters["dropped_blocks"]:
            alarms.append("data_dropped")
        if self.queue.quarantined:
            alarms.append("bad_blocks")
        if awaiting and now - min(awaiting) > self.e2e_stall_s:
            alarms.append("e2e_stalled")
        if isinstance(self.box_health, dict) and (self.box_health.get("store_evicted_records") or 0):
            alarms.append("box_evicted")
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
            "on_full": self.queue.on_full,
            # worst since the previous status: an outage's backlog stays visible after it drains
            "queue_rows_peak": max(self.rows_peak, self.queue.rows),
            "queue_was_full": self.was_full or self.queue.full,
            "oldest_unsent_s": 0 if oldest is None else int(now - oldest),
            "inflight": len(self.inflight),
            "e2e_ack": self.e2e,
            "awaiting_e2e": len(awaiting),
            "archive_rows": self.queue.archive_rows,
            "archive_bytes": self.queue.archive_bytes,
            "quarantined": self.queue.quarantined,
            # downlink commands waiting for the box, and results the broker has not acknowledged yet
            "cmd_pending": len(self.pending_cmds),
            "cmd_results_unacked": sum(1 for e in self.cmd_results.values() if not e["acked"]),
            "link": "up" if self._link_up() else "down",
            "box": {"fw": box.get("fw"), "boot": box.get("boot")} if box else None,
            "box_health": self.box_health,
            "alarms": alarms,
            "uptime_s": int(now - self.started),
            "counters": dict(self.counters),
            "link_counters": self.link.stats() if self.link is not None else {},
            "outputs": {f.name: f.stats() for f in self.forwarders},
        }

    def _will_json(self):
        """The last will: the broker publishes it (retained) when the agent is gone without a DISCONNECT
        (SIGKILL, power cut, network loss), at a moment the agent cannot know. So it carries only what stays
        true then: who (fleet, device, agent version) and that it is offline; no queue, link or counter
        figure, which would be the ones of when the client was built (a stale status)."""
        return json.dumps({"state": "offline", "reason": "connection lost", "agent": VERSION,
                           "fleet": self.fleet, "device": self.device}, sort_keys=True)

    def _status_json(self, state="online"):
        return json.dumps(self._status(state), sort_keys=True)

    def _maybe_status(self, now):
        if self.queue.rows > self.rows_peak:
            self.rows_peak = self.queue.rows
        if self.queue.full:
            self.was_full = True
        if self.mq is None or not self.mq.connected:
            return
        key = (self.queue.full, self._link_up(), self.mq.connects, self.counters["dropped_blocks"],
               self.queue.quarantined)
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
        for f in self.forwarders:
            f.step(now, self.device)
        if self.mq is not None:
            self.mq.step(0.0)
            self._publish_more(now)
            self._service_cmds(now)
            self._service_results(now)
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
            # graceful stop: give outstanding PUBACKs a moment (rows stay pending until the consumer acks;
            # results without one are published again after the restart)
            end = time.monotonic() + 2.0
            while (self.inflight or self.result_mids) and self.mq.connected and time.monotonic() < end:
                self.mq.step(0.02)
                self._on_pubacks(time.monotonic())
            self.mq.close(self._status_json("offline"))
        for f in self.forwarders:
            f.close()
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
