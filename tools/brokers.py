"""Real MQTT brokers started for benchmarks and tests, unprivileged, on free ports, in a work
directory: Mosquitto (Debian's mosquitto) and the NATS server in its MQTT mode (Debian's nats-server,
a broker that speaks MQTT 3.1.1 only; NATS' MQTT needs JetStream, kept in the work directory)."""
import os
import shutil
import socket
import subprocess
import time


class BrokerError(RuntimeError):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def exe_path(name):
    """A Debian system tool by name (PATH, then /usr/sbin, /usr/bin), or None."""
    return (shutil.which(name)
            or next((p for p in ("/usr/sbin/" + name, "/usr/bin/" + name) if os.path.exists(p)), None))


class BrokerProc:
    """A broker process on 127.0.0.1:port (a free one unless given), its log in the work directory;
    start() returns once it listens (BrokerError with the log's tail if it exits or never listens),
    stop() then start() restarts it on the same port. A subclass gives `_cmd()`."""
    name = "broker"

    def __init__(self, workdir, port=None, log_name=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log = os.path.join(self.workdir, log_name or self.name + ".log")
        self.proc = None

    def _cmd(self):
        raise NotImplementedError

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15):
        if self.running():
            return self
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self._cmd(), stdout=logf, stderr=logf)
        logf.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BrokerError("%s exited: %s" % (self.name, self.tail()))
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise BrokerError("%s did not listen on %d: %s" % (self.name, self.port, self.tail()))

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self):
        return self.read_log()[-2000:]

    def stop(self):
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


class Mosquitto(BrokerProc):
    name = "mosquitto"

    def _cmd(self):
        exe = exe_path("mosquitto")
        if not exe:
            raise BrokerError("mosquitto is not installed (make setup installs Debian's mosquitto)")
        conf = os.path.join(self.workdir, "mosquitto.conf")
        lines = ["persistence false", "log_dest stderr", "log_type error",
                 "listener %d %s" % (self.port, self.host),
                 "allow_anonymous true", "max_queued_messages 0", "max_inflight_messages 0"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [exe, "-c", conf]


class NatsMqtt(BrokerProc):
    """NATS 2.9 answers an MQTT 5 CONNECT with "unsupported protocol version": a 3.1.1-only broker."""
    name = "nats-server"

    def __init__(self, workdir):
        BrokerProc.__init__(self, workdir)
        self.conf = os.path.join(self.workdir, "nats.conf")
        with open(self.conf, "w") as f:
            f.write('server_name: paydbox\nlisten: 127.0.0.1:%d\njetstream { store_dir: "%s" }\n'
                    "mqtt { listen: 127.0.0.1:%d }\n"
                    % (free_port(), os.path.join(self.workdir, "js"), self.port))

    def _cmd(self):
        exe = exe_path("nats-server")
        if not exe:
            raise BrokerError("nats-server is not installed (make setup installs Debian's nats-server)")
        return [exe, "-c", self.conf]
