"""Virtual box end to end: the firmware in the MicroPython VM behind ptys; reboot and power cuts
(kill -9 of the VM) during config writes."""
import json
import os
import random
import threading
import time

import pytest

from tools.installer.virtual_box import VirtualBox
from tools.sim.nmea_gen import sentence

# no skip when the VM is missing: `make setup` installs it, and a missing install step must fail


def _nmea(body):
    return sentence(body).decode()


def make_trace(path, seconds=60, accel=True):
    """A small drive north at 70 km/h: 1 Hz GGA+RMC, ignition on, a still accelerometer."""
    hdr = {"format": "paydbox-trace", "version": 1, "device": {"id": "vbox-test", "source": "simulate"},
           "start_utc": "2026-11-23T08:00:00Z", "duration_s": float(seconds),
           "gnss": {"baud": 9600, "rate_hz": 1}, "power": {"nominal_mv": 12600}}
    if accel:
        hdr["accel"] = {"chip": "lis3dh", "rate_hz": 100, "unit": "mg"}
    lines = [hdr, {"t": 0.0, "s": "power", "mv": 12600, "ign": 1}]
    for i in range(seconds):
        latm = i * 19.44 / 1852.0
        t = "%02d%02d%02d.00" % (8, i // 60, i % 60)
        gga = _nmea("GPGGA,%s,48%08.5f,N,01100.00000,E,1,08,0.9,500.0,M,47.0,M,," % (t, latm))
        rmc = _nmea("GPRMC,%s,A,48%08.5f,N,01100.00000,E,37.8,0.0,231126,,,A" % (t, latm))
        lines.append({"t": float(i), "s": "gnss", "d": gga + rmc})
        if accel:
            lines.append({"t": float(i), "s": "accel", "rate": 100, "mg": [[0, 0, 1000]] * 100})
    with open(path, "w") as f:
        for o in lines:
            f.write(json.dumps(o) + "\n")
    return str(path)


@pytest.fixture
def trace(tmp_path):
    return make_trace(tmp_path / "drive.jsonl", 600)


def test_virtual_box_ptys_console_and_link(tmp_path, trace):
    from tools.installer.config_cli import ConsoleClient

    with VirtualBox(trace, tmp_path / "box", speed=20, console_pty_link=str(tmp_path / "console")) as vb:
        info = vb.start()
        assert os.path.realpath(str(tmp_path / "console")) == info["console"]
        assert info["link"].startswith("/dev/pts/") and info["source"] == "tree"
        # the firmware runs from the ROMFS image of the manifest modules, not from the source files
        assert info["firmware_from"].startswith("/rom/firmware/"), info["firmware_from"]
        with ConsoleClient(info["console"]) as c:
            st = c.cmd("status")
            assert st["fw"] and st["device_id"] == "unprovisioned"
            t1 = st["t_ms"]
            time.sleep(0.3)
            assert c.cmd("status")["t_ms"] > t1  # the box clock runs (20x)
        # the link pty reaches the VM too (the firmware's link drains it)
        fd = os.open(info["link"], os.O_RDWR | os.O_NOCTTY)
        os.write(fd, b"\x00hello\x00")
        os.close(fd)


def test_reboot_keeps_ptys_and_config(tmp_path, trace):
    from tools.installer.config_cli import ConsoleClient

    with VirtualBox(trace, tmp_path / "box", speed=20) as vb:
        info = vb.start()
        pid0 = vb.pid
        with ConsoleClient(info["console"]) as c:
            c.set_many([("device_id", "reboot-1")], "0000")
            n = len(vb.events)
            c.login("0000")
            assert c.cmd("reboot")["ok"]
        vb.wait_event("ready", 20, after=n)
        assert vb.pid != pid0 and vb.restarts == 1
        with ConsoleClient(info["console"]) as c:
            st = c.cmd("status")
        assert st["device_id"] == "reboot-1" and st["config"] == "main"


def test_power_cut_during_config_writes(tmp_path, trace):
    """kill -9 the VM while the console keeps rewriting the config: after each power-on the config
    is valid (CRC-checked) and holds a value that was written, never the defaults."""
    from tools.installer.config_cli import ConfigCLIError, ConsoleClient

    rnd = random.Random(7)
    written = set()
    # PBKDF2 of the PIN (~0.25 s idle) takes seconds on a loaded 2-core CI machine: the console's
    # default 5 s answer timeout is too short for the logins (latency only: cmd() returns at the answer)
    with VirtualBox(trace, tmp_path / "box", speed=0) as vb:
        info = vb.start()
        with ConsoleClient(info["console"], timeout=60) as c:
            c.set_many([("device_id", "cut-init")], "0000")
            written.add("cut-init")
        for cut in range(6):
            cutting = threading.Event()
            busy = threading.Event()  # the box has answered `writes` rewrites of this cycle
            writes = 4 + rnd.randrange(3)
            failed = []

            def writer():
                i = 0
                try:
                    with ConsoleClient(info["console"], timeout=60) as c:
                        c.login("0000")
                        c.timeout = 2  # each set takes ~10-300 ms; after the cut, no answer ends the writer
                        while True:  # until the cut: no answer within 2 s
                            v = "cut-%d-%d" % (cut, i)
                            written.add(v)
                            c.cmd("set device_id %s" % v)
                            c.cmd("set crash_g %d.5" % (2 + i % 5))
                            i += 1
                            if i == writes:
                                busy.set()
                except ConfigCLIError as e:
                    if not cutting.is_set():
                        failed.append("writer failed after %d rewrites: %s" % (i, e))
                busy.set()  # the box died under us (expected after the cut) or the writer failed

            th = threading.Thread(target=writer)
            th.start()
            # the cut falls at a random moment of a box busy rewriting its config: after `writes`
            # answered rewrites (counted, not timed: a loaded machine does fewer per second)
            assert busy.wait(120) and not failed, failed
            time.sleep(rnd.random() * 0.3)
            cutting.set()
            vb.power_cut()
            assert vb.events[-1]["event"] == "exit", vb.events[-1]  # power_on() waits for the next boot
            th.join(10)
            assert not failed and not th.is_alive(), failed
            ready = vb.power_on()
            assert ready["config"] in ("main", "tmp", "backup"), ready
            with ConsoleClient(info["console"]) as c:
                got = c.cmd("get device_id")["value"]
            assert got in written, got
    assert len(written) > 20  # the cuts really hit a box busy rewriting its config


def test_cli_subprocess_prints_ptys_and_stops_cleanly(tmp_path, trace):
    """How the demo runs it: a subprocess that prints the pty paths, stopped with SIGTERM."""
    import signal
    import subprocess
    import sys

    link = tmp_path / "link"
    p = subprocess.Popen([sys.executable, "-m", "tools.cli", "virtual-box", "--trace", trace, "--dir",
                          str(tmp_path / "box"), "--speed", "20", "--link-pty-link", str(link)],
                         stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        info = json.loads(p.stdout.readline())
        assert os.path.realpath(str(link)) == info["link"]
        from tools.installer.config_cli import ConsoleClient

        with ConsoleClient(info["console"]) as c:
            assert c.cmd("status")["ok"]
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    time.sleep(0.2)
    assert (not os.path.exists("/proc/%d" % info["pid"])
            or "zombie" in open("/proc/%d/status" % info["pid"]).read())
    assert not os.path.lexists(str(link))


def test_exit_at_end_prints_summary(tmp_path):
    import subprocess
    import sys

    tr = make_trace(tmp_path / "short.jsonl", 30)
    out = subprocess.run([sys.executable, "-m", "tools.cli", "virtual-box", "--trace", tr, "--dir",
                          str(tmp_path / "box"),
                          "--speed", "0", "--exit-at-end"], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert json.loads(lines[0])["console"].startswith("/dev/pts/")
    assert isinstance(json.loads(lines[-1]), dict)
