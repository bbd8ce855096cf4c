"""MQTT side of the agent: paho-mqtt 2.x client driven from the agent's single main loop (no paho
thread), QoS 1, MQTT 5 with fallback to 3.1.1, TLS or username/password, reconnect with exponential
backoff and full jitter (time.monotonic only).

Persistent session: a stable client id (the agent's `paydbox-agent-<device>`, or the broker's identity when
it binds ids to identities, deploy/mosquitto/mosquitto.conf), MQTT 3.1.1 clean_session=False, MQTT 5
clean_start=False with a session expiry (`mqtt.session_expiry_s`, default 7 days). The broker keeps the
agent's subscriptions and queues the QoS 1 commands, acks and resend requests published while the agent is
away (network loss, a restart, the Pi powered off), and delivers them when it connects again. A command that
comes twice (QoS 1 redelivery, also after an agent restart) is run and answered once: the agent keeps the
commands it took, and their ids, in its queue database (edge_agent/agent.py, docs/mqtt-topics.md)."""
import logging
import random
import select
import socket
import ssl
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("paydbox.agent.mqtt")

# CONNACK codes meaning "this broker does not speak MQTT 5": v3 rc 1, v5 reason 132 (0x84)
_UNSUPPORTED_PROTO = (1, 132)


class Publisher:
    def __init__(self, cfg, client_id, will_topic, will_payload, on_message=None, sub_topics=()):
        self.cfg = cfg
        self.host = cfg.get("host", "localhost")
        self.port = int(cfg.get("port", 8883 if cfg.get("tls") else 1883))
        self.keepalive = int(cfg.get("keepalive_s", 30))
        self.client_id = client_id
        self.will_topic = will_topic
        self.will_payload = will_payload
        self.on_message = on_message
        self.sub_topics = list(sub_topics)
        self.backoff_min = float(cfg.get("backoff_min_s", 0.5))
        self.backoff_max = float(cfg.get("backoff_max_s", 60.0))
        self.window = int(cfg.get("inflight", 32))
        # seconds the broker keeps the session (subscriptions, queued commands) while we are away
        self.session_expiry = int(cfg.get("session_expiry_s", 7 * 86400))
        if self.session_expiry < 0:
            raise ValueError("mqtt.session_expiry_s: must be >= 0, got %d" % self.session_expiry)
        proto = str(cfg.get("protocol", "auto"))
        if proto not in ("auto", "5", "3.1.1"):
            raise ValueError("mqtt.protocol: %r is not one of auto, 5, 3.1.1" % proto)
        self.proto_mode = proto
        self.v5 = proto != "3.1.1"
        self.connected = False
        self.generation = 0  # bumped when the client object is replaced (old mids become meaningless)
        self.acked_mids = []  # PUBACKs received since the last drain
        self.attempt = 0
        self.next_try = 0.0
        self.no_connack = 0
        self.connects = 0
        self.last_error = ""
        self._client = None
        self._connecting_since = None
        self._closing = False
        self._make_client()

    # ---- client construction
    def _make_client(self):
        if self._client is not None:
            # the old client's connection (refused, or no CONNACK): DISCONNECT (paho writes it at once when
            # not inside one of its callbacks, and calls on_disconnect before it closes the socket, as in
            # close()), then the socket drained, never closed with bytes unread (a TCP reset)
            old = self._client
            old.on_disconnect = lambda client, *a: close_without_reset(client.socket(), 1.0)
            try:
                old.disconnect()
            except Exception:
                pass
            _drop_socket(old)
        self.generation += 1
        c = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else self.session_expiry == 0,
        )
        c.max_inflight_messages_set(self.window)
        c.max_queued_messages_set(0)
        cfg = self.cfg
        if cfg.get("username"):
            pw = cfg.get("password")
            if pw is None and cfg.get("password_file"):
                with open(cfg["password_file"]) as f:
                    pw = f.read().strip()
            c.username_pw_set(cfg["username"], pw)
        if cfg.get("tls"):
            ctx = ssl.create_default_context(cafile=cfg.get("ca_file"))
            if cfg.get("cert_file"):
                ctx.load_cert_chain(cfg["cert_file"], cfg.get("key_file"))
            if cfg.get("tls_insecure_no_hostname"):
                ctx.check_hostname = False
            c.tls_set_context(ctx)
        c.will_set(self.will_topic, self.will_payload, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message_cb
        self._client = c

    # ---- paho callbacks (run inside loop(), i.e. in the agent's main thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._connecting_since = None
        rc = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        if rc != 0:
            self.last_error = "connack %s" % (reason_code,)
            log.warning("broker refused the connection: %s", reason_code)
            if self.v5 and self.proto_mode == "auto" and rc in _UNSUPPORTED_PROTO:
                log.warning("falling back to MQTT 3.1.1")
                self.v5 = False
                self._make_client()
            self._schedule_retry()
            return
        self.connected = True
        self.attempt = 0
        self.no_connack = 0
        self.connects += 1
        log.info("connected to %s:%d (MQTT %s, session present: %s)", self.host, self.port,
                 "5" if self.v5 else "3.1.1", bool(getattr(flags, "session_present", False)))
        for t in self.sub_topics:
            client.subscribe(t, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self._closing and flags is not None and not flags.is_disconnect_packet_from_server:
            # our own DISCONNECT is written; paho closes the socket right after this callback
            close_without_reset(client.socket())
        if self.connected:
            log.warning("disconnected from broker: %s", reason_code)
        elif self._connecting_since is not None:
            self.no_connack += 1
            if self.v5 and self.proto_mode == "auto" and self.no_connack >= 2:
                log.warning("no CONNACK twice: falling back to MQTT 3.1.1")
                self.v5 = False
                self._make_client()
        self.connected = False
        self._connecting_since = None
        self._schedule_retry()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.acked_mids.append(mid)

    def _on_message_cb(self, client, userdata, msg):
        if self.on_message is not None:
            self.on_message(msg)

    # ---- driving
    def _schedule_retry(self):
        self.attempt += 1
        cap = min(self.backoff_max, self.backoff_min * (2 ** min(self.attempt, 20)))
        self.next_try = time.monotonic() + random.uniform(self.backoff_min / 2, cap)  # full jitter

    def step(self, timeout=0.0):
        """One pass: network I/O, callbacks, reconnect when due."""
        now = time.monotonic()
        c = self._client
        if self.connected or self._connecting_since is not None:
            rc = c.loop(timeout=timeout)
            if rc != mqtt.MQTT_ERR_SUCCESS and (self.connected or self._connecting_since is not None):
                # paho calls on_disconnect for most failures; make sure we do not spin
                if self.connected or self._connecting_since is not None:
                    self._on_disconnect(c, None, None, rc, None)
            if self._connecting_since is not None and now - self._connecting_since > 10:
                log.warning("no CONNACK within 10 s")
                self._on_disconnect(c, None, None, "connack timeout", None)
                _drop_socket(c)
            return
        if now < self.next_try:
            if timeout:
                time.sleep(min(timeout, self.next_try - now))
            return
        try:
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                if self.session_expiry:
                    props.SessionExpiryInterval = self.session_expiry
                c.connect(self.host, self.port, keepalive=self.keepalive,
                          clean_start=self.session_expiry == 0, properties=props)
            else:
                c.connect(self.host, self.port, keepalive=self.keepalive)
            self._connecting_since = now
        except (OSError, ssl.SSLError, ValueError) as e:
            self.last_error = str(e)
            log.warning("broker %s:%d unreachable: %s (attempt %d)", self.host, self.port, e,
                        self.attempt + 1)
            self._schedule_retry()

    def drain_acks(self):
        out, self.acked_mids = self.acked_mids, []
        return out

    def publish(self, topic, payload, qos=1, retain=False, user_props=None):
        """Returns the mid, or None when not connected."""
        if not self.connected:
            return None
        props = None
        if self.v5 and user_props:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [(k, str(v)) for k, v in user_props]
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None
        return info.mid

    def free_slots(self, inflight):
        return self.window - inflight

    def close(self, last_payload=None):
        """Graceful end: the last (retained) status, then DISCONNECT (the broker discards the will) and a
        close without a TCP reset (close_without_reset), so the broker reads our last PUBACKs."""
        c = self._client
        self._closing = True
        if self.connected and last_payload is not None:
            info = c.publish(self.will_topic, last_payload, qos=1, retain=True)
            end = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < end and self.connected:
                c.loop(timeout=0.05)
        self.connected = False
        try:
            c.disconnect()
            c.loop(timeout=0.1)
        except Exception:
            pass
        self.connected = False


def _drop_socket(client, timeout_s=1.0):
    """A connection given up (no CONNACK in time, or the client replaced on a fallback to 3.1.1): its
    socket closed through close_without_reset (half-close, read empty, at most timeout_s), never with
    bytes unread (a TCP reset: the broker drops what it had not read yet)."""
    try:
        sock = client.socket()
    except Exception:
        return
    if sock is None:
        return
    close_without_reset(sock, timeout_s)
    try:
        sock.close()
    except OSError:
        pass


def close_without_reset(sock, timeout_s=2.0):
    """Half-close a socket whose last packet (DISCONNECT) is written, then read it empty until the broker
    closes its end (at most timeout_s). A socket closed with bytes still unread sends a TCP reset, and the
    broker then drops what it had not read yet: the client's last PUBACKs (the broker delivers those
    messages again to the session: duplicates) and the DISCONNECT itself (the broker publishes the will).
    What is read here is only messages never acknowledged: the broker delivers them again to the session.
    Used by the agent's Publisher and the consumer (tools/consumer/ingest.py)."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_WR)  # FIN after the DISCONNECT (a TLS socket drops its TLS layer here)
    except OSError:
        return
    end = time.monotonic() + timeout_s
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        try:
            if not select.select([sock], [], [], left)[0]:
                return
            if not sock.recv(65536):
                return  # the broker closed: nothing unread, the close sends no reset
        except (BlockingIOError, InterruptedError):
            continue
        except (OSError, ValueError):
            return
