"""The shutdown handshake against the REAL agent process (docs/power.md, docs/link-protocol.md): the box
(real BoxLink over a pty) asks for a shutdown; the agent syncs its SQLite queue, answers, and runs its
poweroff command (here: a marker file instead of `systemctl poweroff`). The box then cuts the rail
(SIGKILL: no clean exit). Power is also cut in the middle of the handshake. Every block the box saw
acknowledged must be in the agent's queue file afterwards, and every block it did not see acknowledged
must still reach it at the next wake (the box kept it)."""
import os
import sqlite3
import time

from mosquitto_fixture import mosquitto  # noqa: F401  (pytest fixture)
from testbed.simbox import AgentProc, SimBox, wait_for, write_agent_config

DEV = "box-0001"


def _queued(qpath):
    db = sqlite3.connect(qpath)
    try:
        return {r[0] for r in db.execute("SELECT first_seq FROM q WHERE device=?", (DEV,))}
    finally:
        db.close()


def test_shutdown_handshake_then_power_cuts_lose_nothing(tmp_path, mosquitto):
    box = SimBox(DEV).start()
    marker = tmp_path / "poweroff-ran"
    qpath = str(tmp_path / "q.db")
    cfg = write_agent_config(str(tmp_path / "agent.toml"), "f1", DEV, box.path, qpath, mosquitto.host,
                             mosquitto.port)
    text = open(cfg).read().replace("[agent]\n", '[agent]\npoweroff_command = "touch %s"\n' % marker)
    open(cfg, "w").write(text)
    agent = AgentProc(cfg, str(tmp_path / "agent.log")).start()
    try:
        box.produce(12)
        assert wait_for(lambda: box.store.pending() == 0, 30), agent.log()[-2000:]
        # 1. the handshake: answered after the queue is synced, the poweroff command runs once
        with box.lock:
            box.link.request("shutdown")
        assert wait_for(lambda: box.link.answered is not None, 20), agent.log()[-2000:]
        ans = box.link.answered
        assert ans["ok"] is True and ans["cmd"] == "shutdown" and ans["id"] == box.link.req[1]
        assert wait_for(marker.exists, 10)
        assert not os.path.exists(qpath + "-wal") or os.path.getsize(qpath + "-wal") == 0  # checkpointed
        # the box cuts the rail (systemd may not have finished): every acknowledged block is on disk
        agent.kill()
        assert _queued(qpath) == set(box.produced)

        # 2. the next wake: more blocks, and the power goes while the box asks for the shutdown
        with box.lock:
            box.link.request(None)
        agent.start()
        box.produce(12, records_per_block=40)
        time.sleep(0.3)
        with box.lock:
            box.link.request("shutdown")
        agent.kill()  # mid-handshake, blocks still in flight
        acked_before = set(box.produced) - {e[0] for e in box.store.peek(1000)}
        assert acked_before <= _queued(qpath), "an acknowledged block is missing after the power cut"
        # 3. the wake after: the box resends what was not acknowledged
        with box.lock:
            box.link.request(None)
        agent.start()
        assert wait_for(lambda: box.store.pending() == 0, 30), agent.log()[-2000:]
        agent.kill()
        assert _queued(qpath) == set(box.produced)
    finally:
        agent.terminate()
        box.stop()
