"""Security suite against a real Mosquitto started with the shipped configuration (deploy/mosquitto/
mosquitto.conf and deploy/mosquitto/acl, only its paths and port rewritten for a temp dir) and the
certificates deploy/make-certs.sh issues. Each test is an attack; docs/security.md lists them."""
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from mosquitto_fixture import Broker, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
OPENSSL = shutil.which("openssl")
BOXES = ["f1/box-a", "f1/box-b", "f2/box-a", "f1/box-r"]
SERVICES = ("ingest", "ops")
SETTLE_S = 0.6  # a denied publish is dropped silently: wait this long before saying "nothing came"


def make_certs(out, *args):
    return subprocess.run(["sh", os.path.join(DEPLOY, "make-certs.sh"), str(out)] + list(args),
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if OPENSSL is None:
        pytest.fail("openssl is not installed: `make setup` installs it (apt-get install openssl)")
    out = tmp_path_factory.mktemp("pki")
    for args in (["127.0.0.1"] + BOXES, ["127.0.0.1", "--service", "ingest", "ops"],
                 ["--revoke", "f1/box-r"]):
        p = make_certs(out, *args)
        assert p.returncode == 0, p.stderr
    return out


def deploy_conf(pki, port, workdir, services_port):
    """The shipped broker configuration with only its paths and port pointed at the test's files.
    Every rewrite must hit exactly once, so a changed deploy file fails here instead of being tested
    half-way."""
    with open(os.path.join(DEPLOY, "mosquitto", "mosquitto.conf")) as f:
        conf = f.read()
    rewrites = [  # (pattern, replacement, lines it must hit: the TLS lines once per listener)
        (r"^listener 8883$", "listener %d 127.0.0.1" % port, 1),
        (r"^listener 8884 127\.0\.0\.1$", "listener %d 127.0.0.1" % services_port, 1),
        (r"^persistence_location /var/lib/mosquitto/$", "persistence_location %s/" % workdir, 1),
        (r"^log_dest syslog$", "log_dest stderr", 1),
        (r"^acl_file /etc/mosquitto/paydbox\.acl$", "acl_file %s" % os.path.join(DEPLOY, "mosquitto", "acl"),
         1),
        (r"^cafile /etc/mosquitto/pki/ca\.crt$", "cafile %s" % (pki / "ca.crt"), 2),
        (r"^certfile /etc/mosquitto/pki/server\.crt$", "certfile %s" % (pki / "server.crt"), 2),
        (r"^keyfile /etc/mosquitto/pki/server\.key$", "keyfile %s" % (pki / "server.key"), 2),
        (r"^crlfile /etc/mosquitto/pki/crl\.pem$", "crlfile %s" % (pki / "crl.pem"), 2),
    ]
    for pat, rep, want in rewrites:
        conf, n = re.subn(pat, rep, conf, flags=re.M)
        assert n == want, "deploy/mosquitto/mosquitto.conf: expected %d line(s) matching %r" % (want, pat)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        conf += "\nuser root\n"  # do not drop to `mosquitto`: it could not read the test's temp files
    return conf


@pytest.fixture(scope="module")
def broker(pki, tmp_path_factory):
    work = tmp_path_factory.mktemp("broker")
    b = Broker(work, port=free_port(), anonymous=False, listener=False)
    b.services_port = free_port()  # the deploy's internal listener for ingest / ops
    with open(b.conf, "w") as f:
        f.write(deploy_conf(pki, b.port, work, b.services_port))
    b.start()
    yield b
    b.stop()


class Client:
    """A TLS MQTT 5 client holding one identity's certificate; records what it receives."""

    def __init__(self, broker, pki, ident=None, client_id=None, cert=None, key=None, box_listener=False):
        self.got = []
        self.denied_subs = []
        self.connected = threading.Event()
        self.rc = None
        self._sub_done = threading.Event()
        stem = ident.replace("/", ".") if ident else None
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or ("t-" + (stem or "anon")), protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if cert or stem:
            ctx.load_cert_chain(str(cert or pki / (stem + ".crt")), str(key or pki / (stem + ".key")))
        self.c.tls_set_context(ctx)
        self.c.on_message = lambda cl, u, m: self.got.append((m.topic, m.payload))
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        # services on the deploy's internal listener; boxes (and tests of the public one) on the box listener
        port = broker.services_port if ident in SERVICES and not box_listener else broker.port
        self.c.connect(broker.host, port)
        self.c.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props):
        self.rc = rc
        if not rc.is_failure:
            self.connected.set()

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        self.denied_subs.extend(rc for rc in rcs if rc.is_failure)
        self._sub_done.set()

    def wait_connected(self):
        assert self.connected.wait(5), "not connected: %s" % self.rc
        return self

    def subscribe(self, *topics):
        self._sub_done.clear()
        self.c.subscribe([(t, 1) for t in topics])
        assert self._sub_done.wait(5)

    def publish(self, topic, payload):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


INGEST_FILTERS = ("paydbox/+/+/records", "paydbox/+/+/events", "paydbox/+/+/status", "paydbox/+/+/cmd/result")


def test_box_publishes_only_under_its_own_fleet_and_device(broker, pki):
    ing = Client(broker, pki, "ingest").wait_connected()
    ing.subscribe(*INGEST_FILTERS)
    assert ing.denied_subs == []
    a = Client(broker, pki, "f1/box-a").wait_connected()
    for topic in ("paydbox/f1/box-b/records",      # another box of the same fleet
                  "paydbox/f2/box-a/records",      # the same device name in another fleet
                  "paydbox/f2/box-a/events",
                  "paydbox/f1/box-b/status",
                  "paydbox/f1/box-b/cmd/result",
                  "paydbox/f1/box-a/extra/records"):  # deeper levels are not the box's topics either
        a.publish(topic, b"forged")
    for leaf in ("records", "events", "status", "cmd/result"):
        a.publish("paydbox/f1/box-a/" + leaf, b"mine")
    assert wait_for(lambda: len([1 for t, p in ing.got if p == b"mine"]) == 4), ing.got
    time.sleep(SETTLE_S)
    assert [t for t, p in ing.got if p == b"forged"] == []
    assert sorted(t for t, p in ing.got) == sorted("paydbox/f1/box-a/" + x
                                                   for x in ("records", "events", "status", "cmd/result"))
    a.close()
    ing.close()


def test_forged_header_arrives_only_under_the_senders_topic(broker, pki):
    """A block whose header names another device: the broker cannot read headers, but the topic it
    delivers on is the sender's authenticated identity, which is what the consumer files it under."""
    from firmware import codec, decoder

    enc = codec.BlockEncoder("box-b", 1, 512)  # header says box-b
    enc.add({"type": "odometer", "seq": 1, "t_ms": 0, "utc_s": -1, "total_m": 1})
    blk = enc.finish()
    assert decoder.decode_block(blk)[0]["device"] == "box-b"
    ing = Client(broker, pki, "ingest").wait_connected()
    ing.subscribe(*INGEST_FILTERS)
    a = Client(broker, pki, "f1/box-a").wait_connected()
    a.publish("paydbox/f1/box-b/records", blk)  # refused: not its topic
    a.publish("paydbox/f1/box-a/records", blk)  # delivered, as box-a's
    assert wait_for(lambda: len(ing.got) >= 1)
    time.sleep(SETTLE_S)
    assert ing.got == [("paydbox/f1/box-a/records", blk)]
    a.close()
    ing.close()


def test_box_reads_only_its_own_commands_and_acks(broker, pki):
    a = Client(broker, pki, "f1/box-a").wait_connected()
    b = Client(broker, pki, "f1/box-b").wait_connected()
    other = Client(broker, pki, "f2/box-a").wait_connected()
    a.subscribe("paydbox/f1/box-a/cmd", "paydbox/f1/box-a/ack", "paydbox/f1/box-a/resend")
    assert a.denied_subs == []
    # Mosquitto 2.0 grants any subscription and applies the read ACL to every message it would
    # deliver: what counts is that nothing of box-a's arrives
    b.subscribe("paydbox/f1/box-a/cmd", "paydbox/f1/box-a/ack", "paydbox/f1/box-a/resend", "paydbox/+/+/cmd",
                "paydbox/#")
    b.subscribe("paydbox/f1/box-b/cmd")
    other.subscribe("paydbox/f2/box-a/cmd")
    ing = Client(broker, pki, "ingest").wait_connected()
    ops = Client(broker, pki, "ops").wait_connected()
    ing.publish("paydbox/f1/box-a/ack", b"ack-a")
    ing.publish("paydbox/f1/box-a/resend", b"repair-a")
    ing.publish("paydbox/f1/box-a/cmd", b"ingest-cmd")  # the consumer may not command a box
    ops.publish("paydbox/f1/box-a/cmd", b"ping-a")
    assert wait_for(lambda: len(a.got) == 3), a.got
    time.sleep(SETTLE_S)
    assert sorted(p for t, p in a.got) == [b"ack-a", b"ping-a", b"repair-a"], a.got
    assert b.got == [] and other.got == [], (b.got, other.got)
    for c in (a, b, other, ing, ops):
        c.close()


def test_box_cannot_write_acks_or_commands(broker, pki):
    """A box forging the consumer's acks or resend requests (its own or another's: the box would drop
    records no one stored) or sending commands to another box."""
    b = Client(broker, pki, "f1/box-b").wait_connected()
    b.subscribe("paydbox/f1/box-b/ack", "paydbox/f1/box-b/cmd", "paydbox/f1/box-b/resend")
    a = Client(broker, pki, "f1/box-a").wait_connected()
    a.subscribe("paydbox/f1/box-a/ack", "paydbox/f1/box-a/resend")
    ops_watch = Client(broker, pki, "ops").wait_connected()
    ops_watch.subscribe("paydbox/+/+/cmd/result", "paydbox/+/+/status")
    a.publish("paydbox/f1/box-b/ack", b"forged")
    a.publish("paydbox/f1/box-b/resend", b"forged")
    a.publish("paydbox/f1/box-b/cmd", b"forged")
    a.publish("paydbox/f1/box-a/ack", b"forged")
    a.publish("paydbox/f1/box-a/resend", b"forged")
    ing = Client(broker, pki, "ingest").wait_connected()
    ing.publish("paydbox/f1/box-b/ack", b"real")
    assert wait_for(lambda: b.got == [("paydbox/f1/box-b/ack", b"real")]), b.got
    time.sleep(SETTLE_S)
    assert b.got == [("paydbox/f1/box-b/ack", b"real")] and a.got == [], (b.got, a.got)
    for c in (a, b, ops_watch, ing):
        c.close()


def test_services_have_only_their_rights(broker, pki):
    """ops reads no records; ingest writes no records (it cannot plant data under a box either). Two ingest
    processes with the one `ingest` certificate and their own client ids (a share group) both stay connected
    on the services listener."""
    ops = Client(broker, pki, "ops").wait_connected()
    ops.subscribe("paydbox/+/+/records", "paydbox/+/+/events", "paydbox/+/+/ack")
    watch = Client(broker, pki, "ingest", client_id="t-ingest-watch").wait_connected()
    watch.subscribe("paydbox/+/+/records")
    ing = Client(broker, pki, "ingest").wait_connected()
    ing.publish("paydbox/f1/box-a/records", b"planted")
    ops.publish("paydbox/f1/box-a/records", b"planted")
    ing.publish("paydbox/f1/box-a/ack", b"ack")  # allowed for ingest, but ops may not read it
    a = Client(broker, pki, "f1/box-a").wait_connected()
    a.publish("paydbox/f1/box-a/records", b"real")
    assert wait_for(lambda: watch.got == [("paydbox/f1/box-a/records", b"real")]), watch.got
    time.sleep(SETTLE_S)
    assert watch.got == [("paydbox/f1/box-a/records", b"real")] and ops.got == [], (watch.got, ops.got)
    assert (watch.c.is_connected()
            and ing.c.is_connected()), "two ingest processes could not share the identity"
    a.close()
    for c in (ops, watch, ing):
        c.close()


class SessionClient:
    """A box's agent as the broker sees it: certificate, its own client id, a persistent MQTT 5 session
    subscribed to its commands; counts the times the broker dropped it."""

    def __init__(self, broker, pki, ident, client_id, topic=None):
        self.got, self.drops = [], 0
        self.connected = threading.Event()
        self.ready = threading.Event()
        stem = ident.replace("/", ".")
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / (stem + ".crt")), str(pki / (stem + ".key")))
        self.c.tls_set_context(ctx)
        self.topic = topic
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda cl, u, m: self.got.append(m.payload)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.c.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.c.loop_start()
        assert self.connected.wait(5), "not connected"
        if topic:
            self.c.subscribe(topic, qos=1)
            assert self.ready.wait(5)

    def _on_connect(self, client, userdata, flags, rc, props):
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, *a):
        if self.connected.is_set():
            self.drops += 1
        self.connected.clear()

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_a_box_cannot_take_over_another_boxs_session(broker, pki):
    """Session takeover: a client that connects with another box's client id would make the broker drop the
    real box (a denial of service) and take over its session (its queued commands). The broker binds the
    client id to the identity it authenticated (`use_username_as_clientid`): box-b, claiming box-a's id, gets
    a session of its own; box-a stays connected, keeps receiving its commands, and finds the ones sent while
    it was away in its session when it comes back."""
    cmd = "paydbox/f1/box-a/cmd"
    a = SessionClient(broker, pki, "f1/box-a", "paydbox-agent-box-a", topic=cmd)
    ops = Client(broker, pki, "ops").wait_connected()
    impostors = []
    for cid in ("paydbox-agent-box-a", "f1/box-a"):  # box-a's agent's id, then box-a's identity
        impostors.append(SessionClient(broker, pki, "f1/box-b", cid))
        time.sleep(SETTLE_S)
        assert (a.drops == 0
                and a.connected.is_set()), "the real box was dropped by a client claiming id %r" % cid
    # both impostors are box-b to the broker, whatever id they asked for: the second took the first's session
    assert impostors[0].drops >= 1
    ops.publish(cmd, b"ping-1")
    assert wait_for(lambda: a.got == [b"ping-1"]), a.got
    a.close()  # box-a away; its persistent session holds what comes for it
    ops.publish(cmd, b"ping-2")
    late = SessionClient(broker, pki, "f1/box-b", "paydbox-agent-box-a")  # box-b again, after box-a left
    time.sleep(SETTLE_S)
    assert late.got == [] and all(i.got == [] for i in impostors), "box-a's session went to box-b"
    back = SessionClient(broker, pki, "f1/box-a", "paydbox-agent-box-a")  # no new subscription: the session's
    assert wait_for(lambda: back.got == [b"ping-2"]), back.got
    for c in impostors + [late, back, ops]:
        c.close()


def _tls_handshake_refused(broker, pki, cert=None, key=None, port=None):
    """True if the broker refuses the TLS session (no MQTT CONNACK success) on `port` (the box listener)."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="t-refused",
                    protocol=mqtt.MQTTv5)
    c.tls_set_context(ctx)
    ok = threading.Event()
    done = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (ok.set() if not rc.is_failure else None, done.set())
    c.on_disconnect = lambda *a: done.set()
    try:
        c.connect(broker.host, port or broker.port)
    except (ssl.SSLError, OSError):
        return True
    c.loop_start()
    done.wait(3.0)
    got = ok.is_set()
    c.disconnect()
    c.loop_stop()
    return not got


@pytest.mark.parametrize("listener", ["boxes", "services"])
def test_no_certificate_and_foreign_ca_are_refused(broker, pki, tmp_path, listener):
    port = broker.port if listener == "boxes" else broker.services_port
    assert _tls_handshake_refused(broker, pki, port=port), "a client without a certificate got in"
    # a self-made CA issuing "f1/box-b" / "ingest": right name, wrong issuer
    other = tmp_path / "other"
    assert make_certs(other, "127.0.0.1", "f1/box-b").returncode == 0
    assert make_certs(other, "127.0.0.1", "--service", "ingest").returncode == 0
    assert _tls_handshake_refused(broker, pki, other / "f1.box-b.crt", other / "f1.box-b.key", port=port)
    assert _tls_handshake_refused(broker, pki, other / "ingest.crt", other / "ingest.key", port=port)
    # plain MQTT on the TLS port gets nothing either
    s = socket.create_connection((broker.host, port), timeout=2)
    s.sendall(bytes.fromhex("101000044d5154540402003c0004746573740000"))
    try:
        data = s.recv(16)
    except OSError:
        data = b""
    s.close()
    assert not data.startswith(b"\x20"), "CONNACK on a plain connection"
    # and the same path with a valid certificate is accepted (so the checks above can fail)
    assert not _tls_handshake_refused(broker, pki, pki / "f1.box-a.crt", pki / "f1.box-a.key", port=port)
    assert not _tls_handshake_refused(broker, pki, pki / "ingest.crt", pki / "ingest.key", port=port)


@pytest.mark.parametrize("listener", ["boxes", "services"])
def test_revoked_certificate_is_refused(broker, pki, listener):
    port = broker.port if listener == "boxes" else broker.services_port
    assert _tls_handshake_refused(broker, pki, pki / "f1.box-r.crt", pki / "f1.box-r.key", port=port), \
        "a revoked certificate (in crl.pem) got in"
    assert not _tls_handshake_refused(broker, pki, pki / "f1.box-b.crt", pki / "f1.box-b.key", port=port)


def test_make_certs_never_issues_a_service_identity_to_a_box(tmp_path):
    if OPENSSL is None:
        pytest.fail("openssl is not installed: `make setup` installs it")
    for bad in ("ingest", "ops", "box-0001", "f1/ingest/x", "/box", "f1/", "f1/b@d"):
        p = make_certs(tmp_path, "127.0.0.1", bad)
        assert p.returncode != 0 and "bad box identity" in p.stderr, (bad, p.stderr)
    p = make_certs(tmp_path, "127.0.0.1", "--service", "root")
    assert p.returncode != 0 and "unknown service" in p.stderr
    assert not (tmp_path / "ingest.crt").exists() and not (tmp_path / "ops.crt").exists()


def test_agent_refuses_a_box_whose_hello_names_another_device(tmp_path):
    """A box (or a swapped box) that says it is box-evil on the link of the agent for box-0001: its
    blocks are never acked (they stay on the box), no command reaches it, the status alarms."""
    import json

    from testbed.simbox import AgentProc, Collector, SimBox, write_agent_config

    b = Broker(tmp_path / "plain").start()
    cmds = []
    box = SimBox("box-evil", on_command=lambda d: cmds.append(d) or {"pong": 1}).start()
    col = Collector(b.host, b.port, "paydbox/f1/box-0001/#")
    cfg = write_agent_config(str(tmp_path / "agent.toml"), "f1", "box-0001", box.path, str(tmp_path / "q.db"),
                             b.host, b.port)
    agent = AgentProc(cfg, str(tmp_path / "agent.log")).start()
    try:
        box.produce(5)
        ops = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="t-ops",
                          protocol=mqtt.MQTTv5)
        ops.connect(b.host, b.port)
        ops.loop_start()
        assert wait_for(lambda: any("device_mismatch" in s.get("alarms", ()) for s in col.status),
                        15), agent.log()[-2000:]
        ops.publish("paydbox/f1/box-0001/cmd", json.dumps({"id": "c1", "cmd": "ping"}),
                    qos=1).wait_for_publish(5)
        time.sleep(3.0)
        assert box.store.pending() == 5, "the agent acked a box that is not its own"
        assert col.count() == 0 and cmds == [] and not [r for r in col.results if r.get("ok")], (cmds,
                                                                                                 col.results)
        assert "box-evil" in agent.log()  # the refusal is logged, naming the box
        ops.disconnect()
        ops.loop_stop()
    finally:
        agent.terminate()
        col.close()
        box.stop()
        b.stop()


# ---- console attacks --------------------------------------------------------------------------
def _mp_exe():
    from tools.mpvm import micropython_binary

    return micropython_binary()


class StdioBox:
    """The console on the MicroPython VM's stdin/stdout through a pty that is the VM's controlling
    terminal (so Ctrl-C is a real interrupt, as the REPL stream of a board), with `-i`: a script
    that stops on KeyboardInterrupt drops into the REPL. On the unix port kbd_intr(-1) makes Ctrl-C
    the default SIGINT (the VM exits) where a board passes the byte on: either way, no REPL."""

    def __init__(self, boxdir):
        import fcntl
        import pty
        import termios

        self.master, slave = pty.openpty()
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # lflag: no tty echo (ICANON and ISIG stay: Ctrl-C -> SIGINT)
        termios.tcsetattr(slave, termios.TCSANOW, attrs)

        def ctty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = dict(os.environ, MICROPYPATH=ROOT)
        self.proc = subprocess.Popen([_mp_exe(), "-i",
                                      os.path.join(ROOT, "tests", "mp", "stdio_console_box.py"),
                                      str(boxdir)], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                                     env=env, preexec_fn=ctty)
        os.close(slave)
        self.out = b""
        assert self.read_until(b"READY", 10), self.out

    def read_until(self, token, timeout=3.0):
        import select

        end = time.monotonic() + timeout
        while token not in self.out and time.monotonic() < end:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    d = os.read(self.master, 4096)
                except OSError:  # the VM is gone
                    return token in self.out
                if not d:
                    break
                self.out += d
        return token in self.out

    def send(self, b):
        os.write(self.master, b)

    def cmd(self, line, timeout=5.0):
        import json

        mark = len(self.out)
        self.send(b"!" + line.encode() + b"\n")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read_until(b"}\n", 0.1)
            for ln in self.out[mark:].splitlines():
                if ln.startswith(b"{") and ln.endswith(b"}"):
                    return json.loads(ln)
        raise AssertionError("no console reply to %r: %r" % (line, self.out[mark:]))

    def escaped(self):
        """Ctrl-C, then a line of Python: True if a REPL ran it."""
        self.send(b"\x03")
        time.sleep(0.5)
        try:
            self.send(b"\r\nprint('ESC' + 'APED')\r\n")
        except OSError:
            return False
        return self.read_until(b"ESCAPED", 2.0)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def _box_dir(tmp_path, pin=None):
    from firmware.config import Config

    d = tmp_path / "box"
    d.mkdir(parents=True)
    c = Config(str(d / "config.json"))
    if pin:
        c.set("installer_pin", pin)
    c.save()
    return d


def test_console_ctrl_c_reaches_the_repl_only_without_a_pin(tmp_path):
    # the attack works on a box with no PIN (factory state): proof that the check below can fail
    b = StdioBox(_box_dir(tmp_path / "open"))
    try:
        assert b.cmd("status")["pin"] == "unset"
        assert b.escaped(), "an unprovisioned box should still give the REPL (bench, first flash)"
    finally:
        b.close()
    b = StdioBox(_box_dir(tmp_path / "locked", pin="482913"))
    try:
        assert b.cmd("status")["pin"] == "set"
        assert not b.escaped(), "Ctrl-C on a provisioned box's console reached a REPL: %r" % b.out[-300:]
    finally:
        b.close()
    # and the board entry point wires the same hook through the runner (tests/test_board_main.py runs it)
    src = open(os.path.join(ROOT, "firmware", "main.py")).read()
    runner = open(os.path.join(ROOT, "firmware", "runner.py")).read()
    assert "kbd_intr=micropython.kbd_intr" in src and 'hooks["kbd_intr"] = board.kbd_intr' in runner
    assert 'lock_path=_join(board.fs_root, "pinlock.json")' in runner


def test_console_maintenance_unlock_needs_the_pin(tmp_path):
    b = StdioBox(_box_dir(tmp_path, pin="482913"))
    try:
        assert "login" in b.cmd("maintenance")["error"]
        assert not b.cmd("login 000000")["ok"]
        assert b.cmd("login 482913")["ok"]
        assert b.cmd("maintenance")["maintenance"] == 1
        assert b.escaped(), "maintenance unlock should allow the REPL escape"
    finally:
        b.close()


def test_console_lockout_survives_a_power_cycle(tmp_path):
    d = _box_dir(tmp_path, pin="482913")
    b = StdioBox(d)
    try:
        for pin in ("111111", "222222", "333333"):
            assert not b.cmd("login " + pin)["ok"]
        assert "locked" in b.cmd("login 482913")["error"]
    finally:
        b.close()  # kill -9: power cut
    b = StdioBox(d)
    try:
        r = b.cmd("login 482913")
        assert not r["ok"] and "locked" in r["error"], "power cycle gave a free try: %r" % r
    finally:
        b.close()


def test_flash_on_a_provisioned_box_needs_the_pin(tmp_path):
    """paydbox flash against a running box's console: with a PIN set it refuses without the PIN and
    with a wrong one, and only a logged-in maintenance unlock lets it on to the raw REPL. (In the
    virtual box the console is not the REPL stream, so the last step ends at flash's own "not
    MicroPython" check, after the box has granted maintenance.)"""
    from test_virtual_box import make_trace
    from tools.installer.config_cli import ConsoleClient, maintenance_unlock
    from tools.installer.flash import FlashError, flash
    from tools.installer.virtual_box import VirtualBox

    trace = make_trace(tmp_path / "drive.jsonl", 300)
    vb = VirtualBox(trace, tmp_path / "box", speed=20)
    port = vb.start()["console"]
    try:
        def must_not_ask():
            raise AssertionError("asked for a PIN on an unprovisioned box")

        assert maintenance_unlock(port, pin=must_not_ask) == "unprovisioned"
        with ConsoleClient(port) as c:
            c.login("482913")  # first provisioning
        with pytest.raises(FlashError, match="needs the PIN"):
            flash(port, board="unix", progress=False, pin=None)
        with pytest.raises(FlashError, match="wrong PIN"):
            flash(port, board="unix", progress=False, pin="000000")
        with ConsoleClient(port) as c:
            assert c.cmd("status")["maintenance"] == 0
        with pytest.raises(FlashError, match="not MicroPython"):
            flash(port, board="unix", progress=False, pin=lambda: "482913")
        with ConsoleClient(port) as c:
            assert c.cmd("status")["maintenance"] == 1
    finally:
        vb.stop()
