"""The agent's MQTT session survives a reconnect and a restart: a command published while the agent is cut
off from the broker (its TCP connection dropped by a proxy in between, the agent process alive), or while
the agent is down (SIGKILL), also across a broker restart with persistence, is delivered when it connects
again, run once by the box and answered once; a command id taken before a restart is not run again when it
comes again after it (a persistent session redelivers). Without broker persistence a broker restart loses
the queued command (the documented limit, docs/mqtt-topics.md). Real agent process, real brokers: Mosquitto
on MQTT 5 and on 3.1.1, and the NATS server (MQTT 3.1.1 only, sessions in JetStream; the agent on
`auto`)."""
import json
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from mosquitto_fixture import Broker, free_port
from nats_fixture import NatsMqtt
from testbed.simbox import AgentProc, SimBox, wait_for, write_agent_config

DEV = "box-sess"


class CutProxy:
    """A TCP forwarder between the agent and the broker that can drop every connection and refuse new ones
    (a network outage the agent lives through), then let them through again; or, `blackhole`, keep the
    connections and throw away what the agent sends (its packets never reach the broker)."""

    def __init__(self, host, port):
        self.up = (host, port)
        self.port = free_port()
        self.open = True
        self.blackhole = False
        self.swallowed = 0  # bytes of the agent thrown away
        self.conns = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.srv = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if not self.open:
                c.close()
                continue
            try:
                u = socket.create_connection(self.up, 5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
                self.accepted += 1
            for a, b, up in ((c, u, True), (u, c, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, a, b, from_agent):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if from_agent and self.blackhole:
                    self.swallowed += len(d)
                    continue
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.open = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.open = True

    def close(self):
        self.cut()
        self.srv.close()


class Ops:
    """Fleet operations on the broker: publishes commands, collects the agent's results and status."""

    def __init__(self, host, port, v5=True):
        self.results, self.status = [], []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-ops-sess",
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("paydbox/f1/%s/cmd/result" % DEV, 1), ("paydbox/f1/%s/status" % DEV, 1)])
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._msg
        self.c.connect(host, port)
        self.c.loop_start()
        assert ready.wait(10)

    def _msg(self, c, u, m):
        if not m.payload:
            return
        (self.results if m.topic.endswith("cmd/result") else self.status).append(json.loads(m.payload))

    def send(self, cid, expiry_s=None):
        props = None
        if expiry_s is not None:  # MQTT 5 message expiry interval: the command's own time to live
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry_s
        self.c.publish("paydbox/f1/%s/cmd" % DEV, json.dumps({"id": cid, "cmd": "ping"}), qos=1,
                       properties=props).wait_for_publish(5)

    def answers(self, cid):
        return [r for r in self.results if r.get("id") == cid]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _start_agent(tmp_path, box_path, host, port, protocol, agent_extra=""):
    """The real agent process for DEV on box_path, against host:port, speaking `protocol`; `agent_extra`:
    lines for its [agent] table."""
    cfg = write_agent_config(str(tmp_path / "a.toml"), "f1", DEV, box_path, str(tmp_path / "q.db"),
                             host, port, extra_mqtt={"protocol": protocol})
    if agent_extra:
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("[agent]\n", "[agent]\n" + agent_extra + "\n"))
    return AgentProc(cfg, str(tmp_path / "a.log")).start()


def command_survives_a_cut(tmp_path, host, port, protocol, v5_ops=True):
    box = SimBox(DEV).start()
    proxy = CutProxy(host, port)
    ops = Ops(host, port, v5=v5_ops)
    agent = _start_agent(tmp_path, box.path, "127.0.0.1", proxy.port, protocol)
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("state") == "online",
                        30), agent.log()[-2000:]
        ops.send("before")  # the downlink works at all
        assert wait_for(lambda: ops.answers("before"), 20), agent.log()[-2000:]
        n_conn = proxy.accepted
        proxy.cut()  # the agent loses the broker; it keeps running and retrying
        time.sleep(0.5)
        ops.send("while-away")  # the broker holds it for the agent's session, or drops it
        time.sleep(1.0)
        assert not ops.answers("while-away")
        proxy.restore()
        assert (wait_for(lambda: proxy.accepted > n_conn,
                         20)), "the agent did not reconnect: " + agent.log()[-2000:]
        assert wait_for(lambda: ops.answers("while-away"), 20), \
            "a command published while the agent was away was lost: " + agent.log()[-3000:]
        time.sleep(1.0)
        assert [r["ok"] for r in ops.answers("while-away")] == [True]  # answered once
        assert [r["ok"] for r in ops.answers("before")] == [True]
    finally:
        agent.terminate()
        ops.close()
        proxy.close()
        box.stop()
    return agent.log()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_command_sent_while_the_agent_is_away_arrives_after_reconnect_mosquitto(tmp_path, protocol):
    b = Broker(tmp_path / "mosquitto").start()
    try:
        log = command_survives_a_cut(tmp_path, b.host, b.port, protocol)
    finally:
        b.stop()
    assert "(MQTT %s, session present: True)" % protocol in log


def test_a_command_sent_while_the_agent_is_away_arrives_after_reconnect_nats_311(tmp_path):
    n = NatsMqtt(tmp_path / "nats").start()
    try:
        log = command_survives_a_cut(tmp_path, n.host, n.port, "auto", v5_ops=False)
    finally:
        n.stop()
    assert "falling back to MQTT 3.1.1" in log and "(MQTT 3.1.1, session present: True)" in log


class CountingBox:
    """A SimBox whose command handler records every command the box runs (the box's link answers a
    retransmission of its last command id itself, without running it again)."""

    def __init__(self):
        self.ran = []
        self.box = SimBox(DEV, on_command=self._cmd).start()

    def _cmd(self, d):
        self.ran.append(d.get("id"))
        return {"ok": True, "ran": d.get("cmd")}

    def times(self, cid):
        return self.ran.count(cid)


def _brokers(kind, workdir, persistence=True):
    if kind == "nats":
        return NatsMqtt(workdir).start()
    b = Broker(workdir)
    if not persistence:  # the fixture turns persistence on; Mosquitto's default is off
        with open(b.conf) as f:
            text = f.read()
        assert "persistence true\n" in text
        with open(b.conf, "w") as f:
            f.write(text.replace("persistence true\n", ""))
    return b.start()


def last_session_present(log):
    lines = [ln for ln in log.splitlines() if "session present:" in ln]
    assert lines, log[-2000:]
    return lines[-1].rsplit("session present:", 1)[1].strip(" )")


# (broker, agent protocol, ops client on MQTT 5)
CASES = [("mosquitto", "5", True), ("mosquitto", "3.1.1", True), ("nats", "auto", False)]


def command_survives_agent_kill(tmp_path, kind, protocol, v5_ops, restart_broker=False, persistence=True):
    """Returns (answers of the command sent while the agent was down, times the box ran it, agent log)."""
    b = _brokers(kind, tmp_path / kind, persistence)
    cb = CountingBox()
    ops = Ops(b.host, b.port, v5=v5_ops)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, protocol)
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("state") == "online",
                        30), agent.log()[-2000:]
        ops.send("before")
        assert wait_for(lambda: ops.answers("before"), 20), agent.log()[-2000:]
        # the broker's PUBACK for the result is in (a result without one is published again after the
        # restart: at least once)
        assert wait_for(lambda: ops.status[-1]["counters"]["results"] == 1
                        and ops.status[-1]["cmd_results_unacked"] == 0, 10), agent.log()[-2000:]
        agent.kill()  # SIGKILL: no DISCONNECT, the broker sends the will
        assert wait_for(lambda: ops.status[-1].get("state") == "offline", 20), "no will after SIGKILL"
        ops.send("while-down")
        if restart_broker:
            time.sleep(1.5)  # Mosquitto autosave_interval 1 (it also saves on SIGTERM)
            b.stop()
            b.start()
            assert wait_for(lambda: ops.c.is_connected(), 20), "ops did not reconnect"
            time.sleep(0.5)  # ops' SUBSCRIBE after its reconnect
        n_online = sum(1 for s_ in ops.status if s_.get("state") == "online")
        agent.start()
        assert wait_for(lambda: sum(1 for s_ in ops.status if s_.get("state") == "online") > n_online,
                        30), agent.log()[-3000:]
        ops.send("after")  # the command path works after the restart: a clean end to wait for
        assert wait_for(lambda: ops.answers("after") and (ops.answers("while-down") or not persistence),
                        20), "a command published while the agent was down was lost: " + agent.log()[-3000:]
        time.sleep(1.0)  # a second answer would come now
        assert [r["ok"] for r in ops.answers("before")] == [True] and cb.times("before") == 1
        assert [r["ok"] for r in ops.answers("after")] == [True] and cb.times("after") == 1
        return ops.answers("while-down"), cb.times("while-down"), agent.log()
    finally:
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()


@pytest.mark.parametrize("kind,protocol,v5_ops", CASES)
def test_a_command_sent_while_the_agent_is_down_arrives_after_its_restart(tmp_path, kind, protocol, v5_ops):
    answers, ran, log = command_survives_agent_kill(tmp_path, kind, protocol, v5_ops)
    assert [(r["ok"], r.get("ran")) for r in answers] == [(True, "ping")] and ran == 1, log[-3000:]
    assert last_session_present(log) == "True"


@pytest.mark.parametrize("kind,protocol,v5_ops", CASES)
def test_a_queued_command_survives_a_broker_restart_with_persistence(tmp_path, kind, protocol, v5_ops):
    """Mosquitto with `persistence true`, NATS with JetStream on disk: the agent's session and the command
    queued in it outlive a broker restart while the agent is down."""
    answers, ran, log = command_survives_agent_kill(tmp_path, kind, protocol, v5_ops, restart_broker=True)
    assert [r["ok"] for r in answers] == [True] and ran == 1, log[-3000:]


def test_a_broker_restart_without_persistence_loses_the_queued_command(tmp_path):
    """The limit (docs/mqtt-topics.md): Mosquitto keeps sessions in memory; restarted without persistence it
    has forgotten the agent's session and the command queued in it. The agent still subscribes again, so
    later commands work."""
    answers, ran, log = command_survives_agent_kill(tmp_path, "mosquitto", "5", True, restart_broker=True,
                                                    persistence=False)
    assert answers == [] and ran == 0
    assert last_session_present(log) == "False"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_command_id_taken_before_an_agent_restart_is_not_run_again(tmp_path, protocol):
    """A persistent session redelivers a command whose PUBACK the broker did not get (the agent killed
    between taking it and acking it). The box answers a retransmission of its *last* command id only, so
    the agent must remember the ids it took across its own restart. The redelivery is played by publishing
    the same command id again while the agent is down (the agent cannot tell the two apart); it gets the
    stored result of the one run."""
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, protocol)
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("state") == "online",
                        30), agent.log()[-2000:]
        ops.send("x")
        assert wait_for(lambda: ops.answers("x"), 20), agent.log()[-2000:]
        ops.send("z")  # the box's last command is now z, not x
        assert wait_for(lambda: ops.answers("z"), 20), agent.log()[-2000:]
        # the broker's PUBACK for z's result is in (else the restarted agent publishes it again)
        assert wait_for(lambda: ops.status[-1]["counters"]["results"] == 2
                        and ops.status[-1]["cmd_results_unacked"] == 0, 10), agent.log()[-2000:]
        agent.kill()
        assert wait_for(lambda: ops.status[-1].get("state") == "offline", 20), "no will after SIGKILL"
        ops.send("x")  # x again, as a redelivery after the restart
        agent.start()
        ops.send("y")
        assert wait_for(lambda: ops.answers("y"), 30), agent.log()[-3000:]
        time.sleep(1.0)
    finally:
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert cb.ran == ["x", "z", "y"], cb.ran
    # x coming again is answered again, with the result of its one run (stored with the agent)
    assert [len(ops.answers(c)) for c in ("x", "z", "y")] == [2, 1, 1]
    first, again = ops.answers("x")
    assert first == again and (first["ok"], first["ran"]) == (True, "ping")


def test_a_command_taken_while_the_box_is_away_survives_an_agent_kill(tmp_path):
    """The broker forgets a command once the agent has PUBACKed it, so the agent keeps the commands it took
    and has no result for in its database: taken while the box link is down, the agent SIGKILLed, then
    started again with the box back, the command is run once and answered once."""
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    ops = Ops(b.host, b.port)
    cfg = write_agent_config(str(tmp_path / "a.toml"), "f1", DEV, cb.box.path, str(tmp_path / "q.db"),
                             b.host, b.port)
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:  # the link counts as down 1.5 s after the box's last frame
        f.write(text.replace("[agent]\n", "[agent]\nlink_timeout_s = 1.5\nlink_keepalive_s = 0.3\n"))
    agent = AgentProc(cfg, str(tmp_path / "a.log")).start()
    frozen = False
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("link") == "up", 30), agent.log()[-2000:]
        cb.box.lock.acquire()  # the box stops polling its link: it neither reads nor answers
        frozen = True
        assert wait_for(lambda: ops.status[-1].get("link") == "down", 20), agent.log()[-2000:]
        ops.send("taken")
        assert wait_for(lambda: ops.status[-1]["counters"]["cmds"] == 1, 20), agent.log()[-2000:]
        agent.kill()
        cb.box.lock.release()
        frozen = False
        agent.start()
        assert wait_for(lambda: ops.answers("taken"), 30), \
            "a command the agent had taken was lost in its restart: " + agent.log()[-3000:]
        time.sleep(1.0)
    finally:
        if frozen:
            cb.box.lock.release()
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert [(r["ok"], r.get("ran")) for r in ops.answers("taken")] == [(True, "ping")]
    assert cb.ran == ["taken"]
    assert "1 downlink command(s) taken before the restart still wait for the box: taken" in agent.log()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_result_the_broker_did_not_acknowledge_is_published_after_an_agent_kill(tmp_path, protocol):
    """The agent is killed between publishing a command's result and the broker's PUBACK for it (its
    packets swallowed on the way to the broker): the result is kept in the agent's database until acked,
    so the restarted agent publishes it; the same id sent again gets that stored result, not a second run."""
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    proxy = CutProxy(b.host, b.port)
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, "127.0.0.1", proxy.port, protocol)
    frozen = False
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("link") == "up", 30), agent.log()[-2000:]
        cb.box.lock.acquire()  # the box answers only once the broker no longer hears the agent
        frozen = True
        ops.send("c")
        assert wait_for(lambda: ops.status[-1]["counters"]["cmds"] == 1, 20), agent.log()[-2000:]
        proxy.blackhole = True
        n = proxy.swallowed
        cb.box.lock.release()
        frozen = False
        assert wait_for(lambda: cb.ran == ["c"], 10), agent.log()[-2000:]
        assert wait_for(lambda: proxy.swallowed > n, 10)  # the agent has published the result
        time.sleep(0.5)
        agent.kill()
        proxy.blackhole = False
        assert ops.answers("c") == []  # the broker never got it
        agent.start()
        assert wait_for(lambda: ops.answers("c"), 30), \
            "the result of a command was lost in the agent's restart: " + agent.log()[-3000:]
        assert "1 command result(s) the broker had not acknowledged before the restart" in agent.log()
        assert wait_for(lambda: ops.status[-1]["cmd_results_unacked"] == 0
                        and ops.status[-1]["counters"]["cmd_repeats"] == 0, 10)
        ops.send("c")  # ops asks again: the stored result, the box does not run it again
        assert wait_for(lambda: len(ops.answers("c")) == 2, 20), agent.log()[-3000:]
        time.sleep(1.0)
    finally:
        if frozen:
            cb.box.lock.release()
        agent.terminate()
        ops.close()
        proxy.close()
        cb.box.stop()
        b.stop()
    first, again = ops.answers("c")
    assert first == again and (first["ok"], first["ran"]) == (True, "ping")
    assert cb.ran == ["c"]


def _freeze_until_link_down(cb, ops, agent):
    cb.box.lock.acquire()  # the box stops polling its link: it neither reads nor answers
    assert wait_for(lambda: ops.status[-1].get("link") == "down", 20), agent.log()[-2000:]


# the link counts as down 1.5 s after the box's last frame; a command is given up after 3 unanswered
# attempts 0.3 s apart: the old agent answered "box did not answer" ~1 s after taking it, box there or not
FAST_LINK = "link_timeout_s = 1.5\nlink_keepalive_s = 0.3\ncmd_retry_s = 0.3\ncmd_tries = 3"


def test_a_command_waits_while_the_box_is_away_and_runs_when_it_is_back(tmp_path):
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, "5", FAST_LINK)
    frozen = False
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("link") == "up", 30), agent.log()[-2000:]
        _freeze_until_link_down(cb, ops, agent)
        frozen = True
        ops.send("away")
        assert wait_for(lambda: ops.status[-1]["counters"]["cmds"] == 1, 20), agent.log()[-2000:]
        time.sleep(4.0)  # ~13 retry periods, 4x the old give-up
        assert ops.answers("away") == [] and ops.status[-1]["cmd_pending"] == 1, ops.answers("away")
        cb.box.lock.release()
        frozen = False
        assert wait_for(lambda: ops.answers("away"), 20), agent.log()[-3000:]
        time.sleep(1.0)
    finally:
        if frozen:
            cb.box.lock.release()
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert [(r["ok"], r.get("ran")) for r in ops.answers("away")] == [(True, "ping")]
    assert cb.ran == ["away"]


def test_a_command_for_a_box_away_expires_at_its_own_or_the_agents_deadline(tmp_path):
    """agent.cmd_expiry_s bounds the wait for a box that is away; a command published with an MQTT 5
    message expiry interval waits no longer than that. Expired commands are never run."""
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, "5", FAST_LINK + "\ncmd_expiry_s = 4")
    frozen = False
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("link") == "up", 30), agent.log()[-2000:]
        _freeze_until_link_down(cb, ops, agent)
        frozen = True
        ops.send("agent-deadline")
        ops.send("own-deadline", expiry_s=1)
        assert wait_for(lambda: ops.answers("agent-deadline") and ops.answers("own-deadline"), 20), \
            agent.log()[-3000:]
        order = [r["id"] for r in ops.results]
        cb.box.lock.release()
        frozen = False
        assert wait_for(lambda: ops.status[-1].get("link") == "up", 20)
        time.sleep(1.0)
    finally:
        if frozen:
            cb.box.lock.release()
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert order == ["own-deadline", "agent-deadline"]
    for cid in order:
        assert [(r["ok"], r["error"].split(":")[0], r["tries"]) for r in ops.answers(cid)] == [
            (False, "expired", 0)]
    assert cb.ran == []


def test_a_box_that_is_there_but_does_not_answer_gets_its_tries(tmp_path):
    """The box is alive (keepalives) but its firmware never answers the command: "box did not answer"
    after cmd_tries attempts the box was heard after."""
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    cb.box.link.keepalive_ms = 100
    cb.box.link._on_cmd = lambda payload: None  # hears the command, never answers
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, "5",
                         FAST_LINK.replace("cmd_retry_s = 0.3", "cmd_retry_s = 0.5"))
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("link") == "up", 30), agent.log()[-2000:]
        ops.send("deaf")
        assert wait_for(lambda: ops.answers("deaf"), 20), agent.log()[-3000:]
        time.sleep(1.0)
    finally:
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert [(r["ok"], r["error"], r["tries"]) for r in ops.answers("deaf")] == [
        (False, "box did not answer", 3)]


def _agent_in_process(tmp_path, device):
    from edge_agent.agent import Agent
    cfg = {"device": {"fleet": "f1", "id": device}, "serial": {"url": str(tmp_path / "no-such-tty")},
           "queue": {"path": str(tmp_path / "q.db")}, "mqtt": {"host": "127.0.0.1", "port": 1}, "agent": {}}
    return Agent(cfg)


def _command(agent, cid):
    m = mqtt.MQTTMessage(topic=agent.topic("cmd").encode())
    m.payload = json.dumps({"id": cid, "cmd": "ping"}).encode()
    agent._on_mqtt_message(m)


def test_stored_commands_stay_with_their_device_and_a_bad_record_is_forgotten(tmp_path, caplog):
    a = _agent_in_process(tmp_path, DEV)
    _command(a, "c1")
    assert list(a.pending_cmds) == ["c1"]
    a.queue.close()
    a = _agent_in_process(tmp_path, DEV)  # the same box after a restart: c1 still waits, and is known
    assert list(a.pending_cmds) == ["c1"] and a.recent_cmd_ids == ["c1"]
    a.queue.close()
    # the queue taken over by another box id (docs: the configured id takes over): not its commands
    b = _agent_in_process(tmp_path, "box-other")
    assert b.pending_cmds == {} and b.recent_cmd_ids == []
    b.queue.set_meta("cmd_state", "{not json")
    b.queue.close()
    b = _agent_in_process(tmp_path, "box-other")
    assert b.pending_cmds == {} and "queue meta cmd_state unreadable" in caplog.text
    _command(b, "c1")  # its own c1 is a new command
    assert list(b.pending_cmds) == ["c1"]
    b.queue.close()


def test_command_deadlines_and_unacknowledged_results_survive_a_restart(tmp_path, monkeypatch, caplog):
    from edge_agent import agent as agent_mod
    caplog.set_level("INFO", logger="paydbox.agent")
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    monkeypatch.setattr(agent_mod, "BOOT_ID_PATH", str(boot))
    a = _agent_in_process(tmp_path, DEV)
    _command(a, "c1")
    _command(a, 7)  # ids are strings or integers; 7 and "7" are two commands
    _command(a, "7")
    until = a.pending_cmds["c1"]["until"]
    assert until - time.monotonic() == pytest.approx(86400, abs=60)  # agent.cmd_expiry_s, documented default
    a._on_result({"id": 7, "ok": True, "ran": "ping"})  # the box answered; no broker to take the result
    assert list(a.pending_cmds) == ["c1", "7"] and a.cmd_results[7]["acked"] is False
    a.queue.close()
    a = _agent_in_process(tmp_path, DEV)  # same boot of the machine: the deadline stands
    assert a.pending_cmds["c1"]["until"] == until and list(a.pending_cmds) == ["c1", "7"]
    assert a.cmd_results[7] == {"r": {"id": 7, "ok": True, "ran": "ping"}, "acked": False, "agent": False,
                                "mid": None, "t": 0.0}
    assert "1 command result(s) the broker had not acknowledged before the restart" in caplog.text
    a._on_result({"id": 7, "ok": True, "ran": "ping"})  # the box's answer to a retransmission: kept once
    assert list(a.cmd_results) == [7]
    a.queue.close()
    boot.write_text("boot-2\n")  # the machine rebooted: monotonic times of boot-1 mean nothing now
    t0 = time.monotonic()
    a = _agent_in_process(tmp_path, DEV)
    assert a.pending_cmds["c1"]["until"] >= t0 + 86400 and 7 in a.cmd_results
    a.queue.close()


def test_the_command_state_of_the_previous_release_is_read(tmp_path):
    a = _agent_in_process(tmp_path, DEV)
    a.queue.set_meta("cmd_state", json.dumps({"device": DEV, "recent": ["old", "done"],
                                              "pending": [{"id": "old", "cmd": "ping"}]}))
    a.queue.close()
    t0 = time.monotonic()
    a = _agent_in_process(tmp_path, DEV)
    assert list(a.pending_cmds) == ["old"] and a.pending_cmds["old"]["d"] == {"id": "old", "cmd": "ping"}
    assert a.pending_cmds["old"]["until"] >= t0 + 86400 and a.cmd_results == {}
    a.queue.close()


@pytest.mark.parametrize("bad", [0, -5])
def test_a_bad_command_expiry_is_a_config_error(tmp_path, bad):
    from edge_agent.agent import Agent
    cfg = {"device": {"fleet": "f1", "id": DEV}, "serial": {"url": str(tmp_path / "no-such-tty")},
           "queue": {"path": str(tmp_path / "q.db")}, "mqtt": {"host": "127.0.0.1", "port": 1},
           "agent": {"cmd_expiry_s": bad}}
    with pytest.raises(ValueError, match="agent.cmd_expiry_s: must be > 0"):
        Agent(cfg)


def _raw_command(agent, payload):
    m = mqtt.MQTTMessage(topic=agent.topic("cmd").encode())
    m.payload = payload
    agent._on_mqtt_message(m)


# (payload, the one-line error): byte offsets counted by hand (the é before the x is 2 bytes, 1 character)
BAD_COMMANDS = [
    (b'{"id": "a", "cmd": pin}', "payload: not JSON at byte 19"),
    (b'{"n": "\xc3\xa9", x}', "payload: not JSON at byte 12"),
    (b'{"id": "a\xff"}', "payload: not UTF-8 at byte 9"),
    (b'["ping"]', "payload: a JSON object expected, got list"),
    (b'{"cmd": "ping"}', "id: missing"),
    (b'{"id": true, "cmd": "ping"}', "id: a string or an integer expected, got bool"),
    (b'{"id": "q"}', "cmd: missing"),
]


def test_a_bad_command_gets_a_one_line_error_that_is_kept_until_the_broker_has_it(tmp_path):
    """Bad input gets a clear one-line error naming the problem, on cmd/result, and that answer is kept
    (cmd_state) like any result until the broker PUBACKs it: the agent restarted before it could publish it
    (no broker here) still has it. Nothing of it is run or remembered as a command id."""
    a = _agent_in_process(tmp_path, DEV)
    for payload, _ in BAD_COMMANDS:
        _raw_command(a, payload)
    assert a.counters["bad_cmds"] == len(BAD_COMMANDS) and a.pending_cmds == {} and a.recent_cmd_ids == []
    a.queue.close()
    a = _agent_in_process(tmp_path, DEV)
    got = [(e["r"]["id"], e["r"]["ok"], e["r"]["error"].split(" (")[0], e["acked"])
           for e in a.cmd_results.values()]
    assert got == [(None, False, why, False) for _, why in BAD_COMMANDS[:-1]] + [
        ("q", False, "cmd: missing", False)]
    _command(a, "q")  # the id of a refused command is free for a good one
    assert list(a.pending_cmds) == ["q"]
    a.queue.close()


def test_a_bad_command_is_answered_through_the_broker(tmp_path):
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, "5")
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("state") == "online",
                        30), agent.log()[-2000:]
        for payload, _ in BAD_COMMANDS:
            ops.c.publish("paydbox/f1/%s/cmd" % DEV, payload, qos=1).wait_for_publish(5)
        ops.send("good")
        assert wait_for(lambda: len(ops.results) == len(BAD_COMMANDS) + 1, 20), agent.log()[-3000:]
    finally:
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert sorted(r["error"].split(" (")[0] for r in ops.results if not r["ok"]) == sorted(
        why for _, why in BAD_COMMANDS)
    assert cb.ran == ["good"] and agent.log().count("bad command on paydbox/f1/%s/cmd refused" % DEV) == 7


def _retained_status(host, port):
    """The retained status a subscriber that comes now gets (a fresh connection, clean start)."""
    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-late", protocol=mqtt.MQTTv5)
    c.on_connect = lambda c_, u, f, rc, p: c_.subscribe("paydbox/f1/%s/status" % DEV, 1)
    c.on_message = lambda c_, u, m: got.append((m.retain, json.loads(m.payload)))
    c.connect(host, port)
    c.loop_start()
    try:
        assert wait_for(lambda: got, 10), "no retained status"
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0]


def test_the_will_after_a_sigkill_says_offline_and_nothing_stale(tmp_path):
    """SIGKILL: the broker publishes the will, retained. It says offline, and every other field it carries
    is what the agent's last online status said (who it is): no queue, link or counter figure of when
    paho's client was built (that one said link down, 0 commands, uptime 0)."""
    b = Broker(tmp_path / "mosquitto").start()
    cb = CountingBox()
    ops = Ops(b.host, b.port)
    agent = _start_agent(tmp_path, cb.box.path, b.host, b.port, "5")
    try:
        assert wait_for(lambda: ops.status and ops.status[-1].get("link") == "up", 30), agent.log()[-2000:]
        ops.send("k")
        assert wait_for(lambda: ops.answers("k") and ops.status[-1]["counters"]["cmds"] == 1, 20), \
            agent.log()[-2000:]
        last = ops.status[-1]
        assert last["state"] == "online"
        agent.kill()
        assert wait_for(lambda: ops.status[-1].get("state") == "offline", 20), "no will after SIGKILL"
        will = ops.status[-1]
        retained, now = _retained_status(b.host, b.port)
    finally:
        agent.terminate()
        ops.close()
        cb.box.stop()
        b.stop()
    assert retained and now == will  # the retained status is the will, not the last online one
    stale = {k: (v, last.get(k)) for k, v in will.items()
             if k not in ("state", "reason") and v != last.get(k)}
    assert stale == {}, stale
    assert (will["state"], will["fleet"], will["device"]) == ("offline", "f1", DEV)
