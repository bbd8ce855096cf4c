"""The composition root (firmware/runner.py): every installer setting takes effect on the box, the
console's calibrate works on the board wiring, and a firmware that cannot start makes the replay and
the virtual box fail with the MicroPython traceback (no stand-in box)."""
import json
import os
import shutil

import pytest

from firmware.config import Config
from firmware.replay_main import replay_board
from firmware.runner import Runner
from hw.replay import ReplaySession
from tools.trace.replay import ReplayError, run_raw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")


def ubx_frames(data):
    """Independent UBX decoder (u-blox M8 protocol spec 32.2: sync B5 62, class, id, u16 LE length,
    payload, 8-bit Fletcher checksum over class..payload) -> [(class, id, payload)]."""
    out = []
    i = 0
    while True:
        i = data.find(b"\xb5\x62", i)
        if i < 0 or i + 6 > len(data):
            return out
        cls, mid, ln = data[i + 2], data[i + 3], data[i + 4] | data[i + 5] << 8
        body = data[i + 2 : i + 6 + ln]
        a = b = 0
        for x in body:
            a = (a + x) & 0xFF
            b = (b + a) & 0xFF
        assert data[i + 6 + ln : i + 8 + ln] == bytes([a, b]), "bad UBX checksum"
        out.append((cls, mid, bytes(data[i + 6 : i + 6 + ln])))
        i += 8 + ln


class PipeUart:
    """The far end of a console line: bytes the test types, bytes the box answers."""

    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()
        self.baud = None

    def init(self, baudrate=None, **kw):
        self.baud = baudrate

    def any(self):
        return len(self.rx)

    def read(self, n=-1):
        n = len(self.rx) if n < 0 else min(n, len(self.rx))
        d = bytes(self.rx[:n])
        del self.rx[:n]
        return d

    def readinto(self, buf, n=-1):
        d = self.read(len(buf) if n < 0 else n)
        buf[: len(d)] = d
        return len(d) or None

    def write(self, b):
        self.tx.extend(b)
        return len(b)


def booted(tmp_path, values=None, console=None, link=None, steps=0):
    os.makedirs(tmp_path, exist_ok=True)
    sess = ReplaySession(TRACE)
    board = replay_board(sess, str(tmp_path), link_uart=link, console=console)
    cfg = Config(None)
    for k, v in (values or {}).items():
        cfg.set(k, str(v), save=False)
    r = Runner(board, cfg)
    r.power_on()
    t = 0
    for _ in range(steps):
        t += 100
        sess.advance(t)
        r.step()
    return r, sess


@pytest.mark.parametrize("rate_hz", [1, 5, 10])
def test_gnss_rate_setting_drives_the_receiver_setup(tmp_path, rate_hz):
    _, sess = booted(tmp_path, {"gnss_rate_hz": rate_hz})
    frames = ubx_frames(bytes(sess.gnss_uart.tx))
    rate = [p for c, m, p in frames if (c, m) == (0x06, 0x08)]  # UBX-CFG-RATE
    assert len(rate) == 1
    meas_ms, nav, timeref = int.from_bytes(rate[0][0:2], "little"), rate[0][2:4], rate[0][4:6]
    assert meas_ms == 1000 // rate_hz and nav == b"\x01\x00" and timeref == b"\x01\x00"
    nav5 = [p for c, m, p in frames if (c, m) == (0x06, 0x24)]  # UBX-CFG-NAV5: dynModel 4 automotive
    assert nav5 and nav5[0][2] == 4


def test_gnss_baud_setting_reconfigures_the_uart(tmp_path):
    """The trace was sent at 9600 baud: a box set to 38400 reads noise, no fix; at 9600 it navigates."""
    wrong, _ = booted(tmp_path / "a", {"gnss_baud": 38400}, steps=600)
    right, _ = booted(tmp_path / "b", {"gnss_baud": 9600}, steps=600)
    assert wrong.board.gnss_uart.rx_baud == 38400
    assert wrong.box.parser.counters["fixes"] == 0 and wrong.box.parser.counters["junk_bytes"] > 1000
    assert right.box.parser.counters["fixes"] >= 55


@pytest.mark.parametrize("kb", [64, 128, 8192])
def test_link_baud_and_store_size_take_effect(tmp_path, kb):
    link = PipeUart()
    r, _ = booted(tmp_path, {"link_baud": 460800, "store_max_kb": kb}, link=link)
    assert link.baud == 460800
    assert r.box.store.max_bytes == kb * 1024
    assert r.box.store.segment_bytes * 8 <= kb * 1024


def test_defaults_come_from_the_schema(tmp_path):
    from firmware import schema

    r, _ = booted(tmp_path)
    d = {k: schema.SCHEMA[k][1] for k in schema.SCHEMA}
    b = r.box
    # each default where its subsystem took it (the Box keeps no full copy of the table)
    assert b.device == d["device_id"]
    assert (b.accel.odr_hz, b.accel.range_g) == (d["accel_rate_hz"], d["accel_range_g"])
    assert (b.trip.cfg["trip_end_s"], b.trip.cfg["overspeed_kmh"]) == (d["trip_end_s"], d["overspeed_kmh"])
    assert b.cfg["privacy"] == d["privacy"] and b.cfg["pos_tolerance_m"] == d["pos_tolerance_m"]
    assert r.box.store.max_bytes == schema.SCHEMA["store_max_kb"][1] * 1024


def test_console_calibrate_restarts_the_mounting_calibration(tmp_path):
    con = PipeUart()
    r, sess = booted(tmp_path, console=con, steps=3000)  # 300 s of the drive: calibrated by then
    assert r.box.motion.calib_state == "calibrated"
    # first provisioning sets the PIN (a new box has none), then calibrate needs the login
    con.rx.extend(b"!set installer_pin 4821\n!login 4821\n!calibrate\n")
    for _ in range(6):
        r.step()
    replies = [json.loads(ln) for ln in con.tx.decode().splitlines() if ln.startswith("{")]
    assert replies[-1]["ok"] is True, replies
    assert replies[-1]["calib"] != "calibrated" and r.box.motion.calib_state != "calibrated"


def broken_tree(tmp_path):
    """A copy of the firmware whose app module fails to import, as a bad edit would."""
    src = tmp_path / "src"
    for d in ("firmware", "hw"):
        shutil.copytree(os.path.join(ROOT, d), src / d, ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "firmware" / "app.py", "a") as f:
        f.write("\nimport firmware.no_such_module_13\n")
    return str(src)


def test_replay_fails_with_the_micropython_traceback(tmp_path):
    src = broken_tree(tmp_path)
    with pytest.raises(ReplayError) as ei:
        run_raw(TRACE, "micropython", src_root=src)
    msg = str(ei.value)
    assert msg.splitlines()[0].startswith("firmware failed under MicroPython: ImportError")
    # the box's file name of the module (tools/installer/flash.py source_name: where the box imports it)
    assert ("Traceback (most recent call last)" in msg and '"/rom/firmware/app.mpy", line' in msg
            and "no_such_module_13" in msg)


def test_virtual_box_fails_with_the_micropython_traceback(tmp_path):
    from test_virtual_box import make_trace
    from tools.installer.virtual_box import VirtualBox, VirtualBoxError

    src = broken_tree(tmp_path)
    trace = make_trace(tmp_path / "t.jsonl", 30)
    with VirtualBox(trace, tmp_path / "box", speed=20, source="tree", mp_path=src) as vb:
        with pytest.raises(VirtualBoxError) as ei:
            vb.start(timeout=30)
    msg = str(ei.value)
    assert "exited (status 1) before ready" in msg
    assert "Traceback (most recent call last)" in msg and "no_such_module_13" in msg


class CountingWatchdog:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def test_watchdog_fed_once_per_pass_and_never_by_a_failing_pass(tmp_path):
    r, sess = booted(tmp_path)
    r.board.watchdog = wdt = CountingWatchdog()
    for i in range(50):
        sess.advance(100 * (i + 1))
        r.step()
    assert wdt.feeds == 50

    def bug():
        raise KeyError("a firmware bug")

    r.box.step = bug
    with pytest.raises(KeyError):
        r.step()
    assert wdt.feeds == 50  # the hardware watchdog will reset the board


def _boot(root, cause, run_ms):
    sess = ReplaySession(TRACE)
    board = replay_board(sess, str(root))
    board.reset_cause = lambda: cause
    r = Runner(board, Config(None))
    box = r.power_on()
    t = 0
    while t < run_ms:
        t += 100
        sess.advance(t)
        r.step()
    return box, [x["reason"] for x in box.tampers]


def test_boot_counter_notices_a_reboot_loop(tmp_path):
    # three watchdog resets each within a minute of boot: the third boot reports a reboot loop
    box, _ = _boot(tmp_path, "power_on", 60000)
    assert box.quick_resets == 0
    box, tam = _boot(tmp_path, "watchdog", 60000)
    assert box.quick_resets == 1 and "reboot_loop" not in tam
    box, tam = _boot(tmp_path, "watchdog", 60000)
    assert box.quick_resets == 2 and "reboot_loop" not in tam
    box, tam = _boot(tmp_path, "watchdog", 310000)  # this one then runs past 5 minutes
    assert box.quick_resets == 3 and tam.count("reboot_loop") == 1 and box.status()["quick_resets"] == 3
    assert box.boot == 4
    # after a stable run, a watchdog reset starts the count again; power-ons never count
    box, tam = _boot(tmp_path, "watchdog", 1000)
    assert box.quick_resets == 0
    box, tam = _boot(tmp_path, "power_on", 1000)
    assert box.quick_resets == 0
