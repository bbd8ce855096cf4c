# Config schema, power-cut-safe storage and the installer console (MicroPython and CPython).
import json
import os

from firmware import pin as _pin
from firmware.config import Config, ConfigError
from firmware.console import FREE_TRIES, Console
from firmware.schema import _encode, fmt_dec, parse_value
from mptest import assert_eq, assert_raises
from testbed.byteuart import ByteUart

# the console tests set and check many PINs: size the KDF for 10 ms here (the real budget and its
# timing on the VM are tests/mp/mp_pin.py and tools/bench/bench_pin.py)
_pin.CHECK_BUDGET_MS = 10


def _tmpdir():
    d = "/tmp/pdcfg_" + "".join("%02x" % b for b in os.urandom(4))
    os.mkdir(d)
    return d


def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass


class FakeUart(ByteUart):
    """The console's UART, with helpers to type a line and read the JSON it answered."""

    def feed(self, s):
        self.rx.extend(s.encode())

    def take_json(self):
        lines = [ln for ln in bytes(self.tx).decode().split("\n") if ln.strip()]
        self.tx = bytearray()
        return [json.loads(ln) for ln in lines]


def test_validation_messages_name_key_and_range():
    e = assert_raises(ConfigError, parse_value, "accel_rate_hz", "75")
    assert_eq(str(e), "accel_rate_hz: bad value '75', allowed 50|100|200|400")
    e = assert_raises(ConfigError, parse_value, "overspeed_kmh", "20")
    assert "30..250" in str(e)
    e = assert_raises(ConfigError, parse_value, "crash_g", "abc")
    assert "crash_g" in str(e) and "1.50..16.00" in str(e)
    e = assert_raises(ConfigError, parse_value, "nope", "1")
    assert "unknown key" in str(e)
    assert_raises(ConfigError, parse_value, "vin", "1HGCM82633A00435I")  # I not allowed
    assert_raises(ConfigError, parse_value, "vin", "1HGCM82633A00435")  # 16 chars
    assert_eq(parse_value("vin", "1hgcm82633a004352"), "1HGCM82633A004352")
    assert_eq(parse_value("plate", "ab-123 c"), "AB-123 C")
    assert_raises(ConfigError, parse_value, "plate", "AB_1")
    assert_raises(ConfigError, parse_value, "privacy", "maybe")
    assert_eq(parse_value("privacy", "rounded"), "rounded")
    assert_raises(ConfigError, parse_value, "installer_pin", "12a4")
    assert_raises(ConfigError, parse_value, "device_id", "")
    assert_eq(fmt_dec(3.456), "3.46")
    assert_eq(fmt_dec(10), "10.00")


def test_set_save_load_and_audit():
    d = _tmpdir()
    p = d + "/config.json"
    audit = []
    c = Config.load(p, on_change=lambda k, o, n: audit.append((k, o, n)))
    assert_eq(c.source, "defaults")
    assert_eq(c.set("device_id", "box-0042"), ("unprovisioned", "box-0042"))
    assert_eq(c.set("crash_g", "3.1"), ("3.00", "3.10"))
    c.set("crash_g", "3.10")  # unchanged: no audit record
    assert_eq(audit, [("device_id", "unprovisioned", "box-0042"), ("crash_g", "3.00", "3.10")])
    assert_eq(c.scaled("crash_g", 1000), 3100)
    c2 = Config.load(p)
    assert_eq(c2.source, "main")
    assert_eq(c2.get("device_id"), "box-0042")
    assert_eq(c2.get_str("crash_g"), "3.10")
    # a bad value leaves the stored config alone
    assert_raises(ConfigError, c2.set, "gnss_rate_hz", "2")
    assert_eq(Config.load(p).get("gnss_rate_hz"), 1)


def test_power_cut_states_give_old_or_new():
    d = _tmpdir()
    p = d + "/config.json"
    c = Config.load(p)
    c.set("device_id", "old-id")
    old_bytes = open(p, "rb").read()
    c.set("device_id", "new-id")
    new_bytes = open(p, "rb").read()
    # 1. cut while writing the temp file: main is the old config, tmp is partial
    for f in (p, p + ".tmp", p + ".bak"):
        _rm(f)
    open(p, "wb").write(old_bytes)
    open(p + ".tmp", "wb").write(new_bytes[: len(new_bytes) // 2])
    assert_eq(Config.load(p).get("device_id"), "old-id")
    # 2. cut between the two renames: main missing, tmp complete, bak old
    _rm(p)
    open(p + ".tmp", "wb").write(new_bytes)
    open(p + ".bak", "wb").write(old_bytes)
    c3 = Config.load(p)
    assert_eq((c3.get("device_id"), c3.source), ("new-id", "tmp"))
    # 3. main corrupted (bad CRC): the backup is used
    _rm(p + ".tmp")
    bad = bytearray(new_bytes)
    bad[5] ^= 1
    open(p, "wb").write(bad)
    c4 = Config.load(p)
    assert_eq((c4.get("device_id"), c4.source), ("old-id", "backup"))
    # 4. truncated main and no backup: defaults, never a crash
    _rm(p + ".bak")
    open(p, "wb").write(new_bytes[:10])
    assert_eq(Config.load(p).source, "defaults")
    # every cut point of a write: load gives old or new
    for cut in range(0, len(new_bytes) + 1, 7):
        _rm(p + ".bak")
        open(p, "wb").write(old_bytes)
        open(p + ".tmp", "wb").write(new_bytes[:cut])
        got = Config.load(p).get("device_id")
        assert got in ("old-id", "new-id"), got


def test_unknown_and_invalid_stored_keys_dropped():
    d = _tmpdir()
    p = d + "/config.json"
    open(p, "wb").write(_encode({"device_id": "x1", "accel_rate_hz": 75, "bogus": 1, "crash_g": 4}))
    c = Config.load(p)
    assert_eq(c.get("device_id"), "x1")
    assert_eq(c.get("accel_rate_hz"), 100)
    assert_eq(c.get_str("crash_g"), "4.00")
    assert_eq(sorted(c.dropped), ["accel_rate_hz", "bogus"])


def test_pin_hashed_and_checked():
    c = Config()
    assert not c.pin_set()
    assert not c.check_pin("0000"), "a new box has no PIN, not a default one"
    assert_eq(c.get_str("installer_pin"), "unset")
    c.set("installer_pin", "482913")
    h = c.values()["installer_pin"]
    assert "482913" not in h
    assert h.startswith("pbkdf2-sha256$")
    assert c.check_pin("482913")
    assert not c.check_pin("0000")
    assert_eq(c.get_str("installer_pin"), "set")
    assert "installer_pin" not in c.export()
    # a stored value from a file keeps working; junk is dropped (no PIN), never accepted
    assert Config(values={"installer_pin": h}).check_pin("482913")
    assert not Config(values={"installer_pin": "plain-482913"}).check_pin("482913")


def test_legacy_sha256_pin_still_checks():
    from firmware.schema import _legacy_pin_hash

    c = Config(values={"installer_pin": _legacy_pin_hash("4711", "a1b2c3d4")})
    assert c.pin_set() and c.pin_is_legacy()
    assert c.check_pin("4711") and not c.check_pin("4712")
    con = Console(FakeUart(), c, now_ms=lambda: 0)
    assert_eq(con.execute("login 4711")["ok"], True)
    assert not c.pin_is_legacy(), "re-hashed with PBKDF2 at the good login"
    assert c.check_pin("4711")


def test_console_machine_mode_set_get():
    now = [0]
    u = FakeUart()
    cfg = Config()
    cfg.set("installer_pin", "4821")
    con = Console(u, cfg, status_provider=lambda: {"sats": 7, "gnss_fix": 1, "accel_ok": 1, "gnss_bytes": 10},
                  now_ms=lambda: now[0], version="1.2.3")
    u.feed("!status\n!set vin WVWZZZ1JZXW000001\n!login 4821\r\n!set vin wvwzzz1jzxw000001\n")
    assert_eq(con.poll(), 4)
    r = u.take_json()
    assert_eq(r[0]["fw"], "1.2.3")
    assert_eq(r[0]["sats"], 7)
    assert_eq(r[1]["ok"], False)
    assert "login" in r[1]["error"]
    assert_eq(r[2]["ok"], True)
    assert_eq((r[3]["ok"], r[3]["old"], r[3]["new"]), (True, "", "WVWZZZ1JZXW000001"))
    u.feed("!set accel_rate_hz 75\n!get accel_rate_hz\n!get\n!frobnicate\n!selftest\n")
    con.poll()
    r = u.take_json()
    assert_eq(r[0], {"ok": False, "error": "accel_rate_hz: bad value '75', allowed 50|100|200|400"})
    assert_eq(r[1]["value"], "100")
    assert_eq(r[2]["values"]["vin"], "WVWZZZ1JZXW000001")
    assert "unknown command" in r[3]["error"]
    assert_eq(r[4]["pass"], 0)  # config still at defaults (never saved: no path)
    assert r[4]["checks"]["gnss"].startswith("ok")


def test_console_human_mode_and_partial_lines():
    u = FakeUart()
    con = Console(u, Config(), now_ms=lambda: 0)
    u.feed("get dev")
    assert_eq(con.poll(), 0)
    u.feed("ice_id\r")
    assert_eq(con.poll(), 1)
    out = bytes(u.tx).decode()
    assert "value: unprovisioned" in out and out.endswith("> ")
    u.tx = bytearray()
    u.feed("x" * 300 + "\n!get plate\n")
    assert_eq(con.poll(), 2)
    out = bytes(u.tx).decode()
    assert "line too long" in out
    assert '"value": ""' in out


def test_console_pin_rate_limit():
    now = [1000]
    u = FakeUart()
    cfg = Config()
    cfg.set("installer_pin", "1234")
    con = Console(u, cfg, now_ms=lambda: now[0])
    for i in range(FREE_TRIES):
        assert_eq(con.execute("login 9999")["ok"], False)
    r = con.execute("login 1234")  # right PIN, but locked
    assert "locked" in r["error"]
    now[0] += 31000
    assert_eq(con.execute("login 1234")["ok"], True)
    assert con.logged_in()
    now[0] += 700000  # session expired
    assert "login" in con.execute("set plate AB1")["error"]


def test_console_reboot_after_reply_and_calibrate_hook():
    calls = []
    u = FakeUart()
    cfg = Config()
    cfg.set("installer_pin", "4821")
    con = Console(u, cfg, now_ms=lambda: 0,
                  hooks={"reboot": lambda: calls.append(len(u.tx)),
                         "calibrate": lambda: {"calib": "calibrating"}})
    u.feed("!login 4821\n!calibrate\n!reboot\n")
    con.poll()
    assert_eq(len(calls), 1)
    assert calls[0] > 0  # the reply was written before the hook ran
    r = u.take_json()
    assert_eq(r[1]["calib"], "calibrating")
    assert_eq(r[2]["ok"], True)


def test_first_provisioning_needs_no_default_pin():
    u = FakeUart()
    cfg = Config()
    con = Console(u, cfg, now_ms=lambda: 0)
    assert_eq(con.execute("status")["pin"], "unset")
    r = con.execute("login 0000")
    assert not r["ok"] and "no installer PIN" in r["error"], r
    for cmd in ("set plate AB1", "calibrate", "reboot", "maintenance"):
        assert "login" in con.execute(cmd)["error"], cmd
    r = con.execute("set installer_pin 482913")  # the first PIN: no login
    assert r["ok"] and r["new"] == "set", r
    assert con.logged_in(), "first provisioning opens a session"
    assert con.execute("set plate AB1")["ok"]
    con.execute("logout")
    r = con.execute("set installer_pin 111111")  # a PIN is set: changing it needs a login
    assert not r["ok"] and "login" in r["error"], r
    assert cfg.check_pin("482913")


def test_lockout_survives_reboot_and_counts_before_the_check():
    d = _tmpdir()
    lock = d + "/pinlock.json"
    now = [1000]
    cfg = Config()
    cfg.set("installer_pin", "1234")
    con = Console(FakeUart(), cfg, now_ms=lambda: now[0], lock_path=lock)
    for i in range(FREE_TRIES):
        assert_eq(con.execute("login 9999")["ok"], False)
    assert "locked" in con.execute("login 1234")["error"]
    # power cycle: a new box run, a new clock from 0, the same flash
    now[0] = 0
    con2 = Console(FakeUart(), cfg, now_ms=lambda: now[0], lock_path=lock)
    r = con2.execute("login 1234")
    assert not r["ok"] and "locked" in r["error"], r
    now[0] = 31000
    assert_eq(con2.execute("login 1234")["ok"], True)
    con3 = Console(FakeUart(), cfg, now_ms=lambda: 0, lock_path=lock)
    assert_eq(con3.execute("login 1234")["ok"], True)  # a good login cleared the count
    # power cut during the check: the try was counted before the PBKDF2 ran

    def cut(p):
        raise OSError(5)

    cfg.check_pin = cut
    r = con3.execute("login 5555")
    assert not r["ok"] and "OSError" in r["error"], r
    with open(lock) as f:
        assert_eq(json.load(f)["bad"], 1, "try counted before the check")
    _rm(lock)
    os.rmdir(d)


def test_damaged_lock_file_fails_closed():
    d = _tmpdir()
    lock = d + "/pinlock.json"
    with open(lock, "w") as f:
        f.write("{garbage")
    cfg = Config()
    cfg.set("installer_pin", "1234")
    con = Console(FakeUart(), cfg, now_ms=lambda: 0, lock_path=lock)
    assert "locked" in con.execute("login 1234")["error"]
    _rm(lock)
    os.rmdir(d)


def test_repl_escape_only_without_pin_or_in_maintenance():
    calls = []
    cfg = Config()
    con = Console(FakeUart(), cfg, now_ms=lambda: 0, hooks={"kbd_intr": calls.append})
    assert_eq(calls, [3], "no PIN yet: Ctrl-C interrupts (factory / bench)")
    con.execute("set installer_pin 482913")
    assert_eq(calls[-1], -1, "PIN set: Ctrl-C is just a byte")
    con.execute("logout")
    assert "login" in con.execute("maintenance")["error"]
    assert_eq(calls[-1], -1)
    con.execute("login 482913")
    r = con.execute("maintenance")
    assert r["ok"] and r["maintenance"] == 1
    assert_eq(calls[-1], 3, "maintenance unlock")
    assert_eq(con.execute("status")["maintenance"], 1)
    calls2 = []
    Console(FakeUart(), cfg, now_ms=lambda: 0, hooks={"kbd_intr": calls2.append})
    assert_eq(calls2, [-1], "after a reboot the unlock is gone")


def test_echo_never_shows_the_pin():
    u = FakeUart()
    cfg = Config()
    con = Console(u, cfg, now_ms=lambda: 0)
    u.feed("echo on\r")
    con.poll()
    u.tx = bytearray()
    u.feed("set installer_pin 482913\rlogin 482913\rget plate\r")
    assert_eq(con.poll(), 3)
    out = bytes(u.tx)
    assert b"482913" not in out, out
    assert b"set installer_pin ******" in out and b"login ******" in out and b"get plate" in out, out
