"""End to end, nothing lost: box (real BoxLink, real codec blocks) -> real agent process -> real Mosquitto
-> real `paydbox ingest` process -> SQLite, with the broker restarted and the consumer killed during a drive.
Truth: the records the simulated box produced (testbed.simbox.DriveGen), compared one by one with the
consumer's database."""
import os
import time

import pytest

from testbed.simbox import DriveGen, Proc, SimBox, wait_for
from tools.bench import bench_e2e
from tools.bench.bench_e2e import agent_toml, broker_for, db_state

if bench_e2e.MOSQUITTO is None:  # make setup installs it; a machine without it cannot run these at all
    pytest.fail("mosquitto is not installed: run `make setup` (it installs Debian's mosquitto)",
                pytrace=False)


def _consumer(broker, db, workdir, name="consumer"):
    return Proc(["-m", "tools.cli", "ingest", "--broker", "mqtt://127.0.0.1:%d" % broker.port,
                 "--db", db, "--group", "t", "--client-id", "t-ingest", "--repair-grace", "2"],
                os.path.join(workdir, name + ".log"))


def _restart_while_consumer_away(tmp_path, e2e):
    """Deterministic order of the failure seen in the field: the consumer is down, the broker (demo config,
    no persistence) restarts and forgets the consumer's session, the agent publishes its backlog to a
    broker nobody is subscribed to, then the consumer comes back."""
    w = str(tmp_path)
    broker = broker_for(w, "demo").start()
    box = SimBox("box-t", window=8, rto_ms=300, poll_ms=5).start()
    gen = DriveGen("box-t", box.boot, box.store, 256, seed=5, crash_at_s=500)
    agent = Proc(["-m", "edge_agent.agent", "--config",
                  agent_toml(os.path.join(w, "agent.toml"), "box-t", box.path, os.path.join(w, "q.db"),
                             broker.port, e2e_timeout_s=2.0, e2e=e2e)], os.path.join(w, "agent.log")).start()
    db = os.path.join(w, "c.db")
    consumer = _consumer(broker, db, w).start()
    try:
        # the consumer is subscribed before the drive starts (the control needs it: what is published
        # before has no session to go to); its start takes seconds on a loaded machine, so wait for it
        assert wait_for(lambda: "ingest: subscribed" in consumer.log(), 60), consumer.log()[-2000:]
        gen.step(700)
        gen.flush()
        assert wait_for(lambda: db_state(db, dict(gen.produced))["lost"] == 0, 30), agent.log()[-2000:]
        consumer.kill()
        broker.stop()
        gen.step(700)  # the box keeps driving (a trip ends in here)
        gen.flush()
        broker.start()
        # the agent drains its backlog to the restarted broker: PUBACKed, and nobody subscribed
        assert wait_for(lambda: box.store.pending() == 0, 30)
        time.sleep(2.0)
        consumer.start()
        produced = dict(gen.produced)
        # e2e: the agent publishes again after its e2e timeout (2 s, backing off): ~5 s on a loaded machine;
        # the control waits 8 s to show what is lost (its records never come back)
        wait_for(lambda: db_state(db, produced)["lost"] == 0, 60 if e2e else 8)
        time.sleep(1.0)
        return db_state(db, produced), agent, consumer
    finally:
        consumer.terminate()
        agent.terminate()
        box.stop()
        broker.stop()


def test_broker_restart_while_the_consumer_is_away_loses_nothing(tmp_path):
    st, agent, consumer = _restart_while_consumer_away(tmp_path, e2e=True)
    assert st["lost"] == 0, "lost %d records\nagent log:\n%s\nconsumer log:\n%s" % (
        st["lost"], agent.log()[-2000:], consumer.log()[-2000:])
    assert (st["dup_rows"], st["corrupted"], st["unknown"]) == (0, 0, 0)
    assert st["trips"] >= 1 and st["trips_complete"] == st["trips"], st


def test_without_end_to_end_acks_the_same_faults_lose_records(tmp_path):
    """The control: the same sequence with the agent retiring rows at the broker's PUBACK (the old contract)
    loses what was published while the consumer was away, so the test above measures something real."""
    st, _, _ = _restart_while_consumer_away(tmp_path, e2e=False)
    assert st["lost"] > 100, st


def test_chaos_drive_broker_restarts_consumer_and_agent_kills_lose_nothing(tmp_path):
    r = bench_e2e.chaos_run(str(tmp_path / "chaos"), "demo", seed=7, drive_s=18.0, broker_restarts=2,
                            consumer_kills=1, agent_kills=2, drain_timeout_s=60.0)
    assert r["broker_restarts"] == 2 and r["consumer_kills"] == 1 and r["agent_kills"] == 2
    assert r["records_produced"] > 500
    assert (r["lost"], r["duplicated_rows"], r["corrupted"], r["unknown"]) == (0, 0, 0, 0), r
