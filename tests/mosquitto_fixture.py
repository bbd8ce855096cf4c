"""Real Mosquitto broker for tests (never a mock).

Usage in a test file under tests/ (pytest puts tests/ on sys.path because tests/ has no __init__.py):

    from mosquitto_fixture import mosquitto, Broker   # noqa: F401  (the fixture must be imported by name)

    def test_x(mosquitto):
        mosquitto.host, mosquitto.port     # anonymous plain listener on 127.0.0.1:<free port>
        mosquitto.stop(); mosquitto.start()  # restart on the same port; persistent sessions survive

For auth/ACL/TLS tests build one yourself: `Broker(tmp_path, conf_extra="...", anonymous=False)`;
`conf_extra` is appended to the generated config (listener line is added for you unless
`listener=False`). Fails, naming the install step, when the mosquitto binary is absent (make setup installs
it).
"""
import os

import pytest

from tools.brokers import BrokerProc, exe_path, free_port  # noqa: F401  (free_port: imported from here by tests)

MOSQUITTO = exe_path("mosquitto")


class Broker(BrokerProc):
    """conf_text: a whole configuration (format it with {port} and {workdir}) instead of the generated one."""
    name = "mosquitto"

    def __init__(self, workdir, port=None, conf_extra="", anonymous=True, listener=True, conf_text=None):
        if MOSQUITTO is None:
            pytest.fail("mosquitto is not installed: run `make setup` (it installs Debian's mosquitto)",
                        pytrace=False)
        BrokerProc.__init__(self, workdir, port)
        self.log = os.path.join(self.workdir, "mosquitto-%d.log" % self.port)
        self.conf = os.path.join(self.workdir, "mosquitto-%d.conf" % self.port)
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

    def _cmd(self):
        return [MOSQUITTO, "-c", self.conf]

    def start(self, timeout=10.0):
        return BrokerProc.start(self, timeout)


@pytest.fixture
def mosquitto(tmp_path):
    b = Broker(tmp_path / "mosquitto").start()
    try:
        yield b
    finally:
        b.stop()
