"""The agent against a real broker that speaks MQTT 3.1.1 only (NATS server, MQTT mode): with
protocol = "auto" it falls back from MQTT 5 and delivers every block exactly once, its retained status,
and downlink commands, through a broker restart; shows the agent is not tied to Mosquitto."""
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from firmware import decoder
from nats_fixture import NatsMqtt
from testbed.simbox import AgentProc, SimBox, block_ok, wait_for, write_agent_config

DEV = "box-0311"


@pytest.fixture
def nats(tmp_path):
    b = NatsMqtt(tmp_path / "nats").start()
    yield b
    b.stop()


class Sub311:
    """A plain MQTT 3.1.1 subscriber with a persistent session (clean_session=False)."""

    def __init__(self, host, port, topic):
        self.got, self.dups, self.bad, self.status, self.results = {}, 0, 0, [], []
        self.t_first = self.t_last = None
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub311", protocol=mqtt.MQTTv311,
                             clean_session=False)
        self.ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.c.on_message = self._msg
        self.c.connect(host, port)
        self.c.loop_start()
        assert self.ready.wait(10), "subscribe"

    def _msg(self, c, u, msg):
        leaf = msg.topic.split("/", 3)[3]
        with self.lock:
            if leaf in ("records", "events"):
                if not block_ok(msg.payload):
                    self.bad += 1
                    return
                fs = decoder.decode_header(bytes(msg.payload))[0]["first_seq"]
                if fs in self.got:
                    self.dups += 1
                self.got[fs] = bytes(msg.payload)
                self.t_last = time.monotonic()
                self.t_first = self.t_first or self.t_last
            elif leaf == "status":
                self.status.append(json.loads(msg.payload))
            elif leaf == "cmd/result":
                self.results.append(json.loads(msg.payload))

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_broker_speaks_311_only(nats):
    res = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="v5probe", protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: res.append(rc)
    c.connect(nats.host, nats.port)
    end = time.monotonic() + 5
    while not res and time.monotonic() < end:
        c.loop(0.1)
    assert res and res[0].is_failure and "protocol" in str(res[0]).lower(), res


def test_agent_falls_back_to_311_and_delivers_everything(tmp_path, nats):
    box = SimBox(DEV).start()
    sub = Sub311(nats.host, nats.port, "paydbox/f1/%s/#" % DEV)
    cfg = write_agent_config(str(tmp_path / "a.toml"), "f1", DEV, box.path, str(tmp_path / "q.db"),
                             nats.host, nats.port)
    agent = AgentProc(cfg, str(tmp_path / "a.log")).start()
    try:
        assert wait_for(lambda: sub.status and sub.status[-1]["state"] == "online", 20), agent.log()
        t0 = time.monotonic()
        box.produce(300)
        assert wait_for(lambda: len(sub.got) == 300, 60), agent.log()[-2000:]
        rate = 300 / (sub.t_last - t0)
        # downlink over 3.1.1
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ops311", protocol=mqtt.MQTTv311)
        c.connect(nats.host, nats.port)
        c.loop_start()
        c.publish("paydbox/f1/%s/cmd" % DEV, json.dumps({"id": "c311", "cmd": "ping"}),
                  qos=1).wait_for_publish(5)
        assert wait_for(lambda: any(r.get("id") == "c311" for r in sub.results), 20), agent.log()[-2000:]
        assert [r["ok"] for r in sub.results if r.get("id") == "c311"] == [True]
        c.loop_stop()
        c.disconnect()
        # a broker restart in the middle of a second batch loses nothing
        box.produce(200)
        time.sleep(0.3)
        nats.stop()
        time.sleep(1.0)
        nats.start()
        assert wait_for(lambda: len(sub.got) == 500, 60), agent.log()[-2000:]
    finally:
        agent.terminate()
        sub.close()
        box.stop()
    log = agent.log()
    assert "falling back to MQTT 3.1.1" in log and "(MQTT 3.1.1, session present:" in log
    assert sub.bad == 0
    for fs, payload in sub.got.items():
        assert payload == box.produced[fs]
    print("\nagent -> NATS (MQTT 3.1.1): %d blocks of 32 records, %.0f blocks/s; %d duplicates after "
          "the restart" % (300, rate, sub.dups))
