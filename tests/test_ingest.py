"""paydbox ingest against a REAL Mosquitto: dedup, crash/restart safety, damaged blocks, share groups."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from mosquitto_fixture import Broker, mosquitto  # noqa: F401  (fixture imported by name)
from postgres_fixture import dbt, postgres_server  # noqa: F401  (fixtures imported by name)
from tools.consumer import db as consumer_db
from tools.consumer import fleet_sim
from tools.consumer.ingest import Consumer, connect, make_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def url(b):
    return "mqtt://%s:%d" % (b.host, b.port)


def make_blocks(device, n_records, seed=1, boot=1):
    recs = fleet_sim.synth_records(n_records, seed=seed, boot=boot)
    return recs, fleet_sim.encode_blocks(device, boot, recs, 512)


class Publisher:
    def __init__(self, broker_url, cid="test-pub"):
        self.c = make_client(cid, broker_url, clean_start=True)
        connect(self.c)
        self.c.loop_start()

    def send(self, topic, payloads):
        infos = [self.c.publish(topic, p, qos=1) for p in payloads]
        for i in infos:
            i.wait_for_publish(10)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class RunningConsumer:
    def __init__(self, broker_url, db, group="g", client_id=None, **kw):
        self.logs = []
        self.c = Consumer(broker_url, db, group=group, client_id=client_id, log=self.logs.append, **kw)
        self.c.start()
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self.c.run, kwargs={"stop": self.stop_ev}, daemon=True)
        self.th.start()

    def close(self):
        self.stop_ev.set()
        self.th.join(10)
        self.c.close()


def count(db_path, q="SELECT COUNT(*) FROM records", args=()):
    db = consumer_db.connect(db_path, create=False)
    try:
        return db.execute(q, args).fetchone()[0]
    finally:
        db.close()


def wait_count(db_path, n, timeout=20.0, q="SELECT COUNT(*) FROM records", args=()):
    end = time.time() + timeout
    got = -1
    while time.time() < end:
        if consumer_db.is_postgres(db_path) or os.path.exists(db_path):
            try:
                got = count(db_path, q, args)
            except Exception as e:  # the consumer is still creating its tables
                if "does not exist" not in str(e) and "no such table" not in str(e):
                    raise
                got = -1
            if got >= n:
                return got
        time.sleep(0.05)
    return got


def assert_exactly_once(db_path, device, recs):
    db = consumer_db.connect(db_path, create=False)
    seqs = [r[0] for r in db.execute("SELECT seq FROM records WHERE device=? ORDER BY seq", (device,))]
    db.close()
    assert seqs == [r["seq"] for r in recs]


def test_restart_no_loss_no_duplicates(mosquitto, tmp_path, dbt):
    """Blocks published while the consumer is down arrive after restart (persistent session);
    everything republished is stored once."""
    db = dbt("c.db")
    recs, blocks = make_blocks("box-r", 900, seed=7)
    assert len(blocks) >= 6
    topic = "paydbox/f1/box-r/records"
    pub = Publisher(url(mosquitto))
    cons = RunningConsumer(url(mosquitto), db, group="g1", client_id="ingest-restart")
    half = len(blocks) // 2
    pub.send(topic, [b for _, _, b in blocks[:half]])
    n_half = sum(n for _, n, _ in blocks[:half])
    assert wait_count(db, n_half) == n_half
    cons.close()  # consumer down; the broker keeps its session and queues for it
    pub.send(topic, [b for _, _, b in blocks[half:]])
    cons = RunningConsumer(url(mosquitto), db, group="g1", client_id="ingest-restart")
    assert wait_count(db, len(recs)) == len(recs)
    pub.send(topic, [b for _, _, b in blocks])  # a retrying agent: every block again
    assert wait_count(db, len(blocks) * 2, q="SELECT COUNT(*) FROM blocks") == len(blocks) * 2
    cons.close()
    pub.close()
    assert_exactly_once(db, "box-r", recs)
    assert count(db, "SELECT SUM(n_dup) FROM blocks") == len(recs)
    assert count(db, "SELECT COUNT(*) FROM positions") == sum(1 for r in recs if r["type"] == "pos")
    assert count(db, "SELECT COUNT(*) FROM trips") == sum(1 for r in recs if r["type"] == "trip_start")
    assert count(db, "SELECT fleet FROM devices WHERE device='box-r'") == "f1"


def test_killed_consumer_loses_nothing(mosquitto, tmp_path):
    """SIGKILL the `paydbox ingest` process in the middle of a backlog, restart it: every record once."""
    db = str(tmp_path / "k.db")
    recs, blocks = make_blocks("box-k", 6000, seed=11)
    cmd = [sys.executable, "-m", "tools.cli", "ingest", "--broker", url(mosquitto), "--db", db, "--group",
           "gk", "--client-id", "ingest-kill", "--batch", "5", "--receive-maximum", "10", "--once-idle", "3"]

    def start():
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            if "subscribed" in line:
                return p
        raise AssertionError("consumer did not subscribe: rc %s" % p.wait())

    p = start()
    pub = Publisher(url(mosquitto))
    pub.send("paydbox/f/box-k/records", [b for _, _, b in blocks])
    stored = wait_count(db, 300)
    assert 0 < stored
    p.send_signal(signal.SIGKILL)
    p.wait()
    mid = count(db)
    assert mid < len(recs), "the kill came too late to test anything (all %d stored)" % mid
    p = start()
    out = p.communicate(timeout=60)[0]
    pub.close()
    assert p.returncode == 0, out
    assert_exactly_once(db, "box-k", recs)
    assert "done after" in out


def test_damaged_blocks_are_counted_not_fatal(mosquitto, tmp_path):
    db = str(tmp_path / "d.db")
    recs, blocks = make_blocks("box-d", 300, seed=3)
    good = [b for _, _, b in blocks]
    bad = bytearray(good[0])
    bad[len(bad) // 2] ^= 0x5A
    cons = RunningConsumer(url(mosquitto), db, group="gd")
    pub = Publisher(url(mosquitto))
    pub.send("paydbox/f/box-d/records", [b"not a block", bytes(bad)] + good)
    assert wait_count(db, len(recs)) == len(recs)
    assert wait_count(db, 2, q="SELECT COUNT(*) FROM damaged") == 2
    cons.close()
    pub.close()
    assert cons.c.counters["damaged"] == 2
    damaged_logs = [x for x in cons.logs if x.startswith("damaged block")]
    assert len(damaged_logs) == 2 and all("\n" not in x for x in damaged_logs)
    assert "offset" in damaged_logs[1]  # CodecError names the byte offset
    assert_exactly_once(db, "box-d", recs)


def test_two_consumers_share_the_load(mosquitto, tmp_path):
    dbs = [str(tmp_path / "s1.db"), str(tmp_path / "s2.db")]
    cons = [RunningConsumer(url(mosquitto), d, group="gs", client_id="share-%d" % i)
            for i, d in enumerate(dbs)]
    pub = Publisher(url(mosquitto))
    devices = {}
    for i in range(4):
        dev = "box-s%d" % i
        recs, blocks = make_blocks(dev, 400, seed=20 + i)
        devices[dev] = recs
        pub.send("paydbox/f/%s/records" % dev, [b for _, _, b in blocks])
    total = sum(len(r) for r in devices.values())
    end = time.time() + 20
    while time.time() < end and sum(count(d) for d in dbs) < total:
        time.sleep(0.05)
    for c in cons:
        c.close()
    pub.close()
    keys = []
    for d in dbs:
        db = sqlite3.connect(d)
        keys.append(set(db.execute("SELECT device, boot, seq FROM records")))
        db.close()
    assert keys[0] and keys[1], "both consumers must get part of the load"
    assert not (keys[0] & keys[1]), "a record went to both consumers of one share group"
    want = set((dev, 1, r["seq"]) for dev, recs in devices.items() for r in recs)
    assert keys[0] | keys[1] == want


def test_agent_status_is_stored(mosquitto, tmp_path):
    db = str(tmp_path / "st.db")
    cons = RunningConsumer(url(mosquitto), db, group="gst")
    pub = Publisher(url(mosquitto))
    pub.c.publish("paydbox/f/box-x/status", json.dumps({"online": True, "queue": 3}), qos=1, retain=True) \
        .wait_for_publish(5)
    assert wait_count(db, 1, q="SELECT COUNT(*) FROM devices WHERE agent_status IS NOT NULL") == 1
    cons.close()
    pub.close()
    db_ = consumer_db.connect(db)
    row = db_.execute("SELECT agent_status, fleet FROM devices WHERE device='box-x'").fetchone()
    db_.close()
    assert json.loads(row[0]) == {"online": True, "queue": 3} and row[1] == "f"


def test_bad_broker_url_and_refused_connection(tmp_path):
    from tools.consumer.ingest import IngestError, parse_broker
    with pytest.raises(ValueError, match="--broker"):
        parse_broker("http://x:1")
    assert parse_broker("mqtts://h") == ("h", 8883, True, None, None)
    from mosquitto_fixture import free_port
    with pytest.raises(IngestError, match="cannot connect.*within 1s"):
        Consumer("mqtt://127.0.0.1:%d" % free_port(), str(tmp_path / "x.db")).start(timeout=1)


class Listener:
    """Subscribes to a topic filter and keeps (topic, payload, db count at arrival)."""

    def __init__(self, broker_url, topic, db=None):
        self.got = []
        self.db = db
        self.c = make_client("t-listen-%d" % os.getpid(), broker_url, clean_start=True)
        ev = threading.Event()
        self.c.on_subscribe = lambda *a: ev.set()
        self.c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
        self.c.on_message = lambda cl, u, m: self.got.append(
            (m.topic, bytes(m.payload), count_or_zero(db) if db else 0))
        connect(self.c)
        self.c.loop_start()
        assert ev.wait(10)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_a_forged_header_is_quarantined_and_the_victims_records_survive(mosquitto, tmp_path, dbt):
    """Identity is the topic (bound to the authenticated client), never the header: a box publishing, on its
    own topic, a block that claims to be another box's cannot add records to that box's account, nor take
    the victim's (device, boot, seq) keys so that the victim's real records look like duplicates."""
    db = dbt("q.db")
    recs, blocks = make_blocks("box-victim", 200, seed=4)
    _, forged = make_blocks("box-victim", 200, seed=99)  # same keys, other content
    cons = RunningConsumer(url(mosquitto), db, group="gq")
    pub = Publisher(url(mosquitto))
    pub.send("paydbox/f/box-evil/records", [b for _, _, b in forged])
    assert wait_count(db, len(forged), q="SELECT COUNT(*) FROM quarantine") == len(forged)
    pub.send("paydbox/f/box-victim/records", [b for _, _, b in blocks])
    assert wait_count(db, len(recs)) == len(recs)
    cons.close()
    pub.close()
    assert_exactly_once(db, "box-victim", recs)
    assert count(db, "SELECT COUNT(*) FROM records WHERE device='box-evil'") == 0
    assert count(db, "SELECT SUM(n_dup) FROM blocks") == 0, "the victim's records were taken as duplicates"
    assert count(db, "SELECT COUNT(*) FROM quarantine WHERE device='box-evil' AND "
                     "claimed_device='box-victim'") \
        == len(forged)
    assert cons.c.counters["quarantined"] == len(forged) and cons.c.counters["damaged"] == 0


def test_end_to_end_ack_follows_the_commit_and_names_what_is_held(mosquitto, tmp_path, dbt):
    db = dbt("a.db")
    recs, blocks = make_blocks("box-a", 600, seed=5)
    lis = Listener(url(mosquitto), "paydbox/f/box-a/ack", db)
    cons = RunningConsumer(url(mosquitto), db, group="ga")
    pub = Publisher(url(mosquitto))
    pub.send("paydbox/f/box-a/records", [b for _, _, b in blocks])
    assert wait_count(db, len(recs)) == len(recs)
    end = time.time() + 10
    seqs = [r["seq"] for r in recs]
    while time.time() < end and not (lis.got and json.loads(lis.got[-1][1])["held"] == [[seqs[0], seqs[-1]]]):
        time.sleep(0.05)
    cons.close()
    pub.close()
    lis.close()
    last = json.loads(lis.got[-1][1])
    assert last["boot"] == 1 and last["held"] == [[seqs[0], seqs[-1]]]
    for topic, payload, n_in_db in lis.got:
        d = json.loads(payload)
        held = sum(hi - lo + 1 for lo, hi in d["held"])
        assert n_in_db >= held, "acknowledged %d records before they were committed (%d)" % (held, n_in_db)


def test_gaps_are_asked_for_again_then_marked_lost_when_nobody_has_them(mosquitto, tmp_path, dbt):
    db = dbt("g.db")
    recs, blocks = make_blocks("box-g", 600, seed=6)
    assert len(blocks) >= 3
    hole = blocks[1]  # (first_seq, n, block)
    lo, hi = hole[0], hole[0] + hole[1] - 1
    cmds = Listener(url(mosquitto), "paydbox/f/box-g/resend")
    cons = RunningConsumer(url(mosquitto), db, group="gg", repair_grace_s=0.5, repair_every_s=0.2)
    pub = Publisher(url(mosquitto))
    pub.send("paydbox/f/box-g/records", [b for fs, _, b in blocks if fs != hole[0]])
    assert wait_count(db, len(recs) - hole[1]) == len(recs) - hole[1]
    end = time.time() + 10
    while time.time() < end and not cmds.got:
        time.sleep(0.05)
    req = json.loads(cmds.got[0][1])
    assert (req["cmd"], req["boot"], req["ranges"]) == ("resend", 1, [[lo, hi]])
    # the agent and the box answer that nobody holds it any more: lost, and no more requests
    pub.send("paydbox/f/box-g/cmd/result",
             [json.dumps({"id": req["id"], "cmd": "resend", "ok": True, "boot": 1,
                          "missing": [[lo, hi]]}).encode()])
    assert wait_count(db, 1, q="SELECT COUNT(*) FROM lost") == 1
    time.sleep(1.0)
    n = len(cmds.got)
    time.sleep(2.0)
    cons.close()
    pub.close()
    cmds.close()
    assert len(cmds.got) == n, "a gap reported lost is not asked for again"
    assert count(db, "SELECT lo || '-' || hi FROM lost") == "%d-%d" % (lo, hi)


def test_ingest_waits_for_a_broker_that_is_down_at_start(tmp_path):
    from mosquitto_fixture import free_port
    port = free_port()
    db = str(tmp_path / "w.db")
    p = subprocess.Popen([sys.executable, "-m", "tools.cli", "ingest", "--broker",
                          "mqtt://127.0.0.1:%d" % port,
                          "--db", db, "--group", "gw", "--client-id", "ingest-wait"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3.0)
        assert p.poll() is None, "ingest gave up on a broker that is down: %s" % p.stdout.read()
        b = Broker(tmp_path / "late", port=port).start()
        try:
            recs, blocks = make_blocks("box-w", 100, seed=8)
            pub = Publisher("mqtt://127.0.0.1:%d" % port)
            end = time.time() + 30  # paho's backoff: the consumer may need a few seconds to come back
            while time.time() < end and count_or_zero(db) < len(recs):
                pub.send("paydbox/f/box-w/records", [b_ for _, _, b_ in blocks])
                time.sleep(1.0)
            pub.close()
            assert count(db) == len(recs)
        finally:
            b.stop()
    finally:
        p.terminate()
        p.wait(10)


def count_or_zero(db):
    try:
        return count(db) if (consumer_db.is_postgres(db) or os.path.exists(db)) else 0
    except Exception as e:  # not created yet: sqlite3.Error, or PostgreSQL's "relation ... does not exist"
        if isinstance(e, sqlite3.Error) or "does not exist" in str(e):
            return 0
        raise
