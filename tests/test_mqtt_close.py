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


class EndWatch:
    """A TCP forwarder between the agent and Mosquitto that tells how each agent connection ended: a clean
    EOF (FIN) or a TCP reset (a socket closed with bytes unread)."""

    def __init__(self, host, port):
        import socket
        self.up = (host, port)
        self.ends = []
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        while True:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(self.up, 5)
            threading.Thread(target=self._pump, args=(a, u, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, a, False), daemon=True).start()

    def _pump(self, a, b, from_agent):
        import socket
        end = "eof"
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except ConnectionResetError:
            end = "reset"
        except OSError:
            end = "error"
        if from_agent:
            self.ends.append(end)
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.mark.parametrize("path", ["connack timeout", "client replaced"])
def test_a_connection_given_up_is_closed_without_a_reset(tmp_path, path):
    """The two failed-connection paths (no CONNACK within 10 s; the client replaced on a fallback to 3.1.1)
    close through close_without_reset: with the broker's CONNACK and the session's queued messages unread
    in the socket, a plain close() is a TCP reset (every time, 50 of 50 before)."""
    b = Broker(tmp_path / "mosquitto").start()
    s = Stream(b.host, b.port)
    w = EndWatch(b.host, b.port)
    cfg = {"host": "127.0.0.1", "port": w.port, "protocol": "5"}
    try:
        p = _connect(b, "5", [])  # the persistent session exists (direct, not through the watch)
        p.close()
        for i in range(3):
            s.burst(50)  # queued for the session: the broker sends them right after its CONNACK
            time.sleep(0.2)
            p = Publisher(cfg, CID, "t/status", b"will", sub_topics=["t/cmd"])
            p.step(0.0)  # CONNECT
            p._client.loop_write()
            time.sleep(0.3)  # CONNACK and the queued messages are in the socket, unread
            if path == "connack timeout":
                p._client.loop = lambda timeout=0.0: mqtt.MQTT_ERR_SUCCESS  # nothing read
                p._connecting_since = time.monotonic() - 11
                p.step(0.0)
            else:
                p._make_client()
            assert wait_for_len(w.ends, i + 1, 5), w.ends
    finally:
        s.close()
        b.stop()
    assert w.ends == ["eof"] * 3


def wait_for_len(lst, n, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(lst) >= n:
            return True
        time.sleep(0.02)
    return False
