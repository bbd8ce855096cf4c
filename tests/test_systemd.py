"""The agent's systemd integration: the unit in deploy/ passes `systemd-analyze verify`, and the agent
speaks the notify protocol the unit's Type=notify / WatchdogSec= rely on (READY=1, WATCHDOG=1 at half
the watchdog period, STOPPING=1 on SIGTERM) to a real AF_UNIX datagram socket, as systemd's is."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "deploy", "paydbox-agent.service")


def test_unit_passes_systemd_analyze_verify(tmp_path):
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: `make setup` installs Debian's systemd package"
    agent = os.path.join(os.path.dirname(sys.executable), "paydbox-agent")
    assert os.access(agent, os.X_OK), agent
    with open(UNIT) as f:
        text = f.read()
    assert "ExecStart=/opt/paydbox/.venv/bin/paydbox-agent " in text
    # the unit as installed (docs/installer.md) points at /opt/paydbox; verify it against this checkout
    unit = tmp_path / "paydbox-agent.service"
    unit.write_text(text.replace("/opt/paydbox/.venv/bin/paydbox-agent", agent))
    p = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and "paydbox-agent.service" not in out, out


def test_agent_ready_watchdog_stopping(tmp_path):
    sock_path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(0.2)
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[device]\nfleet = "f1"\nid = "box-0001"\n[serial]\nurl = "%s"\n[queue]\npath = "%s"\n'
                   '[mqtt]\nhost = "127.0.0.1"\nport = 1\n' % (tmp_path / "no-such-tty", tmp_path / "q.db"))
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="200000", PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "edge_agent.agent", "--config", str(cfg)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    got = []
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end and sum(m == "WATCHDOG=1" for m, _t in got) < 5:
            try:
                got.append((s.recv(4096).decode(), time.monotonic()))
            except socket.timeout:
                pass
        p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 10
        while time.monotonic() < end and not any(m.startswith("STOPPING=1") for m, _t in got):
            try:
                got.append((s.recv(4096).decode(), time.monotonic()))
            except socket.timeout:
                pass
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
        s.close()
    msgs = [m for m, _t in got]
    assert msgs[0].split("\n")[0] == "READY=1", msgs[:3]
    wd = [t for m, t in got if m == "WATCHDOG=1"]
    assert len(wd) >= 5, msgs
    gaps = [b - a for a, b in zip(wd, wd[1:])]
    # every half watchdog period (0.1 s) while the loop runs, never near the 0.2 s limit
    assert max(gaps) < 0.19 and min(gaps) > 0.05, gaps
    assert msgs[-1] == "STOPPING=1"


@pytest.mark.parametrize("bad", ["", "@"])
def test_sd_notify_without_a_socket_is_a_no_op(monkeypatch, bad):
    from edge_agent.agent import sd_notify

    if bad:
        monkeypatch.setenv("NOTIFY_SOCKET", bad + "paydbox-test-no-such-socket")
        assert sd_notify("READY=1") is False
    else:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert sd_notify("READY=1") is False
