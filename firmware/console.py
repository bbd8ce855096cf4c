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
# The commands (firmware/console_cmds.py) are loaded for each line and unloaded after its reply: what
# stays loaded for a drive is the line reader below and the PIN lockout state.
import json

import firmware
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(console_cmds=0)

MAX_LINE = const(200)
FREE_TRIES = const(3)  # wrong PINs before the lockout starts
LOCK_BASE_MS = const(30000)  # first lockout; doubles with each further wrong PIN
LOCK_MAX_MS = const(900000)
SESSION_MS = const(600000)  # a login expires after 10 min without a command


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
                        self._line(line, ovf)
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

    def _line(self, raw, overflow=False):
        firmware.call("console_cmds", "line", self, raw, overflow)
        if self._after is not None:  # the reply is written, the commands unloaded: now the hook
            fn = self._after
            self._after = None
            fn()

    def console_line(self, line):
        """Run one command line (without terminator); returns the reply as the UART would carry it."""
        return firmware.call("console_cmds", "console_line", self, line)

    def execute(self, line):
        """One command line -> reply dict (always has 'ok')."""
        return firmware.call("console_cmds", "execute", self, line)


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
