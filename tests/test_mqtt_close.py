"""The agent's graceful MQTT close reaches the broker whole. paho writes DISCONNECT and closes its socket at
once; with the broker's next messages still unread in it, Linux answers the close with a TCP reset and
Mosquitto drops what it had not read yet: the agent's last PUBACKs (those commands and acks come again to
the next session: duplicates) and the DISCONNECT (the broker publishes the agent's will over its last
status). edge_agent.mqtt.close_without_reset half-closes and reads the socket empty instead (the consumer's
fix, the same helper). Real Mosquitto; the broker keeps sending while the agent closes (a stream of QoS 1
messages on a topic the agent subscribed), so there is unread data at every close."""
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edge_agent.mqtt import Publisher, close_without_reset
from mosquitto_fixture import Broker
from tools.consumer import ingest

CID = "agent-close"
CYCLES = 6


class Stream:
    """Publishes numbered QoS 1 messages on t/cmd (a burst, or a steady stream from a thread) and watches
    t/status, where the agent's will (b"will") and its last status (b"bye") land."""

    def __init__(self, host, port):
        self.n = 0
        self.status = []
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t-stream", protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("t/status", 1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = lambda c, u, m: self.status.append(bytes(m.payload))
        self.c.connect(host, port)
        self.c.loop_start()
        assert ready.wait(10)
        self._stop = threading.Event()
        self._th = None

    def burst(self, k):
        for _ in range(k):
            self.c.publish("t/cmd", json.dumps({"n": self.n}), qos=1)
            self.n += 1

    def start(self):
        self._stop.clear()

        def pump():
            while not self._stop.is_set():
                self.burst(1)
                time.sleep(0.001)
        self._th = threading.Thread(target=pump, daemon=True)
        self._th.start()

    def stop(self):
        self._stop.set()
        self._th.join(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def _connect(b, protocol, got):
    p = Publisher({"host": b.host, "port": b.port, "protocol": protocol}, CID, "t/status", b"will",
                  on_message=lambda m: got.append(json.loads(m.payload)["n"]), sub_topics=["t/cmd"])
    end = time.monotonic() + 10
    while not p.connected and time.monotonic() < end:
        p.step(0.05)
    assert p.connected, p.last_error
    t = time.monotonic()
    while time.monotonic() - t < 0.3:  # SUBACK, and what the session kept from the previous one
        p.step(0.02)
    return p


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_graceful_close_reaches_the_broker_with_the_last_pubacks(tmp_path, protocol):
    b = Broker(tmp_path / "mosquitto", conf_extra="log_type notice\n").start()
    s = Stream(b.host, b.port)
    taken = set()  # every message the agent got, i.e. PUBACKed (paho acks after on_message)
    again = []  # messages delivered again to a later session after the agent had taken them
    try:
        for _ in range(CYCLES):
            got = []
            p = _connect(b, protocol, got)
            again += [n for n in got if n in taken]
            taken.update(got)
            got.clear()
            s.burst(100)
            end = time.monotonic() + 10
            while len(got) < 50 and time.monotonic() < end:
                p.step(0.01)
            assert len(got) >= 50
            s.start()  # the broker keeps sending while the agent closes
            time.sleep(0.05)
            p.close(b"bye")
            s.stop()
            taken.update(got)
        got = []
        p = _connect(b, protocol, got)  # the last cycle's redeliveries
        again += [n for n in got if n in taken]
        p.close()
        time.sleep(0.3)
    finally:
        s.close()
        b.stop()
    log = b.read_log()
    resets = log.count("Client %s closed its connection" % CID)
    assert (resets, log.count("Client %s disconnected." % CID)) == (0, CYCLES + 1), log[-3000:]
    assert b"will" not in s.status and s.status.count(b"bye") == CYCLES  # the broker read every DISCONNECT
    assert again == []  # and the PUBACKs before it: nothing taken came twice


def test_the_consumer_closes_with_the_same_helper():
    assert ingest.close_without_reset is close_without_reset  # one home (edge_agent/mqtt.py)


def test_close_without_reset_returns_on_a_socket_already_gone():
    import socket
    a, c = socket.socketpair()
    c.close()
    t = time.monotonic()
    close_without_reset(a, timeout_s=5)  # the peer's end is closed: EOF at once, no wait
    assert time.monotonic() - t < 1
    a.close()
    close_without_reset(a)  # closed: shutdown fails, nothing raised
    close_without_reset(None)
