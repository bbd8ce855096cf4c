# Installer console: a line-oriented command interpreter on a UART-like stream.
#
# For a person in a terminal (text replies, "> " prompt, optional echo) and for the host tool
# (a line starting with "!" gets exactly one line of JSON back: {"ok": true, ...} or
# {"ok": false, "error": "..."}; `json on` makes every reply JSON).
# Commands: help, status, get [key], set key value, login PIN, logout, selftest, calibrate, reboot,
# maintenance, json on|off, echo on|off. set/calibrate/reboot/maintenance need `login PIN` first.
# The console owns no hardware: the app gives it `status_provider()` -> dict and optional hooks
# (selftest, calibrate, reboot, kbd_intr), so it is testable alone. Runs on MicroPython and CPython.
#
# PIN rules (docs/security.md):
# - a new box has no PIN; its first `set installer_pin NEW` needs no login (first provisioning),
#   every later change does. No PIN, no login: there is no default PIN.
# - wrong PINs: FREE_TRIES, then a lockout that doubles per further wrong PIN. The count is on flash
#   (lock_path) and is raised *before* the PIN is checked, so neither a reboot nor a power cut in the
#   middle of a check gives a free try; after a reboot a locked box starts its lockout over.
# - with a PIN set, Ctrl-C on the console stream reaches no REPL: the console calls
#   hooks["kbd_intr"](-1) (micropython.kbd_intr on a board); `maintenance` (logged in) gives the REPL
#   escape back until the next reboot, for `paydbox flash`.
# - a PIN typed with echo on is echoed as '*'.
import json

from firmware.config import ConfigError, with_schema
from hw.compat import const

MAX_LINE = const(200)
FREE_TRIES = const(3)  # wrong PINs before the lockout starts
LOCK_BASE_MS = const(30000)  # first lockout; doubles with each further wrong PIN
LOCK_MAX_MS = const(900000)
SESSION_MS = const(600000)  # a login expires after 10 min without a command

HELP = (
    "status                 box health: GNSS, accelerometer, storage, odometer",
    "get [key]              show one or every setting",
    "set KEY VALUE          change a setting (login first)",
    "login PIN / logout     installer session",
    "selftest               check GNSS, accelerometer, storage, config",
    "calibrate              start mounting calibration (login first)",
    "reboot                 restart the box (login first)",
    "maintenance            allow the REPL escape until reboot, for paydbox flash (login first)",
    "json on|off            one JSON line per reply (or start a line with !)",
    "echo on|off            echo typed characters",
    "keys                   every key with its allowed values",
)


class Console:
    def __init__(self, uart, config, status_provider=None, now_ms=None, hooks=None, version="?",
                 lock_path=None):
        self.uart = uart
        self.config = config
        self.status_provider = status_provider
        self.now_ms = now_ms
        self.hooks = hooks or {}
        self.version = version
        self.json_mode = False
        self.echo = False
        self._buf = bytearray(MAX_LINE)
        self._n = 0
        self._overflow = False
        self._rbuf = bytearray(64)
        self._session_until = -1
        self._after = None  # hook to call once the reply is written (reboot)
        self.lines = 0
        self.lock_path = lock_path
        self.maintenance = False
        self._bad_pins = self._load_bad_pins()
        self._locked_until = -1
        if self._bad_pins >= FREE_TRIES:  # locked when it went down: the lockout starts over
            self._locked_until = self._now() + self._lock_ms(self._bad_pins)
        self._mask = False  # echo: the line being typed carries a PIN
        self.apply_repl_guard()

    # -- PIN state on flash ----------------------------------------------------------------------
    def _load_bad_pins(self):
        if self.lock_path is None:
            return 0
        try:
            with open(self.lock_path) as f:
                n = json.load(f).get("bad", 0)
            return n if isinstance(n, int) and n >= 0 else FREE_TRIES
        except OSError:
            return 0  # no file: no wrong PIN since the last good login
        except (ValueError, AttributeError):
            return FREE_TRIES  # damaged: fail closed (locked), never open

    def _save_bad_pins(self, n):
        self._bad_pins = n
        if self.lock_path is None:
            return
        import os

        tmp = self.lock_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"bad": n}))
        os.rename(tmp, self.lock_path)

    @staticmethod
    def _lock_ms(bad):
        lock = LOCK_BASE_MS << min(bad - FREE_TRIES, 16)
        return LOCK_MAX_MS if lock > LOCK_MAX_MS or lock <= 0 else lock

    def apply_repl_guard(self):
        """No REPL escape (Ctrl-C) while a PIN is set, unless a maintenance unlock is active."""
        fn = self.hooks.get("kbd_intr")
        if fn is not None:
            fn(3 if (self.maintenance or not self.config.pin_set()) else -1)

    # -- time ---------------------------------------------------------------------------------
    def _now(self):
        return self.now_ms() if self.now_ms is not None else 0

    def logged_in(self):
        return self._session_until >= 0 and self._now() <= self._session_until

    # -- stream -------------------------------------------------------------------------------
    def poll(self):
        """Read what the UART has, run each complete line; returns the number of lines handled."""
        handled = 0
        u = self.uart
        if u is None:
            return 0
        while True:
            k = u.any()
            if not k:
                break
            if k > len(self._rbuf):
                k = len(self._rbuf)
            data = u.read(k)
            if not data:
                break
            echo = self.echo
            for b in data:
                if echo:
                    self._echo(b)
                if b == 10 or b == 13:
                    if self._n or self._overflow:
                        line = bytes(self._buf[: self._n])
                        ovf = self._overflow
                        self._n = 0
                        self._overflow = False
                        if ovf:
                            self._write_reply(line.startswith(b"!"),
                                              {"ok": False, "error": "line too long (max %d)" % MAX_LINE})
                        else:
                            self._line(line)
                        handled += 1
                elif b == 3:  # Ctrl-C: drop the partial line
                    self._n = 0
                    self._mask = False
                elif self._n < MAX_LINE:
                    self._buf[self._n] = b
                    self._n += 1
                else:
                    self._overflow = True
        return handled

    def _echo(self, b):
        # a person's terminal: echo as typed, but the PIN of `login` / `set installer_pin` as '*'
        u = self.uart
        if b == 13:
            u.write(b"\r\n")
            self._mask = False
        elif b == 10:
            self._mask = False
        elif self._mask and b > 32:
            u.write(b"*")
        else:
            u.write(bytes([b]))
            if b == 32 and self._n:
                head = bytes(self._buf[: self._n]).lstrip(b"!").lower()
                if head in (b"login", b"set installer_pin"):
                    self._mask = True

    def _line(self, raw):
        try:
            line = raw.decode()
        except UnicodeError:
            line = None
        machine = raw.startswith(b"!")
        if line is None:
            rep = {"ok": False, "error": "line is not UTF-8"}
        else:
            rep = self.execute(line[1:] if machine else line)
        self._write_reply(machine, rep)
        if self._after is not None:
            fn = self._after
            self._after = None
            fn()

    def _write_reply(self, machine, rep):
        self.lines += 1
        if machine or self.json_mode:
            self.uart.write(json.dumps(rep).encode() + b"\n")
        else:
            self.uart.write(self.text(rep).encode() + b"\r\n> ")

    def console_line(self, line):
        """Run one command line (without terminator); returns the reply as the UART would carry it."""
        machine = line.startswith("!")
        rep = self.execute(line[1:] if machine else line)
        if machine or self.json_mode:
            return json.dumps(rep)
        return self.text(rep)

    # -- text rendering for people --------------------------------------------------------------
    def text(self, rep):
        if not rep.get("ok"):
            return "error: " + rep.get("error", "?")
        if "text" in rep:
            return rep["text"]
        out = []
        for k in sorted(rep):
            if k == "ok":
                continue
            v = rep[k]
            if isinstance(v, dict):
                for k2 in sorted(v):
                    out.append("%s.%s: %s" % (k, k2, v[k2]))
            else:
                out.append("%s: %s" % (k, v))
        return "\r\n".join(out) if out else "ok"

    # -- commands ---------------------------------------------------------------------------------
    def execute(self, line):
        """One command line -> reply dict (always has 'ok')."""
        parts = line.strip().split(None, 2)
        if not parts:
            return {"ok": True, "text": ""}
        cmd = parts[0].lower()
        if self._session_until >= 0:
            if self._now() > self._session_until:
                self._session_until = -1
            else:
                self._session_until = self._now() + SESSION_MS
        try:
            fn = getattr(self, "_cmd_" + cmd, None)
            if fn is None:
                return {"ok": False, "error": "unknown command %r, try help" % cmd}
            return fn(parts[1:])
        except ConfigError as e:
            return {"ok": False, "error": str(e)}
        except OSError as e:
            return {"ok": False, "error": "%s failed: OSError %s" % (cmd, e)}

    def _need_login(self, what):
        if not self.logged_in():
            return {"ok": False, "error": "%s needs the installer PIN: login PIN" % what}
        return None

    def _cmd_help(self, args):
        return {"ok": True, "text": "\r\n".join(HELP), "commands": [h.split()[0] for h in HELP]}

    def _cmd_keys(self, args):
        return {"ok": True, "keys": with_schema("keys_allowed")}

    def _cmd_status(self, args):
        st = {}
        if self.status_provider is not None:
            st = self.status_provider() or {}
        rep = {"ok": True, "fw": self.version, "device_id": self.config.get("device_id"),
               "config": self.config.source, "pin": "set" if self.config.pin_set() else "unset",
               "maintenance": 1 if self.maintenance else 0}
        for k in st:
            rep[k] = st[k]
        return rep

    def _cmd_get(self, args):
        if args:
            key = args[0]
            return {"ok": True, "key": key, "value": self.config.get_str(key)}
        vals = self.config.export()
        vals["installer_pin"] = self.config.get_str("installer_pin")
        return {"ok": True, "values": vals}

    def _cmd_set(self, args):
        if len(args) < 2:
            return {"ok": False, "error": "usage: set KEY VALUE"}
        key = args[0]
        self.config.get(key)  # ConfigError for an unknown key, before the login check
        first = key == "installer_pin" and not self.config.pin_set()
        if not first:  # first provisioning: the first PIN needs no login, every other change does
            rep = self._need_login("set")
            if rep:
                return rep
        old, new = self.config.set(key, args[1])
        if key == "installer_pin":
            self._save_bad_pins(0)
            self._session_until = self._now() + SESSION_MS
            self.apply_repl_guard()
        return {"ok": True, "key": key, "old": old, "new": new}

    def _cmd_login(self, args):
        now = self._now()
        if self._locked_until >= 0 and now < self._locked_until:
            wait_s = (self._locked_until - now + 999) // 1000
            return {"ok": False, "error": "locked after wrong PINs, retry in %d s" % wait_s}
        if not args:
            return {"ok": False, "error": "usage: login PIN"}
        if not self.config.pin_set():
            return {"ok": False,
                    "error": "no installer PIN set yet: first provisioning is `set installer_pin NEW`"}
        bad = self._bad_pins + 1
        self._save_bad_pins(bad)  # counted before the check: cutting power mid-check is no free try
        if self.config.check_pin(args[0]):
            self._save_bad_pins(0)
            self._locked_until = -1
            self._session_until = now + SESSION_MS
            if self.config.pin_is_legacy():
                self.config.set("installer_pin", args[0])  # re-hash an old firmware's PIN with PBKDF2
            return {"ok": True, "text": "logged in", "session_s": SESSION_MS // 1000}
        self._session_until = -1
        if bad >= FREE_TRIES:
            lock = self._lock_ms(bad)
            self._locked_until = now + lock
            return {"ok": False, "error": "wrong PIN, locked for %d s" % (lock // 1000)}
        return {"ok": False, "error": "wrong PIN (%d tries left before lockout)" % (FREE_TRIES - bad)}

    def _cmd_maintenance(self, args):
        rep = self._need_login("maintenance")
        if rep:
            return rep
        self.maintenance = True
        self.apply_repl_guard()
        return {"ok": True, "text": "maintenance: REPL escape allowed until reboot", "maintenance": 1}

    def _cmd_logout(self, args):
        self._session_until = -1
        return {"ok": True, "text": "logged out"}

    def _cmd_json(self, args):
        self.json_mode = bool(args) and args[0].lower() == "on"
        return {"ok": True, "json": 1 if self.json_mode else 0}

    def _cmd_echo(self, args):
        self.echo = bool(args) and args[0].lower() == "on"
        return {"ok": True, "echo": 1 if self.echo else 0}

    def _cmd_selftest(self, args):
        fn = self.hooks.get("selftest")
        checks = fn() if fn is not None else self.default_selftest()
        ok = True
        for k in checks:
            if not checks[k].startswith("ok"):
                ok = False
        return {"ok": True, "pass": 1 if ok else 0, "checks": checks}

    def default_selftest(self):
        """Checks from the status provider: GNSS seen, accelerometer present, storage, config."""
        st = self.status_provider() if self.status_provider is not None else {}
        checks = {}
        if st.get("gnss_bytes", 0) > 0 or st.get("sats", -1) >= 0:
            checks["gnss"] = "ok: %s sats, fix %s" % (st.get("sats", -1), st.get("gnss_fix", 0))
        else:
            checks["gnss"] = "FAIL: no data from the GNSS receiver"
        if st.get("accel_ok", 0):
            checks["accel"] = "ok: %s mg" % (st.get("accel_mg", "?"),)
        else:
            checks["accel"] = "FAIL: accelerometer not detected"
        if st.get("store_ok", 1):
            checks["storage"] = "ok: %s bytes used" % (st.get("store_used", 0),)
        else:
            checks["storage"] = "FAIL: store not writable"
        src = self.config.source
        checks["config"] = ("ok: " if src != "defaults" else "FAIL: ") + "config from " + src
        return checks

    def _cmd_calibrate(self, args):
        rep = self._need_login("calibrate")
        if rep:
            return rep
        fn = self.hooks.get("calibrate")
        if fn is None:
            return {"ok": False, "error": "calibrate not supported by this firmware"}
        r = fn()
        out = {"ok": True}
        if isinstance(r, dict):
            for k in r:
                out[k] = r[k]
        else:
            out["text"] = str(r)
        return out

    def _cmd_reboot(self, args):
        rep = self._need_login("reboot")
        if rep:
            return rep
        fn = self.hooks.get("reboot")
        if fn is None:
            return {"ok": False, "error": "reboot not supported by this firmware"}
        self._after = fn
        return {"ok": True, "text": "rebooting"}


class StdioUart:
    """UART-like view of the board's REPL stream (USB serial on ESP32/RP2), so the console shares
    the port mpremote uses: `Console(StdioUart(), config, ...)`. Ctrl-C interrupts the firmware
    (mpremote's raw REPL entry) only while the console allows it (no PIN, or `maintenance`);
    non-blocking through select.poll."""

    def __init__(self, stdin=None, stdout=None):
        import select
        import sys

        self._in = stdin or sys.stdin
        out = stdout or sys.stdout
        self._out = getattr(out, "buffer", out)
        self._inb = getattr(self._in, "buffer", self._in)
        self._inb = getattr(self._inb, "raw", self._inb)  # CPython: unbuffered, so poll() tells the truth
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)

    def any(self):
        for _, ev in self._poll.poll(0):
            if ev & 1:  # POLLIN
                return 1
        return 0

    def read(self, n=1):
        out = bytearray()
        while len(out) < n and self.any():
            b = self._inb.read(1)
            if not b:
                break
            out.extend(b if isinstance(b, (bytes, bytearray)) else b.encode())
        return bytes(out)

    def write(self, b):
        try:
            return self._out.write(b)
        except TypeError:  # a text stream
            return self._out.write(b.decode())
