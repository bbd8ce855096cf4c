"""The agent's MQTT session survives a reconnect: a command published while the agent is cut off from the
broker (its TCP connection dropped by a proxy in between, the agent process alive) is delivered when it
connects again, and answered once. Real agent process, real brokers: Mosquitto on MQTT 5 and on 3.1.1, and
the NATS server (MQTT 3.1.1 only, the agent on `auto`)."""
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
    (a network outage the agent lives through), then let them through again."""

    def __init__(self, host, port):
        self.up = (host, port)
        self.port = free_port()
        self.open = True
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
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
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

    def send(self, cid):
        self.c.publish("paydbox/f1/%s/cmd" % DEV, json.dumps({"id": cid, "cmd": "ping"}),
                       qos=1).wait_for_publish(5)

    def answers(self, cid):
        return [r for r in self.results if r.get("id") == cid]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def command_survives_a_cut(tmp_path, host, port, protocol, v5_ops=True):
    box = SimBox(DEV).start()
    proxy = CutProxy(host, port)
    ops = Ops(host, port, v5=v5_ops)
    cfg = write_agent_config(str(tmp_path / "a.toml"), "f1", DEV, box.path, str(tmp_path / "q.db"),
                             "127.0.0.1", proxy.port, extra_mqtt={"protocol": protocol})
    agent = AgentProc(cfg, str(tmp_path / "a.log")).start()
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
