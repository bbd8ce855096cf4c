"""Benchmark: end to end, nothing lost. Box -> edge agent -> Mosquitto -> `paydbox ingest` -> SQLite, with the
broker restarted, the consumer SIGKILLed and the agent SIGKILLed at random moments during a drive.

    python -m tools.bench.bench_e2e [--quick] [--seeds 1,2,3,4,5] [--configs demo,demo-persist,deploy]

The box is the real firmware link (firmware/link.py BoxLink over a pty) sending REAL codec blocks of a
simulated drive (testbed.simbox.DriveGen: 1 Hz positions, trips, harsh events, status, one crash);
the agent (`python -m edge_agent.agent`) and the consumer (`python -m tools.cli ingest`) are real
processes and the broker is a real Mosquitto, in one of three configurations:
- demo:          the demo's broker (tools/demo.py): anonymous, `persistence false`: a restart forgets
                 every session and every queued message;
- demo-persist:  the same with `persistence true`;
- deploy:        deploy/mosquitto/mosquitto.conf itself (TLS, client certificates from deploy/make-certs.sh,
                 the deploy ACL, persistence on), only its paths and port rewritten for a temp dir.
Each run prints what the box produced, what the consumer's database holds (compared record by record),
lost, duplicated rows, and the time from the last fault until the database was complete.
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from mosquitto_fixture import MOSQUITTO, Broker  # noqa: E402  (the real broker, started as the tests do)
from testbed.simbox import DriveGen, Proc, SimBox, wait_for  # noqa: E402

FLEET = "f1"
CONFIGS = ("demo", "demo-persist", "deploy")


class BenchError(Exception):
    pass


def make_pki(workdir, boxes, services=("ingest",)):
    """Certificates from deploy/make-certs.sh: boxes as "FLEET/DEVICE" (files FLEET.DEVICE.crt/.key),
    services (ingest, ops) with --service."""
    out = os.path.join(workdir, "pki")
    for args in (list(boxes), ["--service"] + list(services)):
        p = subprocess.run(["sh", os.path.join(ROOT, "deploy", "make-certs.sh"), out, "127.0.0.1"] + args,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError("deploy/make-certs.sh failed: %s" % (p.stderr.strip() or p.stdout.strip()))
    return out


def deploy_conf(port, workdir, pki):
    """deploy/mosquitto/mosquitto.conf with its paths and listener rewritten for workdir (nothing else)."""
    from mosquitto_fixture import free_port
    acl = os.path.join(ROOT, "deploy", "mosquitto", "acl")
    out = []
    listeners = 0
    with open(os.path.join(ROOT, "deploy", "mosquitto", "mosquitto.conf")) as f:
        for line in f:
            s = line.rstrip("\n")
            key = s.split()[0] if s.strip() and not s.lstrip().startswith("#") else None
            if key == "listener":  # the box listener on `port` (agent and consumer); the services one aside
                s = "listener %s 127.0.0.1" % (port if listeners == 0 else free_port())
                listeners += 1
            elif key == "persistence_location":
                s = "persistence_location %s/" % workdir
            elif key == "log_dest":
                s = "log_dest stderr"
            elif key == "acl_file":
                s = "acl_file %s" % acl
            elif key is not None and "/etc/mosquitto/" in s:
                name = os.path.basename(s.split()[1])
                s = "%s %s" % (key, os.path.join(pki, name))
            out.append(s)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        out.append("user root")
    return "\n".join(out) + "\n"


def broker_for(workdir, config, pki=None):
    """A real Mosquitto (tests/mosquitto_fixture.Broker) with the demo's or the deploy/ configuration."""
    if config == "deploy":
        text = deploy_conf("{port}", "{workdir}", pki)
    else:  # the demo's broker (tools/demo.py start_mosquitto), persistence as the config says
        text = ("listener {port} 127.0.0.1\nallow_anonymous true\npersistence %s\npersistence_location "
                "{workdir}/\nmax_queued_messages 0\n" % ("true" if config == "demo-persist" else "false"))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            text += "user root\n"
    return Broker(workdir, conf_text=text)


def agent_toml(path, dev, serial_url, qpath, port, pki=None, e2e_timeout_s=4.0, e2e=True):
    lines = ["[device]", 'fleet = "%s"' % FLEET, 'id = "%s"' % dev, "",
             "[serial]", 'url = "%s"' % serial_url, "",
             "[queue]", 'path = "%s"' % qpath, "",
             "[agent]", "status_interval_s = 2", "e2e_timeout_s = %s" % e2e_timeout_s,
             "e2e_timeout_max_s = 20", "",
             "[mqtt]", 'host = "127.0.0.1"', "port = %d" % port, "backoff_min_s = 0.2", "backoff_max_s = 2.0",
             "e2e_ack = %s" % ("true" if e2e else "false")]
    if pki:
        lines += ["tls = true", 'ca_file = "%s/ca.crt"' % pki,
                  'cert_file = "%s/%s.%s.crt"' % (pki, FLEET, dev),
                  'key_file = "%s/%s.%s.key"' % (pki, FLEET, dev)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def db_state(db_path, produced):
    """Compare the consumer's database with what the box produced, record by record."""
    from tools.consumer import db as consumer_db

    # a trip is complete once its trip_end is in and every record of it; the drive may end mid-trip (open)
    out = {"stored": 0, "lost": len(produced), "corrupted": 0, "unknown": 0, "dup_rows": 0, "trips": 0,
           "trips_complete": 0}
    if not os.path.exists(db_path):
        return out
    try:
        db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT device, boot, seq, data FROM records").fetchall()
        dup = 0
        for t in ("records", "positions", "events", "crashes", "statuses", "trips"):
            key = "trip" if t == "trips" else "seq"
            dup += db.execute("SELECT COUNT(*) - COUNT(DISTINCT device || '/' || boot || '/' || %s) FROM %s"
                              % (key, t)).fetchone()[0]
        trips = consumer_db.list_trips(db)
        db.close()
    except sqlite3.Error:
        return out
    have = {}
    for r in rows:
        have[(r["device"], r["boot"], r["seq"])] = r["data"]
    corrupted = unknown = 0
    for k, data in have.items():
        want = produced.get(k)
        if want is None:
            unknown += 1
        elif json.loads(data) != json.loads(json.dumps(consumer_db._jsonable(want), sort_keys=True)):
            corrupted += 1
    out.update(stored=sum(1 for k in have if k in produced), lost=sum(1 for k in produced if k not in have),
               corrupted=corrupted, unknown=unknown, dup_rows=dup, trips=sum(1 for t in trips if t["closed"]),
               trips_complete=sum(1 for t in trips if t["complete"]))
    return out


def chaos_run(workdir, config="demo", seed=1, drive_s=30.0, speedup=60, broker_restarts=3, down_s=(2.0, 6.0),
              consumer_kills=2, agent_kills=4, drain_timeout_s=120.0, log=None, e2e=True):
    """One drive of drive_s wall seconds (speedup simulated seconds each) with the faults spread over it.
    e2e=False runs the agent with `mqtt.e2e_ack = false` (rows retired at the broker's PUBACK, the contract
    before end-to-end acknowledgements) to show what the faults cost without them."""
    if config not in CONFIGS:
        raise ValueError("config: %r is not one of %s" % (config, ", ".join(CONFIGS)))
    log = log or (lambda s: None)
    rng = random.Random(seed)
    dev = "box-e2e"
    os.makedirs(workdir, exist_ok=True)
    pki = make_pki(workdir, ["%s/%s" % (FLEET, dev)]) if config == "deploy" else None
    if MOSQUITTO is None:
        raise BenchError("mosquitto is not installed (make setup installs Debian's mosquitto)")
    broker = broker_for(workdir, config, pki).start()
    box = SimBox(dev, window=8, rto_ms=300, poll_ms=5, seed=seed).start()
    gen = DriveGen(dev, box.boot, box.store, 256, seed=seed, crash_at_s=int(drive_s * speedup * 0.5))
    agent = Proc(["-m", "edge_agent.agent", "--config",
                  agent_toml(os.path.join(workdir, "agent.toml"), dev, box.path,
                             os.path.join(workdir, "q.db"),
                             broker.port, pki, e2e=e2e)], os.path.join(workdir, "agent.log")).start()
    db_path = os.path.join(workdir, "consumer.db")
    url = "%s://127.0.0.1:%d" % ("mqtts" if pki else "mqtt", broker.port)
    cmd = ["-m", "tools.cli", "ingest", "--broker", url, "--db", db_path, "--group", "bench",
           "--client-id", "bench-ingest", "--quiet", "--repair-grace", "3"]
    if pki:
        cmd += ["--cafile", os.path.join(pki, "ca.crt"), "--cert", os.path.join(pki, "ingest.crt"),
                "--key", os.path.join(pki, "ingest.key")]
    consumer = Proc(cmd, os.path.join(workdir, "consumer.log")).start()
    # fault schedule: broker outages not overlapping, kills anywhere in the drive
    faults = []
    slot = drive_s / max(1, broker_restarts)
    for i in range(broker_restarts):
        d = rng.uniform(*down_s)
        at = i * slot + rng.uniform(0.5, max(0.6, slot - d - 0.5))
        faults += [(at, "broker_down"), (at + d, "broker_up")]
    faults += [(rng.uniform(1.0, drive_s), "consumer_kill") for _ in range(consumer_kills)]
    faults += [(rng.uniform(1.0, drive_s), "agent_kill") for _ in range(agent_kills)]
    faults.sort()
    t0 = time.monotonic()
    done = 0
    t_last_fault = t0
    try:
        for at, what in faults + [(drive_s, "end")]:
            while time.monotonic() - t0 < at:
                due = int((time.monotonic() - t0) * speedup)
                if due > done:
                    gen.step(due - done)
                    done = due
                time.sleep(0.02)
            if what == "end":
                break
            if what == "broker_down":
                broker.stop()
            elif what == "broker_up":
                broker.start()
            elif what == "consumer_kill":
                consumer.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                consumer.start()
            elif what == "agent_kill":
                agent.kill()
                time.sleep(rng.uniform(0.0, 0.5))
                agent.start()
            t_last_fault = time.monotonic()
            log("  %6.1f s %s" % (t_last_fault - t0, what))
        gen.flush()
        produced = dict(gen.produced)
        def done():
            st = db_state(db_path, produced)
            return not st["lost"] and st["trips_complete"] == st["trips"]

        wait_for(done, drain_timeout_s, 0.5)
        t_complete = time.monotonic()
        time.sleep(2.0)  # late duplicates would show now
        state = db_state(db_path, produced)
    finally:
        consumer.terminate()
        agent.terminate()
        box.stop()
        broker.stop()
    res = {"config": config, "seed": seed, "e2e_ack": e2e, "records_produced": len(produced),
           "records_stored": state["stored"],
           "lost": state["lost"], "duplicated_rows": state["dup_rows"], "corrupted": state["corrupted"],
           "unknown": state["unknown"], "trips": state["trips"], "trips_complete": state["trips_complete"],
           "broker_restarts": broker_restarts, "consumer_kills": consumer.kills, "agent_kills": agent.kills,
           "complete_after_last_fault_s": round(t_complete - t_last_fault, 1) if not state["lost"] else None,
           "wall_s": round(time.monotonic() - t0, 1)}
    if state["lost"]:
        res["agent_log_tail"] = agent.log()[-1500:]
        res["consumer_log_tail"] = consumer.log()[-1500:]
    return res


def run(quick=False, seeds=None, configs=None, log=None, e2e=True):
    """Figures for `paydbox bench`: flat, one line per run (the run dicts themselves: _run()["_runs"])."""
    out = _run(quick, seeds, configs, log, e2e)
    out.pop("_runs")
    return out


def _run(quick=False, seeds=None, configs=None, log=None, e2e=True):
    seeds = seeds or ([1, 2] if quick else [1, 2, 3, 4, 5])
    configs = configs or list(CONFIGS)
    out = {}
    runs = []
    tmp = tempfile.mkdtemp(prefix="bench_e2e_")
    try:
        for cfg in configs:
            for seed in seeds:
                r = chaos_run(os.path.join(tmp, "%s-%d" % (cfg, seed)), cfg, seed, log=log,
                              drive_s=20.0 if quick else 30.0, e2e=e2e)
                runs.append(r)
                if log:
                    log("%s seed %d: produced %d stored %d lost %d dup %d, complete %s s after the last fault"
                        % (cfg, seed, r["records_produced"], r["records_stored"], r["lost"],
                           r["duplicated_rows"], r["complete_after_last_fault_s"]))
        for cfg in configs:
            rs = [r for r in runs if r["config"] == cfg]
            k = "e2e_%s%s_" % (cfg.replace("-", "_"), "" if e2e else "_puback_only")
            out[k + "runs"] = len(rs)
            out[k + "records_produced"] = sum(r["records_produced"] for r in rs)
            out[k + "records_stored"] = sum(r["records_stored"] for r in rs)
            out[k + "lost"] = sum(r["lost"] for r in rs)
            out[k + "duplicated_rows"] = sum(r["duplicated_rows"] for r in rs)
            out[k + "corrupted"] = sum(r["corrupted"] for r in rs)
            out[k + "broker_restarts"] = sum(r["broker_restarts"] for r in rs)
            out[k + "consumer_kills"] = sum(r["consumer_kills"] for r in rs)
            out[k + "agent_kills"] = sum(r["agent_kills"] for r in rs)
            done = [r["complete_after_last_fault_s"] for r in rs
                    if r["complete_after_last_fault_s"] is not None]
            out[k + "complete_after_last_fault_s_max"] = max(done) if done else None
            out[k + "trips_complete"] = "%d/%d" % (sum(r["trips_complete"] for r in rs),
                                                   sum(r["trips"] for r in rs))
        out["e2e_seeds"] = ",".join(str(s) for s in seeds)
        for r in runs:
            out["e2e_%s_seed%d" % (r["config"].replace("-", "_"), r["seed"])] = (
                "produced %d stored %d lost %d dup %d, complete %s s after the last fault"
                % (r["records_produced"], r["records_stored"], r["lost"], r["duplicated_rows"],
                   r["complete_after_last_fault_s"]))
        out["_runs"] = runs
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.bench.bench_e2e")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 20 s drives")
    ap.add_argument("--seeds", help="comma-separated seeds (default 1..5)")
    ap.add_argument("--configs", help="comma-separated of %s" % ", ".join(CONFIGS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--puback-only", action="store_true",
                    help="agent with mqtt.e2e_ack = false: what the faults cost without end-to-end acks")
    a = ap.parse_args(argv)
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else None
    configs = a.configs.split(",") if a.configs else None
    for c in configs or ():
        if c not in CONFIGS:
            ap.error("--configs: %r is not one of %s" % (c, ", ".join(CONFIGS)))
    res = _run(a.quick, seeds, configs, log=None if a.json else (lambda s: print(s, flush=True)),
               e2e=not a.puback_only)
    runs = res.pop("_runs")
    if a.json:
        print(json.dumps(dict(res, runs=runs), indent=1))
    else:
        for k, v in res.items():
            print("%-44s %s" % (k, v))
    return 0 if all(r["lost"] == 0 and r["duplicated_rows"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
