"""Real Mosquitto broker for tests (never a mock).

Usage in a test file under tests/ (pytest puts tests/ on sys.path because tests/ has no __init__.py):

    from mosquitto_fixture import mosquitto, Broker   # noqa: F401  (the fixture must be imported by name)

    def test_x(mosquitto):
        mosquitto.host, mosquitto.port     # anonymous plain listener on 127.0.0.1:<free port>
        mosquitto.stop(); mosquitto.start()  # restart on the same port; persistent sessions survive

For auth/ACL/TLS tests build one yourself: `Broker(tmp_path, conf_extra="...", anonymous=False)`;
`conf_extra` is appended to the generated config (listener line is added for you unless
`listener=False`). A missing mosquitto binary fails the test (`make setup` installs it), never skips.
"""
import os
import shutil
import socket
import subprocess
import time

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Broker:
    """conf_text: a whole configuration (format it with {port} and {workdir}) instead of the generated one."""

    def __init__(self, workdir, port=None, conf_extra="", anonymous=True, listener=True, conf_text=None):
        if MOSQUITTO is None:
            pytest.fail("mosquitto is not installed: `make setup` installs Debian's mosquitto")
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.conf = os.path.join(self.workdir, "mosquitto-%d.conf" % self.port)
        self.log = os.path.join(self.workdir, "mosquitto-%d.log" % self.port)
        # persistence on, so persistent-session subscribers keep their queued QoS 1 messages across stop/start
        lines = ["persistence true", "persistence_location %s/" % self.workdir, "autosave_interval 1",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # do not drop to `mosquitto`: it could not read the test's temp files
        if listener:
            lines.append("listener %d %s" % (self.port, self.host))
        lines.append("allow_anonymous %s" % ("true" if anonymous else "false"))
        text = "\n".join(lines) + "\n" + conf_extra + "\n"
        if conf_text is not None:
            text = conf_text.format(port=self.port, workdir=self.workdir)
        with open(self.conf, "w") as f:
            f.write(text)
        self.proc = None

    def start(self, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            return self
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", self.conf], stdout=logf, stderr=logf)
        logf.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited (%s): %s" % (self.proc.returncode, self.read_log()[-2000:]))
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on %d: %s" % (self.port, self.read_log()[-2000:]))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


@pytest.fixture
def mosquitto(tmp_path):
    b = Broker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()
