"""`paydbox fleet-sim`: N simulated edge agents publish codec blocks against a broker while the
reference consumer ingests them; prints what the consumer keeps up with.

Each simulated box has its own device id and MQTT client (one thread each); its records are a
realistic drive (1 Hz positions along a smooth route with stops, harsh events, trip_start/trip_end,
status) encoded by the real codec (`codec.BlockEncoder`, 512-byte blocks as the box makes them) and
published QoS 1 on `paydbox/<fleet>/<device>/records`, paced over --duration seconds (0: as fast as
possible, a backlog test). By default fleet-sim starts --consumers `paydbox ingest` processes in one
share group on a fresh database; lag is measured per block from the publish call to the consumer's
commit (the `blocks.committed_at` column), on one machine and one clock.

Each simulated box keeps the end-to-end contract of the real agent (docs/mqtt-topics.md): it keeps every
block until the consumer acknowledges it on `.../ack` and publishes it again after a timeout, so a consumer
that dies mid-run (--kill-consumer-at) costs time, never records. The consumers' idle timer starts at
their first message (not at their start: 500 boxes take seconds to connect). --repeat N runs the whole
check N times in a row and reports whether the runs agree.
"""
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from tools.consumer import db as consumer_db

BASE_LAT_E7 = 488566000  # Paris
BASE_LON_E7 = 23522000


def add_arguments(p):
    p.add_argument("--broker", required=True, help="mqtt://host:port")
    p.add_argument("--boxes", type=int, required=True, help="number of simulated boxes (agents)")
    p.add_argument("--records-per-box", type=int, default=600,
                   help="records each box sends (default %(default)s)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="spread each box's blocks over S seconds (default 0: as fast as possible)")
    p.add_argument("--consumers", type=int, default=1,
                   help="ingest processes to start in one share group (0: measure an external consumer via "
                        "--db)")
    p.add_argument("--db", help="consumer database, SQLite path or postgresql:// URL (default: a fresh "
                                "temporary SQLite file)")
    p.add_argument("--group", help="share group for the started consumers (default: unique per run)")
    p.add_argument("--fleet", default="sim", help="fleet part of the topic (default %(default)s)")
    p.add_argument("--dup-every", type=int, default=0,
                   help="republish every K-th block (an agent retrying after a lost PUBACK) to check dedup")
    p.add_argument("--max-bytes", type=int, default=512, help="block size limit (default %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up waiting for the consumer after S s")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kill-consumer-at", type=float, default=None, metavar="S",
                   help="SIGKILL one started consumer S seconds after publishing starts (a share-group member"
                        " dying mid-run; needs --consumers >= 2 to keep ingesting)")
    p.add_argument("--e2e-timeout", type=float, default=3.0, metavar="S",
                   help="a box publishes a block again when its end-to-end ack is S seconds late (default 3)")
    p.add_argument("--repeat", type=int, default=1, help="run N times in a row and compare (default 1)")
    p.add_argument("--json", action="store_true")


# ------------------------------------------------------------------ synthetic drive

def _score(summary):
    try:
        from firmware import score as score_mod
        return int(score_mod.score(summary))
    except ImportError:  # firmware/score.py not available: the load test does not depend on the value
        return max(0, 100 - 5 * sum(summary[k] for k in consumer_db.EVENT_COUNT_FIELDS))


def synth_records(n_records, seed=1, start_seq=1, utc0_s=None, t0_ms=5000, lat0_e7=BASE_LAT_E7,
                  lon0_e7=BASE_LON_E7, trip_len=600, boot=1):
    """A realistic record stream of about n_records records: status, then trips of up to trip_len
    1 Hz positions (accelerate, cruise, brake to stops, turns), harsh events, trip_start/trip_end."""
    rnd = random.Random(seed)
    if utc0_s is None:
        utc0_s = int(time.time()) - consumer_db.UTC2000 - 3600
    seq = start_seq
    t_ms = t0_ms
    lat, lon = float(lat0_e7), float(lon0_e7)
    recs = []
    odo_m = rnd.randint(1000, 90000) * 1000

    def rec(rtype, **kw):
        nonlocal seq
        r = {"type": rtype, "seq": seq, "t_ms": t_ms, "utc_s": utc0_s + (t_ms - t0_ms) // 1000}
        r.update(kw)
        seq += 1
        recs.append(r)
        return r

    rec("status", fw="sim-1.0", boot=boot, store_used=rnd.randint(0, 50000), store_evicted=0, gnss_ok=1,
        accel_ok=1, odometer_m=odo_m, calib="calibrated", calib_quality=rnd.randint(70, 99))
    while len(recs) < n_records:
        t_ms += rnd.randint(60, 600) * 1000  # parked between trips
        start = rec("trip_start", trip=seq, lat_e7=int(lat), lon_e7=int(lon))
        start["trip"] = start["seq"]
        start_t, start_utc, start_lat, start_lon = t_ms, start["utc_s"], int(lat), int(lon)
        heading = rnd.uniform(0, 2 * math.pi)
        v = 0.0  # m/s
        cruise = rnd.choice((13.9, 13.9, 19.4, 25.0, 30.5))
        dist = 0.0
        vmax = 0.0
        counts = dict((k, 0) for k in consumer_db.EVENT_COUNT_FIELDS)
        stop_in = rnd.randint(40, 120)
        stopped = 0
        n = min(trip_len, max(10, n_records - len(recs) - 1))
        for i in range(n):
            t_ms += 1000
            if stopped > 0:
                stopped -= 1
                a = 0.0
                v = 0.0
            elif stop_in <= 0:
                a = -min(v, 3.0)
                if v <= 0.5:
                    stopped = rnd.randint(5, 30)
                    stop_in = rnd.randint(40, 150)
                    cruise = rnd.choice((13.9, 13.9, 19.4, 25.0, 30.5))
            else:
                stop_in -= 1
                a = max(-2.5, min(2.0, (cruise - v) * 0.3)) + rnd.gauss(0, 0.2)
            v = max(0.0, v + a)
            if v > 1:
                heading += rnd.gauss(0, 0.06) + (0.5 if rnd.random() < 0.01 else 0.0)
            dn, de = v * math.cos(heading), v * math.sin(heading)
            lat += dn / 111320.0 * 1e7
            lon += de / (111320.0 * math.cos(math.radians(lat / 1e7))) * 1e7
            dist += v
            vmax = max(vmax, v)
            rec("pos", lat_e7=int(lat), lon_e7=int(lon), speed_mmps=int(v * 1000),
                course_cdeg=int(math.degrees(heading) % 360 * 100), hdop_x10=rnd.randint(7, 16),
                sats=rnd.randint(6, 14))
            if len(recs) < n_records - 1 and rnd.random() < 0.012 and v > 5:
                kind = rnd.choice(("harsh_brake", "harsh_brake", "harsh_accel", "harsh_corner_left",
                                   "harsh_corner_right", "overspeed"))
                key = "n_" + kind
                counts[key] += 1
                rec("event", kind=kind, dur_ms=rnd.randint(400, 2500), peak_mg=rnd.randint(300, 650),
                    mean_mg=rnd.randint(200, 300), speed_start_mmps=int(v * 1000),
                    speed_end_mmps=int(max(0.0, v - 4) * 1000) if kind == "harsh_brake" else int(v * 1000),
                    lat_e7=int(lat), lon_e7=int(lon), course_cdeg=int(math.degrees(heading) % 360 * 100))
        odo_m += int(dist)
        summary = {"trip": start["seq"], "start_t_ms": start_t, "end_t_ms": t_ms, "start_utc_s": start_utc,
                   "end_utc_s": utc0_s + (t_ms - t0_ms) // 1000, "start_lat_e7": start_lat,
                   "start_lon_e7": start_lon, "end_lat_e7": int(lat), "end_lon_e7": int(lon),
                   "distance_m": int(dist), "bridged_m": 0, "duration_s": (t_ms - start_t) // 1000,
                   "max_speed_mmps": int(vmax * 1000), "idle_s": 0, "night_s": 0,
                   "overspeed_s": counts["n_overspeed"] * 8}
        summary.update(counts)
        summary["score"] = _score(dict(summary, type="trip_end"))
        rec("trip_end", **summary)
    return recs


def encode_blocks(device, boot, records, max_bytes=512):
    """Records -> [(first_seq, count, block bytes)] with the real codec, as the box does."""
    from firmware import codec
    enc = codec.BlockEncoder(device, boot, max_bytes=max_bytes)
    out = []
    for r in records:
        if not enc.add(r):
            out.append((enc.first_seq, enc.count, enc.finish()))
            if not enc.add(r):
                raise ValueError("record seq %d does not fit in an empty block" % r["seq"])
    if enc.count:
        fs, n = enc.first_seq, enc.count
        out.append((fs, n, enc.finish()))
    return out


# ------------------------------------------------------------------ agents

class SimAgent(threading.Thread):
    def __init__(self, broker, fleet, device, blocks, duration, dup_every=0, boot=1, e2e_timeout_s=3.0,
                 give_up_s=120.0):
        threading.Thread.__init__(self, daemon=True)
        self.broker, self.fleet, self.device, self.blocks = broker, fleet, device, blocks
        self.duration, self.dup_every, self.boot = duration, dup_every, boot
        self.e2e_timeout_s, self.give_up_s = e2e_timeout_s, give_up_s
        self.published = {}  # first_seq -> publish time
        self.dups = 0
        self.sent_records = 0
        self.unacked = 0  # publishes the broker never acknowledged (PUBACK)
        self.acked = set()  # first_seqs the consumer acknowledged end to end
        self.resent = 0
        self.resent_records = 0  # records in the blocks published again (each a duplicate at the consumer)
        self.error = None

    def _on_ack(self, client, userdata, msg):
        try:
            d = json.loads(msg.payload)
            if d.get("boot") != self.boot:
                return
            ranges = list(d.get("held", [])) + list(d.get("blocks", []))
        except (ValueError, AttributeError, TypeError):
            return
        for first_seq, count, _ in self.blocks:
            if first_seq in self.acked:
                continue
            last = first_seq + count - 1
            for lo, hi in ranges:
                if lo <= first_seq and last <= hi:
                    self.acked.add(first_seq)
                    break

    def open(self):
        """Connect and wait for the CONNACK (done one box after another before the clock starts)."""
        from tools.consumer.ingest import connect, make_client
        c = make_client("paydbox-sim-" + self.device, self.broker, clean_start=True)
        c.max_inflight_messages_set(100)
        connected = threading.Event()
        subscribed = threading.Event()
        ack_topic = "paydbox/%s/%s/ack" % (self.fleet, self.device)

        def on_connect(cl, ud, fl, rc, pr):
            if not rc.is_failure:
                connected.set()
                cl.subscribe(ack_topic, qos=1)

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: subscribed.set()
        c.message_callback_add(ack_topic, self._on_ack)
        connect(c)
        c.loop_start()
        if not connected.wait(30) or not subscribed.wait(30):
            c.loop_stop()
            raise RuntimeError("box %s: no CONNACK / SUBACK within 30 s" % self.device)
        self.client = c

    def run(self):
        try:
            c = self.client
            base = "paydbox/%s/%s/" % (self.fleet, self.device)
            c.publish(base + "status", json.dumps({"device": self.device, "online": True, "sim": True}),
                      qos=1, retain=True)
            infos = []
            t0 = time.time()
            deadline = t0 + self.duration + 120
            gap = self.duration / len(self.blocks) if self.duration > 0 and self.blocks else 0
            phase = random.Random(self.device).random() * gap  # boxes of a fleet are not synchronised
            for i, (first_seq, count, blk) in enumerate(self.blocks):
                if gap:
                    wait = t0 + phase + i * gap - time.time()
                    if wait > 0:
                        time.sleep(wait)
                self.published[first_seq] = time.time()
                infos.append(c.publish(base + "records", blk, qos=1))
                self.sent_records += count
                if self.dup_every and (i + 1) % self.dup_every == 0:
                    infos.append(c.publish(base + "records", blk, qos=1))
                    self.dups += count
            for inf in infos:
                try:
                    inf.wait_for_publish(timeout=max(0.1, deadline - time.time()))
                except (RuntimeError, ValueError):
                    pass
            self.unacked = sum(1 for inf in infos if not inf.is_published())
            # the end-to-end contract: every block until the consumer says it has committed it
            sent_at = {fs: time.time() for fs, _, _ in self.blocks}
            tries = {}
            end = time.time() + self.give_up_s
            while len(self.acked) < len(self.blocks) and time.time() < end:
                now = time.time()
                for fs, count, blk in self.blocks:
                    if fs in self.acked:
                        continue
                    # capped low: a dead share-group member's session still takes its share of each retry
                    wait = min(4 * self.e2e_timeout_s, self.e2e_timeout_s * 2 ** tries.get(fs, 0))
                    if now - sent_at[fs] >= wait:
                        c.publish(base + "records", blk, qos=1)
                        sent_at[fs] = now
                        tries[fs] = tries.get(fs, 0) + 1
                        self.resent += 1
                        self.resent_records += count
                time.sleep(0.2)
            # clear the retained status: a simulated box should not haunt the broker after the run
            c.publish(base + "status", b"", qos=1, retain=True).wait_for_publish(10)
            c.disconnect()
            c.loop_stop()
        except Exception as e:  # reported in the summary
            self.error = "%s: %s" % (type(e).__name__, e)


BOXES_PER_PROC = 200


def _agent_worker(broker, fleet, boxes, records_per_box, max_bytes, duration, dup_every, ready_q, go,
                  result_q, e2e_timeout_s=3.0, give_up_s=120.0):
    """One worker process: builds its boxes' blocks, connects them, waits for `go`, publishes."""
    try:
        agents = []
        n_rec = n_blk = 0
        for device, seed in boxes:
            recs = synth_records(records_per_box, seed=seed)
            blocks = encode_blocks(device, 1, recs, max_bytes)
            n_rec += len(recs)
            n_blk += len(blocks)
            agents.append(SimAgent(broker, fleet, device, blocks, duration, dup_every,
                                   e2e_timeout_s=e2e_timeout_s, give_up_s=give_up_s))
        for a in agents:
            a.open()
    except Exception as e:
        ready_q.put("%s: %s" % (type(e).__name__, e))
        return
    ready_q.put((n_rec, n_blk))
    go.wait()
    for a in agents:
        a.start()
    for a in agents:
        a.join()
    published = {}
    for a in agents:
        for fs, t in a.published.items():
            published[(a.device, fs)] = t
    result_q.put({"published": published, "dups": sum(a.dups for a in agents),
                  "sent": sum(a.sent_records for a in agents), "unacked": sum(a.unacked for a in agents),
                  "e2e_unacked": sum(len(a.blocks) - len(a.acked) for a in agents),
                  "resent": sum(a.resent for a in agents),
                  "resent_records": sum(a.resent_records for a in agents),
                  "errors": [a.error for a in agents if a.error], "t_end": time.time()})


def start_consumer(broker, db, group, idx, idle_s):
    cmd = [sys.executable, "-m", "tools.cli", "ingest", "--broker", broker, "--db", db, "--group", group,
           "--client-id", "%s-c%d" % (group, idx), "--session-expiry", "60", "--once-idle", str(idle_s),
           "--json"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ,
                                  PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", "")))
    ready = threading.Event()
    lines = []

    def reader():
        for line in p.stdout:
            lines.append(line.rstrip())
            if "subscribed" in line:
                ready.set()
        ready.set()

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(20) or p.poll() is not None and not any("subscribed" in x for x in lines):
        p.kill()
        raise RuntimeError("consumer %d did not start: %s"
                           % (idx, (p.stderr.read() or "").strip().splitlines()[-1:]))
    p._lines = lines
    return p


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    f = int(math.floor(k))
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def simulate(broker, boxes, records_per_box=600, duration=0.0, consumers=1, db=None, group=None, fleet="sim",
             dup_every=0, max_bytes=512, timeout=120.0, seed=1, log=print, kill_consumer_at=None,
             e2e_timeout_s=3.0):
    if boxes < 1:
        raise ValueError("--boxes: at least 1")
    run_id = "%x" % (int(time.time() * 1000) % 0xFFFFFFF)
    group = group or "fleetsim%s" % run_id
    tmpdir = None
    if db is None:
        if consumers == 0:
            raise ValueError("--db: required with --consumers 0 (the database the external consumer writes)")
        tmpdir = tempfile.mkdtemp(prefix="paydbox-fleet-")
        db = os.path.join(tmpdir, "fleet.db")
    consumer_db.connect(db).close()
    devices = ["sim%s-%04d" % (run_id, i) for i in range(boxes)]
    # the idle timer is only a safety net (it starts at a consumer's first message); fleet-sim stops them
    procs = [start_consumer(broker, db, group, i, idle_s=max(60.0, timeout)) for i in range(consumers)]
    if procs:
        log("fleet-sim: %d consumer(s) subscribed in share group %s -> %s" % (len(procs), group, db))
    # agents in worker processes: paho's select() loop cannot use file descriptors >= 1024, that is
    # about 330 clients per process; BOXES_PER_PROC also spreads encoding and publishing over the cores
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    ready_q, result_q, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    chunks = [list(range(i, min(boxes, i + BOXES_PER_PROC))) for i in range(0, boxes, BOXES_PER_PROC)]
    workers = []
    t_gen = time.time()
    for ch in chunks:
        w = ctx.Process(target=_agent_worker, daemon=True,
                        args=(broker, fleet, [(devices[i], seed * 100003 + i) for i in ch], records_per_box,
                              max_bytes, duration, dup_every, ready_q, go, result_q, e2e_timeout_s,
                              max(30.0, timeout)))
        w.start()
        workers.append(w)
    n_records = n_blocks = 0
    for _ in workers:
        got = ready_q.get(timeout=600)
        if isinstance(got, str):
            go.set()
            raise RuntimeError(got)
        n_records += got[0]
        n_blocks += got[1]
    log("fleet-sim: %d boxes in %d process(es): %d records in %d blocks (%.1f records/block), generated and"
        " connected in %.1f s" % (boxes, len(workers), n_records, n_blocks, n_records / max(1, n_blocks),
                                  time.time() - t_gen))
    t_pub0 = time.time()
    go.set()
    killed = []
    if kill_consumer_at is not None and procs:
        def _kill():
            procs[0].send_signal(signal.SIGKILL)
            killed.append(time.time() - t_pub0)
            log("fleet-sim: consumer 0 SIGKILLed %.1f s after publishing started" % killed[0])
        threading.Timer(kill_consumer_at, _kill).start()
    results = [result_q.get(timeout=duration + 600) for _ in workers]
    for w in workers:
        w.join(10)
    t_pub1 = max([r["t_end"] for r in results] or [time.time()])
    errors = [e for r in results for e in r["errors"]]
    unacked = sum(r["unacked"] for r in results)
    e2e_unacked = sum(r.get("e2e_unacked", 0) for r in results)
    resent = sum(r.get("resent", 0) for r in results)
    resent_records = sum(r.get("resent_records", 0) for r in results)
    not_sent = n_records - sum(r["sent"] for r in results)
    dups_injected = sum(r["dups"] for r in results)
    pub = {}
    for r in results:
        pub.update(r["published"])
    log("fleet-sim: published in %.2f s (%.0f records/s offered)%s"
        % (t_pub1 - t_pub0, n_records / max(1e-9, t_pub1 - t_pub0),
           "; agent errors: %s" % errors[:3] if errors else ""))
    # wait until the consumer has everything, or nothing moves for a while
    dbc = consumer_db.connect(db)
    marks = ",".join("?" * len(devices))
    last_n, last_change = -1, time.time()
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = dbc.execute("SELECT COUNT(*) FROM records WHERE device IN (%s)" % marks, devices).fetchone()[0]
        if n >= n_records:
            break
        if n != last_n:
            last_n, last_change = n, time.time()
        elif time.time() - last_change > max(10.0, duration):
            break
        time.sleep(0.2)
    stored = dbc.execute("SELECT COUNT(*) FROM records WHERE device IN (%s)" % marks, devices).fetchone()[0]
    rows = dbc.execute("SELECT device, first_seq, MIN(committed_at), SUM(n_dup), COUNT(*), MIN(received_at)"
                       " FROM blocks WHERE device IN (%s) GROUP BY device, first_seq" % marks,
                       devices).fetchall()
    dup_records = dbc.execute("SELECT COALESCE(SUM(n_dup),0) FROM blocks WHERE device IN (%s)" % marks,
                              devices).fetchone()[0]
    damaged = dbc.execute("SELECT COUNT(*) FROM damaged").fetchone()[0]
    per_consumer = [dict(r) for r in dbc.execute(
        "SELECT consumer, COUNT(*) AS blocks, SUM(n_new) AS records FROM blocks WHERE device IN (%s)"
        " GROUP BY consumer" % marks, devices).fetchall()]
    dbc.close()
    lags = [r[2] - pub[(r[0], r[1])] for r in rows if (r[0], r[1]) in pub and r[2] is not None]
    commit_times = [r[2] for r in rows if r[2] is not None]
    t_end = max(commit_times) if commit_times else time.time()
    alive = [p.poll() is None for p in procs]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait(5)
    # tell a bug in the tool from a loss in the system
    diagnosis = []
    if n_records - stored:
        if not any(alive):
            diagnosis.append("no consumer was running at the end (exit codes %s)"
                             % [p.returncode for p in procs])
        if e2e_unacked:
            diagnosis.append("%d blocks never acknowledged end to end (the boxes gave up after %d s)"
                             % (e2e_unacked, max(30.0, timeout)))
        if unacked:
            diagnosis.append("%d publishes never got a PUBACK (broker side)" % unacked)
        if errors:
            diagnosis.append("agent errors")
    res = {
        "boxes": boxes, "consumers": consumers, "records_published": n_records, "blocks_published": n_blocks,
        "records_stored": stored, "records_lost": n_records - stored, "records_not_sent": not_sent,
        "blocks_without_puback": unacked, "blocks_without_e2e_ack": e2e_unacked, "blocks_resent": resent,
        "records_resent": resent_records,
        "consumers_killed": len(killed), "consumers_alive_at_end": sum(alive), "diagnosis": diagnosis,
        "duplicate_records_injected": dups_injected, "duplicate_records_dropped": int(dup_records),
        "damaged_blocks": damaged, "publish_s": round(t_pub1 - t_pub0, 3),
        "offered_records_per_s": round(n_records / max(1e-9, t_pub1 - t_pub0), 1),
        "ingest_records_per_s": round(stored / max(1e-9, t_end - t_pub0), 1),
        "lag_p50_ms": None if not lags else round(percentile(lags, 0.5) * 1000, 1),
        "lag_p95_ms": None if not lags else round(percentile(lags, 0.95) * 1000, 1),
        "lag_max_ms": None if not lags else round(max(lags) * 1000, 1),
        "per_consumer": per_consumer, "agent_errors": errors, "db": db,
    }
    return res


def format_result(r):
    lines = [
        "boxes %(boxes)d, consumers %(consumers)d (%(consumers_killed)d killed mid-run)" % r,
        "records published %(records_published)d in %(blocks_published)d blocks, stored %(records_stored)d,"
        " lost %(records_lost)d (agents: %(records_not_sent)d records not sent,"
        " %(blocks_without_puback)d publishes without PUBACK)" % r,
        "duplicates injected %(duplicate_records_injected)d, dropped by dedup %(duplicate_records_dropped)d,"
        " damaged blocks %(damaged_blocks)d" % r,
        "offered %(offered_records_per_s).0f records/s over %(publish_s).2f s; consumer kept up with"
        " %(ingest_records_per_s).0f records/s" % r,
        "end-to-end lag publish->commit: p50 %s ms, p95 %s ms, max %s ms" % (r["lag_p50_ms"], r["lag_p95_ms"],
                                                                            r["lag_max_ms"]),
    ]
    for c in r["per_consumer"]:
        lines.append("  consumer %s: %d blocks, %d records" % (c["consumer"], c["blocks"], c["records"] or 0))
    lines.append("end-to-end: %(blocks_resent)d blocks published again for a late ack, "
                 "%(blocks_without_e2e_ack)d never acknowledged" % r)
    if r["agent_errors"]:
        lines.append("agent errors: %s" % "; ".join(r["agent_errors"][:3]))
    if r["diagnosis"]:
        lines.append("diagnosis: " + "; ".join(r["diagnosis"]))
    return "\n".join(lines)


def compare_runs(runs):
    """Several runs of the same check must agree on what was published and stored."""
    keys = ("records_published", "records_stored", "records_lost", "duplicate_records_injected",
            "duplicate_records_dropped", "damaged_blocks")
    first = {k: runs[0][k] for k in keys}
    differ = [i + 1 for i, r in enumerate(runs) if {k: r[k] for k in keys} != first]
    return {"runs": len(runs), "runs_agree": not differ, "runs_differing": differ,
            "lost_per_run": [r["records_lost"] for r in runs]}


def run(args):
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    if args.repeat < 1:
        raise ValueError("--repeat: at least 1")
    runs = []
    for i in range(args.repeat):
        if args.repeat > 1:
            log("fleet-sim: run %d of %d" % (i + 1, args.repeat))
        runs.append(simulate(args.broker, args.boxes, args.records_per_box, args.duration, args.consumers,
                             args.db,
                             args.group, args.fleet, args.dup_every, args.max_bytes, args.timeout, args.seed,
                             log=log, kill_consumer_at=args.kill_consumer_at, e2e_timeout_s=args.e2e_timeout))
    cmp_ = compare_runs(runs)
    if args.json:
        print(json.dumps(runs[0] if args.repeat == 1 else dict(cmp_, results=runs), indent=1))
    else:
        for i, r in enumerate(runs):
            if args.repeat > 1:
                print("run %d:" % (i + 1))
            print(format_result(r))
        if args.repeat > 1:
            print("%d runs: %s (lost per run: %s)" % (cmp_["runs"], "results agree" if cmp_["runs_agree"] else
                                                      "RESULTS DIFFER in runs %s" % cmp_["runs_differing"],
                                                      cmp_["lost_per_run"]))
    ok = all(r["records_lost"] == 0 and not r["agent_errors"] for r in runs) and cmp_["runs_agree"]
    return 0 if ok else 1


if __name__ == "__main__":
    from tools.cli import main
    sys.exit(main(["fleet-sim"] + sys.argv[1:]))
