"""Benchmark: box link -> edge agent -> Mosquitto.

    python -m tools.bench_link [--quick]

drain: a backlog of 100,000 records (~3,100 blocks of 32 records, ~12 bytes per record like the
codec's) from a simulated box (real firmware BoxLink over a pty, unthrottled) through the real agent
process and a real Mosquitto to a subscriber. Link efficiency = block payload bytes / bytes the box
put on the line (COBS, CRC, headers, HELLO/keepalives included); the drain time at 115200 baud is
computed from those line bytes (10 bits per byte).
chaos: one run with >= 20 SIGKILLs of the agent at random moments, the broker stopped for a while,
1 % of the line bytes lost or bit-flipped (both directions; small blocks so frames can survive such a
line): records produced vs arrived (deduplicated by (device, first_seq)) and corrupted.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from edge_agent.simbox import AgentProc, Collector, SimBox, wait_for, write_agent_config  # noqa: E402


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
    cfg = write_agent_config(os.path.join(tmp, "a1.toml"), "f1", "box-drain", box.path, os.path.join(tmp, "q1.db"),
                             broker.host, broker.port, inflight=64)
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


def chaos(tmp, kills=20, blocks=150, per_block=4, seed=11):
    from mosquitto_fixture import Broker

    rng = random.Random(seed)
    broker = Broker(os.path.join(tmp, "b2")).start()
    box = SimBox("box-chaos", loss=0.005, flip=0.005, window=8, rto_ms=300, poll_ms=5, seed=seed).start()
    col = Collector(broker.host, broker.port, "paydbox/f1/box-chaos/#", client_id="bench-chaos")
    cfg = write_agent_config(os.path.join(tmp, "a2.toml"), "f1", "box-chaos", box.path, os.path.join(tmp, "q2.db"),
                             broker.host, broker.port)
    agent = AgentProc(cfg, os.path.join(tmp, "a2.log")).start()
    t0 = time.monotonic()
    down_at = kills // 2
    broker_down_s = 0.0
    for i in range(kills):
        box.produce(max(1, blocks // kills), records_per_block=per_block)
        if i == down_at:
            broker.stop()
            td = time.monotonic()
        time.sleep(rng.uniform(0.2, 1.5))
        agent.kill()
        time.sleep(rng.uniform(0.0, 0.5))
        agent.start()
        if i == down_at + 3:
            broker.start()
            broker_down_s = time.monotonic() - td
    ok = wait_for(lambda: col.count() == len(box.produced), 300, 0.2)
    dt = time.monotonic() - t0
    agent.terminate()
    arrived = {fs for _, fs in col.got}
    corrupted = sum(1 for (d, fs), p in col.got.items() if p != box.produced[fs]) + col.bad
    res = {
        "chaos_sigkills": agent.kills,
        "chaos_broker_down_s": round(broker_down_s, 1),
        "chaos_line_corrupted_bytes": box.uart.corrupted,
        "chaos_line_bytes": box.uart.line_tx + box.uart.line_rx,
        "chaos_records_produced": box.records,
        "chaos_records_arrived": sum(per_block for fs in arrived if fs in box.produced),
        "chaos_blocks_lost": len(set(box.produced) - arrived),
        "chaos_blocks_corrupted": corrupted,
        "chaos_duplicates_at_subscriber": col.dups,
        "chaos_complete": int(ok),
        "chaos_wall_s": round(dt, 1),
    }
    col.close()
    box.stop()
    broker.stop()
    return res


def run(quick=False):
    tmp = tempfile.mkdtemp(prefix="bench_link_")
    try:
        res = drain(tmp, records=10_000 if quick else 100_000)
        res.update(chaos(tmp, kills=20, blocks=60 if quick else 150))
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    for k, v in run(a.quick).items():
        print("%-36s %s" % (k, v))


if __name__ == "__main__":
    main()
