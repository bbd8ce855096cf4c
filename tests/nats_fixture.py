"""A real NATS server in its MQTT mode for tests: a broker that speaks MQTT 3.1.1 only (NATS 2.9
answers an MQTT 5 CONNECT with "unsupported protocol version"). Debian's nats-server package, started
unprivileged on free ports with JetStream (which NATS' MQTT needs for QoS 1 and retained messages)
in the test's temporary directory."""
import os
import shutil
import socket
import subprocess
import time

NATS = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class NatsMqtt:
    def __init__(self, workdir):
        assert NATS, "nats-server is missing: `make setup` installs Debian's nats-server package"
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.conf = os.path.join(self.workdir, "nats.conf")
        self.log = os.path.join(self.workdir, "nats.log")
        with open(self.conf, "w") as f:
            f.write('server_name: paydbox_test\nlisten: 127.0.0.1:%d\njetstream { store_dir: "%s" }\n'
                    "mqtt { listen: 127.0.0.1:%d }\n" % (_free_port(), os.path.join(self.workdir, "js"), self.port))
        self.proc = None

    def start(self, timeout=15):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([NATS, "-c", self.conf], stdout=logf, stderr=logf)
        logf.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("nats-server exited: %s" % open(self.log).read()[-2000:])
            with open(self.log) as f:
                if "Listening for MQTT clients" in f.read():
                    try:
                        socket.create_connection((self.host, self.port), 0.5).close()
                        return self
                    except OSError:
                        pass
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start: %s" % open(self.log).read()[-2000:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
