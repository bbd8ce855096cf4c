"""A simulated box for tests and benchmarks: the real firmware/link.py BoxLink, driven in a thread,
talking over a pty pair (the agent opens the pty's slave path as its serial port), with an in-memory
store using the firmware/store.py API and an optional line corruptor (byte loss and bit flips, both
directions). Also: an MQTT collector that deduplicates what arrives by (device, first_seq)."""
import errno
import json
import math
import os
import random
import select
import subprocess
import sys
import threading
import time

from firmware.link import BoxLink
from hw.linux import RawPty


class MemStore:
    """In-memory store with the firmware/store.py API (append/peek/ack/next_seq/stats); thread-safe."""

    def __init__(self, first_seq=1):
        self.lock = threading.Lock()
        self.blocks = {}
        self.seq = first_seq
        self.acked = 0

    def next_seq(self):
        with self.lock:
            s = self.seq
            self.seq += 1
            return s

    def append(self, block, first_seq, last_seq, prio, count):
        # (count: the records in the block, as firmware/store.py takes it; this double keeps no counts)
        with self.lock:
            self.blocks[first_seq] = (first_seq, last_seq, prio, bytes(block))

    def peek(self, n):
        with self.lock:
            ks = sorted(self.blocks, key=lambda fs: (-self.blocks[fs][2], fs))[:n]
            return [self.blocks[k] for k in ks]

    def ack(self, first_seq):
        with self.lock:
            if self.blocks.pop(first_seq, None) is not None:
                self.acked += 1

    def pending(self):
        with self.lock:
            return len(self.blocks)

    def stats(self):
        with self.lock:
            return {"blocks": len(self.blocks), "used_bytes": sum(len(b[3]) for b in self.blocks.values())}


def make_block(device, boot, first_seq, count, rng, rec_bytes=12):
    """A REAL codec block (firmware.codec) of `count` position records first_seq.. whose random jumps
    cost about rec_bytes each, so blocks are sized like a noisy drive's. The agent checks the block's
    own CRC and header before it acknowledges it, as it does for the box's."""
    from firmware import codec

    enc = codec.BlockEncoder(device, boot, max(512, count * (rec_bytes + 8) + 64))
    lat, lon = 481370000, 115750000
    for i in range(count):
        lat += rng.randrange(-1 << (rec_bytes * 2), 1 << (rec_bytes * 2))
        lon += rng.randrange(-1 << (rec_bytes * 2), 1 << (rec_bytes * 2))
        rec = {"type": "pos", "seq": first_seq + i, "t_ms": 1000 * (first_seq + i), "utc_s": first_seq + i,
               "lat_e7": lat, "lon_e7": lon, "speed_mmps": rng.randrange(0, 40000),
               "course_cdeg": rng.randrange(0, 36000), "hdop_x10": rng.randrange(5, 30),
               "sats": rng.randrange(4, 20)}
        if not enc.add(rec):
            raise ValueError("make_block: %d records do not fit" % count)
    return enc.finish()


def block_ok(block):
    from firmware import decoder

    try:
        decoder.decode_header(block)
        return True
    except decoder.CodecError:
        return False


class PtyUart(RawPty):
    """machine.UART subset (any/readinto/write) over a pty master; writes nobody reads are lost,
    like bits on a wire. loss/flip: per-byte probabilities applied in both directions."""

    def __init__(self, loss=0.0, flip=0.0, seed=1):
        RawPty.__init__(self)
        self.loss = loss
        self.flip = flip
        self.rng = random.Random(seed)
        self.line_tx = 0  # bytes the box put on the line
        self.line_rx = 0
        self.corrupted = 0

    def _mangle(self, data):
        if not self.loss and not self.flip:
            return data
        out = bytearray()
        r = self.rng.random
        for b in data:
            x = r()
            if x < self.loss:
                self.corrupted += 1
                continue
            if x < self.loss + self.flip:
                b ^= 1 << self.rng.randrange(8)
                self.corrupted += 1
            out.append(b)
        return bytes(out)

    def any(self):
        r, _, _ = select.select([self.master], [], [], 0)
        return 4096 if r else 0

    def readinto(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        try:
            data = os.read(self.master, n)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EIO):
                return 0
            raise
        self.line_rx += len(data)
        data = self._mangle(data)
        buf[0 : len(data)] = data
        return len(data)

    def write(self, b):
        data = bytes(b)
        self.line_tx += len(data)
        data = self._mangle(data)
        try:
            os.write(self.master, data)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EIO):
                raise
        return len(b)


class SimBox:
    """BoxLink + MemStore + producer, polled in a thread every poll_ms."""

    def __init__(self, device="box-0001", boot=1, loss=0.0, flip=0.0, window=8, rto_ms=500, poll_ms=5,
                 seed=1, on_command=None):
        self.device = device
        self.boot = boot
        self.store = MemStore()
        self.uart = PtyUart(loss, flip, seed)
        self.rng = random.Random(seed)
        self.link = BoxLink(self.uart, self.store, device, "sim-1.0", boot, window=window, rto_ms=rto_ms,
                            on_command=on_command)
        self.poll_ms = poll_ms
        self.produced = {}  # first_seq -> block
        self.records = 0
        self.lock = threading.Lock()
        self._stop = False
        self.thread = None
        self.t0 = time.monotonic()

    @property
    def path(self):
        return self.uart.path

    def produce(self, nblocks, records_per_block=32, prio=0):
        # encoded first, then appended as one burst (as a box that was offline would hand them over)
        with self.store.lock:
            fs0 = self.store.seq
            self.store.seq += nblocks * records_per_block
        made = []
        for i in range(nblocks):
            fs = fs0 + i * records_per_block
            made.append((fs, make_block(self.device, self.boot, fs, records_per_block, self.rng)))
        for fs, b in made:
            with self.lock:
                self.produced[fs] = b
                self.records += records_per_block
            self.store.append(b, fs, fs + records_per_block - 1, prio, records_per_block)

    def _run(self):
        while not self._stop:
            with self.lock:
                self.link.poll(int((time.monotonic() - self.t0) * 1000))
            time.sleep(self.poll_ms / 1000)

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self._stop = True
        if self.thread:
            self.thread.join(5)
        self.uart.close()


class Collector:
    """Subscribes to paydbox/<fleet>/<device>/# and keeps each block once by (device, first_seq).
    With e2e_ack (the default) it acknowledges each block end to end on .../ack, as the consumer does
    after its commit (docs/mqtt-topics.md), so the agent may retire the row."""

    def __init__(self, host, port, topic, username=None, password=None, client_id=None, e2e_ack=True):
        import paho.mqtt.client as mqtt

        self.got = {}
        self.all = []  # every records/events payload as it arrived (duplicates included)
        self.dups = 0
        self.bad = 0
        self.order = []
        self.status = []
        self.results = []
        self.other = []
        self.e2e_ack = e2e_ack
        self.lock = threading.Lock()
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or "collector-%d" % os.getpid(), protocol=mqtt.MQTTv5)
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_message = self._on_message
        self.subscribed = threading.Event()
        self.topic = topic

        def on_connect(client, userdata, flags, rc, props):
            client.subscribe(topic, qos=1)

        def on_subscribe(client, userdata, mid, rcs, props):
            self.subscribed.set()

        self.c.on_connect = on_connect
        self.c.on_subscribe = on_subscribe
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # persistent session: nothing is missed while we reconnect
        self.c.connect(host, port, clean_start=False, properties=props)
        self.c.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("collector could not subscribe to %s" % topic)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            leaf = msg.topic.split("/", 3)[3] if msg.topic.count("/") >= 3 else msg.topic
            if leaf in ("records", "events"):
                self.all.append(bytes(msg.payload))
                props = dict(getattr(msg.properties, "UserProperty", []) or [])
                device = msg.topic.split("/")[2]
                if not block_ok(msg.payload):
                    self.bad += 1
                    return
                fs = int(props["first_seq"])
                if self.e2e_ack:
                    ack = {"boot": int(props["boot"]), "held": [[fs, int(props["last_seq"])]]}
                    client.publish(msg.topic.rsplit("/", 1)[0] + "/ack", json.dumps(ack), qos=1)
                key = (device, fs)
                if key in self.got:
                    self.dups += 1
                    if self.got[key] != msg.payload:
                        self.bad += 1
                    return
                self.got[key] = bytes(msg.payload)
                self.order.append(fs)
            elif leaf == "status":
                self.status.append(json.loads(msg.payload))
            elif leaf == "cmd/result":
                self.results.append(json.loads(msg.payload))
            elif leaf == "ack":
                pass
            else:
                self.other.append((msg.topic, msg.payload))

    def count(self):
        with self.lock:
            return len(self.got)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def write_agent_config(path, fleet, device, serial_url, queue_path, host, port, max_bytes=50_000_000,
                       extra_mqtt=None, status_interval_s=1.0, inflight=32):
    lines = [
        "[device]", 'fleet = "%s"' % fleet, 'id = "%s"' % device, "",
        "[serial]", 'url = "%s"' % serial_url, "baudrate = 115200", "",
        "[queue]", 'path = "%s"' % queue_path, "max_bytes = %d" % max_bytes, "",
        "[agent]", "status_interval_s = %s" % status_interval_s, "",
        "[mqtt]", 'host = "%s"' % host, "port = %d" % port, "inflight = %d" % inflight,
        "backoff_min_s = 0.2", "backoff_max_s = 2.0",
    ]
    for k, v in (extra_mqtt or {}).items():
        lines.append("%s = %s" % (k, json.dumps(v)))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


class Proc:
    """A real process of this project (`python -m ...`) that can be SIGKILLed and started again."""

    def __init__(self, args, log_path):
        self.args = list(args)
        self.log_path = log_path
        self.proc = None
        self.kills = 0

    def start(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("NOTIFY_SOCKET", None)
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable] + self.args, stdout=logf, stderr=logf, env=env,
                                     cwd=root)
        logf.close()
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1

    def terminate(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class AgentProc(Proc):
    """The real agent as a subprocess (python -m edge_agent.agent)."""

    def __init__(self, config_path, log_path):
        Proc.__init__(self, ["-m", "edge_agent.agent", "--config", config_path], log_path)
        self.config_path = config_path


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class DriveGen:
    """Records like the box's (firmware/app.py), encoded into REAL codec blocks with
    firmware.codec.BlockEncoder and appended to a store: pos at 1 Hz while driving, trip_start/trip_end,
    harsh events, a periodic status record and one crash (its own block, committed at once, prio 4).
    A block is committed when the next record does not fit or 60 s (sim time) after its first record,
    as the app does. Deterministic for a seed; step(sim_s) advances the simulated drive by sim_s seconds.
    produced: (device, boot, seq) -> the record dict as the decoder must give it back."""

    PRIO = {"pos": 0, "event": 1, "status": 1, "trip_start": 2, "trip_end": 2, "crash": 4}
    BLOCK_MAX_AGE_MS = 60000

    def __init__(self, device, boot, store, block_max_bytes=128, seed=1, t0_utc_s=1_700_000_000,
                 crash_at_s=None):
        from firmware import codec

        self.codec = codec
        self.device = device
        self.boot = boot
        self.store = store
        self.rng = random.Random(seed)
        self.enc = codec.BlockEncoder(device, boot, block_max_bytes)
        self.block_max = block_max_bytes
        self.enc_prio = 0
        self.enc_t0 = 0
        self.t_s = 0  # simulated seconds since boot
        self.utc0 = t0_utc_s
        self.lat = 481370000.0
        self.lon = 115750000.0
        self.speed = 0
        self.course = 9000
        self.trip_start_s = 0
        self.trip_len_s = 0
        self.driving = False
        self.stop_until = 0
        self.crash_at_s = crash_at_s
        self.produced = {}
        self.blocks = 0
        self.block_bytes = 0
        self.lock = threading.Lock()

    def _emit(self, rec):
        rec["seq"] = seq = self.store.next_seq()
        if rec["type"] == "trip_start":
            rec["trip"] = seq
        rec.setdefault("utc_s", self.utc0 + self.t_s)
        rec.setdefault("t_ms", self.t_s * 1000 + self.rng.randrange(0, 40))
        if self.enc.count == 0 or self.enc.first_seq < 0:
            self.enc_t0 = rec["t_ms"]
        if not self.enc.add(rec):
            self.flush()
            self.enc_t0 = rec["t_ms"]
            if not self.enc.add(rec):
                raise ValueError("record too large for a block: " + rec["type"])
        self.enc_prio = max(self.enc_prio, self.PRIO[rec["type"]])
        self.last_seq = seq
        with self.lock:
            self.produced[(self.device, self.boot, seq)] = dict(rec)

    def flush(self):
        if self.enc.count == 0 or self.enc.first_seq < 0:
            return
        fs, prio = self.enc.first_seq, self.enc_prio
        block = self.enc.finish()
        self.store.append(block, fs, self.enc.last_seq, prio, self.enc.count)
        self.enc.reset()
        self.enc_prio = 0
        self.blocks += 1
        self.block_bytes += len(block)

    def _move(self):
        r = self.rng
        self.speed = max(0, min(36000, self.speed + r.randrange(-900, 1000)))
        self.course = (self.course + r.randrange(-300, 301)) % 36000
        d_m = self.speed / 1000.0
        rad = self.course * 1.7453292519943295e-4
        self.lat += d_m * math.cos(rad) * 89.83 + r.gauss(0, 8)
        self.lon += d_m * math.sin(rad) * 89.83 / math.cos(self.lat * 1.7453292519943295e-9) + r.gauss(0, 8)

    def _second(self):
        r = self.rng
        s = self.t_s
        if not self.driving:
            if s >= self.stop_until:
                self.driving = True
                self.trip_start_s = s
                self.trip_len_s = r.randrange(600, 1800)
                self.speed = 0
                self.trip_lat, self.trip_lon = int(self.lat), int(self.lon)
                self._emit({"type": "trip_start", "lat_e7": self.trip_lat, "lon_e7": self.trip_lon})
                self.trip_seq = self.last_seq  # the trip's id is its trip_start's seq (firmware/app.py)
        else:
            self._move()
            self._emit({"type": "pos", "lat_e7": int(self.lat), "lon_e7": int(self.lon),
                        "speed_mmps": self.speed, "course_cdeg": self.course, "hdop_x10": r.randrange(7, 15),
                        "sats": r.randrange(6, 14)})
            if r.random() < 1 / 150.0:
                self._emit({"type": "event",
                            "kind": r.choice(("harsh_brake", "harsh_accel", "harsh_corner_left")),
                            "dur_ms": r.randrange(300, 2000), "peak_mg": r.randrange(300, 700),
                            "mean_mg": r.randrange(200, 300), "speed_start_mmps": self.speed,
                            "speed_end_mmps": max(0, self.speed - 3000), "lat_e7": int(self.lat),
                            "lon_e7": int(self.lon), "course_cdeg": self.course})
            if self.crash_at_s is not None and s == self.crash_at_s:
                self.flush()  # a crash gets a block of its own, committed at once (firmware/app.py)
                self._emit({"type": "crash", "peak_mg": 4200, "lat_e7": int(self.lat),
                            "lon_e7": int(self.lon), "speed_mmps": self.speed, "rate_hz": 100, "pre_ms": 2000,
                            "samples": bytes(r.getrandbits(8) for _ in range(24))})
                self.flush()
            if s - self.trip_start_s >= self.trip_len_s:
                self._emit({"type": "trip_end", "trip": self.trip_seq, "start_t_ms": self.trip_start_s * 1000,
                            "end_t_ms": s * 1000, "start_utc_s": self.utc0 + self.trip_start_s,
                            "end_utc_s": self.utc0 + s, "start_lat_e7": self.trip_lat,
                            "start_lon_e7": self.trip_lon, "end_lat_e7": int(self.lat),
                            "end_lon_e7": int(self.lon),
                            "distance_m": r.randrange(1000, 30000), "bridged_m": 0,
                            "duration_s": s - self.trip_start_s,
                            "max_speed_mmps": 36000, "n_harsh_accel": 1, "n_harsh_brake": 2,
                            "n_harsh_corner_left": 0, "n_harsh_corner_right": 0, "n_crash": 0,
                            "n_overspeed": 0,
                            "idle_s": 30, "night_s": 0, "overspeed_s": 0, "score": r.randrange(50, 100)})
                self.driving = False
                self.stop_until = s + r.randrange(30, 300)
        if s % 600 == 0:
            self._emit({"type": "status", "fw": "sim-1.0", "boot": self.boot, "store_used": self.block_bytes,
                        "store_evicted": 0, "gnss_ok": 1, "accel_ok": 1, "odometer_m": s * 12,
                        "calib": "calibrated", "calib_quality": 90})
        if self.enc.count and self.enc.first_seq >= 0 and s * 1000 - self.enc_t0 >= self.BLOCK_MAX_AGE_MS:
            self.flush()
        self.t_s += 1

    def step(self, sim_s=1):
        for _ in range(sim_s):
            self._second()

    def records(self):
        with self.lock:
            return len(self.produced)
