"""Benchmark: box link -> edge agent -> Mosquitto.

    python -m tools.bench.bench_link [--quick]

drain: a backlog of 100,000 records (~3,100 blocks of 32 records, ~12 bytes per record like the
codec's) from a simulated box (real firmware BoxLink over a pty, unthrottled) through the real agent
process and a real Mosquitto to a subscriber. Link efficiency = block payload bytes / bytes the box
put on the line (COBS, CRC, headers, HELLO/keepalives included); the drain time at 115200 baud is
computed from those line bytes (10 bits per byte).
chaos: a simulated drive encoded into REAL codec blocks (firmware.codec.BlockEncoder: pos at 1 Hz,
trips, harsh events, status, one crash in a block of its own) at 10 simulated seconds per wall second;
the broker is STOPPED for 3 minutes of wall time (--quick: 20 s) while the box keeps producing; the
agent is SIGKILLed at 24 random moments spread over the run; 1 % of the line bytes are lost or
bit-flipped (both directions; 128-byte blocks so frames can survive such a line); the agent's queue
limit is ~1/3 of what the outage produces, so the queue fills (disk-full path). The subscriber decodes
every block with firmware.decoder.decode_block and dedupes records by (device, boot, seq); each record
is compared with what the box produced: arrived / lost / corrupted / duplicates removed. Also the
agent's queue depth (read from its SQLite file) and the retained status a fresh subscriber sees.
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from testbed.simbox import AgentProc, Collector, SimBox, wait_for, write_agent_config  # noqa: E402


def _proc_usage(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(parts[11]) + int(parts[12])) / tick
    rss_kb = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss_kb = int(line.split()[1])
    return cpu_s, rss_kb


def drain(tmp, records=100_000, per_block=32):
    from mosquitto_fixture import Broker

    broker = Broker(os.path.join(tmp, "b1")).start()
    box = SimBox("box-drain", window=8, rto_ms=1000, poll_ms=2)
    nblocks = records // per_block
    box.produce(nblocks, records_per_block=per_block)
    box.produce(1, records_per_block=records - nblocks * per_block or per_block, prio=4)
    payload = sum(len(b) for b in box.produced.values())
    col = Collector(broker.host, broker.port, "paydbox/f1/box-drain/#", client_id="bench-drain")
    cfg = write_agent_config(os.path.join(tmp, "a1.toml"), "f1", "box-drain", box.path,
                             os.path.join(tmp, "q1.db"), broker.host, broker.port, inflight=64)
    box.start()
    t0 = time.monotonic()
    agent = AgentProc(cfg, os.path.join(tmp, "a1.log")).start()
    ok = wait_for(lambda: col.count() == len(box.produced), 900, 0.1)
    dt = time.monotonic() - t0
    cpu_s, rss_kb = _proc_usage(agent.proc.pid)
    agent.terminate()
    line = box.uart.line_tx
    res = {
        "drain_records": box.records,
        "drain_blocks": len(box.produced),
        "drain_complete": int(ok),
        "drain_wall_s": round(dt, 2),
        "drain_records_per_s": round(box.records / dt),
        "agent_cpu_s": round(cpu_s, 2),
        "agent_cpu_us_per_record": round(cpu_s * 1e6 / box.records, 1),
        "agent_peak_rss_MB": round(rss_kb / 1024, 1),
        "link_payload_bytes": payload,
        "link_line_bytes_box_to_agent": line,
        "link_line_bytes_agent_to_box": box.uart.line_rx,
        "link_efficiency_pct": round(100.0 * payload / line, 2),
        "link_drain_at_115200_s": round(line * 10 / 115200, 1),
        "link_records_per_s_at_115200": round(box.records / (line * 10 / 115200)),
        "drain_duplicates": col.dups,
        "drain_retransmits": box.link.counters["retransmits"],
    }
    col.close()
    box.stop()
    broker.stop()
    return res


def _retained_status(host, port, topic, timeout=3.0):
    """The retained status as a fresh subscriber sees it (None if none arrives)."""
    import threading

    import paho.mqtt.client as mqtt

    got = []
    ev = threading.Event()
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                    client_id="bench-probe-%d-%d" % (os.getpid(), random.getrandbits(20)),
                    protocol=mqtt.MQTTv5)

    def on_message(cl, ud, msg):
        if msg.retain:
            got.append(json.loads(msg.payload))
            ev.set()

    c.on_message = on_message
    c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(topic, qos=1)
    try:
        c.connect(host, port)
    except OSError:
        return None
    c.loop_start()
    ev.wait(timeout)
    c.loop_stop()
    c.disconnect()
    return got[0] if got else None


def verify(produced, payloads):
    """Decode every payload that reached the subscriber with firmware.decoder.decode_block; dedupe records
    by (device, boot, seq); compare each with what the box produced."""
    from firmware import decoder

    arrived = {}
    dup = corrupted = bad_blocks = unknown = 0
    for p in payloads:
        try:
            hdr, recs = decoder.decode_block(p)
        except decoder.CodecError:
            bad_blocks += 1
            continue
        for r in recs:
            key = (hdr["device"], hdr["boot"], r["seq"])
            if key in arrived:
                dup += 1
                if arrived[key] != r:
                    corrupted += 1
                continue
            arrived[key] = r
            want = produced.get(key)
            if want is None:
                unknown += 1
            elif want != r:
                corrupted += 1
    lost = sum(1 for k in produced if k not in arrived)
    return {"arrived": sum(1 for k in arrived if k in produced), "lost": lost, "corrupted": corrupted,
            "bad_blocks": bad_blocks, "unknown": unknown, "duplicates": dup}


def chaos(tmp, outage_s=180.0, pre_s=15.0, post_s=60.0, kills=24, speedup=10, block_max_bytes=128,
          loss=0.005, flip=0.005, seed=11, drain_timeout_s=600):
    """The box drives (real codec blocks, `speedup` simulated seconds per wall second) through: broker up
    for pre_s, broker STOPPED for outage_s, broker up again for post_s while the box keeps driving, then the
    box stops producing and everything drains. The agent is SIGKILLed at `kills` random moments spread over
    the whole run (restarted 0-0.5 s later); `loss` + `flip` of the line bytes are dropped/bit-flipped both
    ways. The agent queue limit is set to about a third of what the outage produces, so the queue fills (the
    disk-full path: the agent stops acknowledging, the box keeps the data, the status raises queue_full)."""
    import sqlite3
    import threading

    from mosquitto_fixture import Broker
    from testbed.simbox import DriveGen, MemStore

    rng = random.Random(seed)
    dev = "box-chaos"
    # queue limit from the drive's byte rate (deterministic: same generator, same seed, offline)
    probe = DriveGen(dev, 1, MemStore(), block_max_bytes, seed=seed)
    probe.step(1200)
    bytes_per_sim_s = probe.block_bytes / 1200.0
    qmax = max(800, int(bytes_per_sim_s * speedup * outage_s * 0.35))

    broker = Broker(os.path.join(tmp, "b2")).start()
    box = SimBox(dev, loss=loss, flip=flip, window=8, rto_ms=300, poll_ms=5, seed=seed).start()
    total_s = pre_s + outage_s + post_s
    gen = DriveGen(dev, box.boot, box.store, block_max_bytes, seed=seed,
                   crash_at_s=int((pre_s + outage_s * 0.4) * speedup))
    col = Collector(broker.host, broker.port, "paydbox/f1/%s/#" % dev, client_id="bench-chaos")
    qpath = os.path.join(tmp, "q2.db")
    cfg = write_agent_config(os.path.join(tmp, "a2.toml"), "f1", dev, box.path, qpath,
                             broker.host, broker.port, max_bytes=qmax)
    status_topic = "paydbox/f1/%s/status" % dev
    agent = AgentProc(cfg, os.path.join(tmp, "a2.log")).start()
    st = {"producing": True, "broker_up": True, "stop": False, "q_max": 0, "q_max_outage": 0,
          "q_bytes_max": 0, "box_pending_max": 0, "probes": []}

    def produce():
        t0 = time.monotonic()
        done = 0
        while st["producing"]:
            due = int((time.monotonic() - t0) * speedup)
            if due > done:
                gen.step(due - done)
                done = due
            time.sleep(0.02)
        gen.flush()

    def sample():
        last_probe = 0.0
        while not st["stop"]:
            try:
                db = sqlite3.connect("file:%s?mode=ro" % qpath, uri=True, timeout=1)
                rows, nbytes = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(block)), 0) FROM q").fetchone()
                db.close()
                st["q_max"] = max(st["q_max"], rows)
                st["q_bytes_max"] = max(st["q_bytes_max"], nbytes)
                if not st["broker_up"]:
                    st["q_max_outage"] = max(st["q_max_outage"], rows)
            except sqlite3.Error:
                pass
            st["box_pending_max"] = max(st["box_pending_max"], box.store.pending())
            now = time.monotonic()
            if st["broker_up"] and now - last_probe >= 2.0:
                last_probe = now
                s = _retained_status(broker.host, broker.port, status_topic, 2.0)
                if s is not None:
                    st["probes"].append((now, s))
            time.sleep(0.3)

    tp = threading.Thread(target=produce, daemon=True)
    ts = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    tp.start()
    ts.start()
    kill_at = sorted(rng.uniform(1.0, total_s) for _ in range(kills))
    events = [(pre_s, "down"), (pre_s + outage_s, "up"), (total_s, "end")] + [(k, "kill") for k in kill_at]
    events.sort()
    t_down = t_up = None
    for at, what in events:
        d = t0 + at - time.monotonic()
        if d > 0:
            time.sleep(d)
        if what == "kill":
            agent.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            agent.start()
        elif what == "down":
            broker.stop()
            st["broker_up"] = False
            t_down = time.monotonic()
        elif what == "up":
            broker.start()
            t_up = time.monotonic()
            st["broker_up"] = True
    st["producing"] = False
    tp.join()
    t_prod_end = time.monotonic()
    produced = dict(gen.produced)
    ok = wait_for(lambda: len(col.all) and verify(produced, list(col.all))["lost"] == 0
                  and box.store.pending() == 0, drain_timeout_s, 1.0)
    dt = time.monotonic() - t0
    drain_s = time.monotonic() - t_prod_end
    time.sleep(3.0)  # let the last status and any late duplicate arrive
    final = _retained_status(broker.host, broker.port, status_topic, 3.0)
    st["stop"] = True
    ts.join(10)
    agent.terminate()
    v = verify(produced, list(col.all))
    after_up = [s for t, s in st["probes"] if t >= t_up and s.get("state") == "online"]
    res = {
        "chaos_broker_down_s": round(t_up - t_down, 1),
        "chaos_sigkills": agent.kills,
        "chaos_line_loss_plus_flip_pct": round(100.0 * (loss + flip), 2),
        "chaos_line_corrupted_bytes": box.uart.corrupted,
        "chaos_line_bytes": box.uart.line_tx + box.uart.line_rx,
        "chaos_line_corruption_pct_measured": round(100.0 * box.uart.corrupted
                                                    / max(1, box.uart.line_tx + box.uart.line_rx), 3),
        "chaos_sim_drive_s": gen.t_s,
        "chaos_blocks_produced": gen.blocks,
        "chaos_block_bytes_avg": round(gen.block_bytes / max(1, gen.blocks), 1),
        "chaos_records_produced": len(produced),
        "chaos_records_arrived": v["arrived"],
        "chaos_records_lost": v["lost"],
        "chaos_records_corrupted": v["corrupted"],
        "chaos_blocks_undecodable": v["bad_blocks"],
        "chaos_records_unknown": v["unknown"],
        "chaos_duplicate_records_removed": v["duplicates"],
        "chaos_duplicate_blocks_at_subscriber": col.dups,
        "chaos_queue_limit_bytes": qmax,
        "chaos_queue_rows_max": st["q_max"],
        "chaos_queue_rows_max_during_outage": st["q_max_outage"],
        "chaos_queue_bytes_max": st["q_bytes_max"],
        "chaos_box_store_blocks_max": st["box_pending_max"],
        "chaos_agent_blocks_refused_full": _last_counter(st["probes"], final, "blocks_refused"),
        "chaos_status_backlog_rows_max": max([max(s.get("queue_rows", 0), s.get("queue_rows_peak", 0))
                                              for s in after_up] or [0]),
        "chaos_status_oldest_unsent_s_max": max([s.get("oldest_unsent_s", 0) for s in after_up] or [0]),
        "chaos_status_queue_full_seen": int(any("queue_full" in s.get("alarms", ()) or s.get("queue_was_full")
                                                for s in after_up)),
        "chaos_status_final_queue_rows": final.get("queue_rows") if final else None,
        # what a live subscriber to .../status saw (every status the agent published, not only the retained
        # one)
        "chaos_status_live_messages": len(col.status),
        "chaos_status_live_backlog_rows_max": max([max(s.get("queue_rows", 0), s.get("queue_rows_peak", 0))
                                                   for s in col.status] or [0]),
        "chaos_status_live_queue_full_seen": int(any(s.get("queue_was_full") or s.get("queue_full")
                                                     for s in col.status)),
        "chaos_drain_after_production_s": round(drain_s, 1),
        "chaos_complete": int(bool(ok) and v["lost"] == 0 and v["corrupted"] == 0 and not v["bad_blocks"]),
        "chaos_wall_s": round(dt, 1),
    }
    col.close()
    box.stop()
    broker.stop()
    return res


def _last_counter(probes, final, name):
    """Largest value of an agent counter seen in the retained statuses (counters restart with the process)."""
    vals = [s.get("counters", {}).get(name, 0) for _, s in probes]
    if final:
        vals.append(final.get("counters", {}).get(name, 0))
    return max(vals or [0])


def run(quick=False, only=None):
    tmp = tempfile.mkdtemp(prefix="bench_link_")
    try:
        res = {}
        if only in (None, "drain"):
            res.update(drain(tmp, records=10_000 if quick else 100_000))
        if only == "drain":
            return res
        if quick:
            res.update(chaos(tmp, outage_s=20.0, pre_s=5.0, post_s=15.0, kills=20))
        else:
            res.update(chaos(tmp))
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small drain, 20 s broker outage")
    ap.add_argument("--only", choices=("drain", "chaos"), help="run one of the two benchmarks")
    a = ap.parse_args()
    for k, v in run(a.quick, a.only).items():
        print("%-36s %s" % (k, v))


if __name__ == "__main__":
    main()
