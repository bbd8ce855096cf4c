# The box's composition root: the one place where config, GNSS receiver setup, the Box supervisor,
# the installer console and the watchdog are wired together. Every way of running the firmware uses
# it: the board entry point (firmware/main.py builds the `machine` objects), the replay
# (firmware/replay_main.py) and the virtual box (tools/installer/vbox_runner.py) only build a Board.
#
#   board = Board(clock, gnss_uart, i2c, power, fs_root, link_uart=..., console=..., watchdog=...)
#   r = Runner(board)        # loads <fs_root>/config.json (schema defaults when absent)
#   r.power_on()             # UART baud rates, receiver setup, Box
#   while True: r.step()     # one main-loop pass (~100 ms of box time)
#
# Nothing here falls back in silence: if the Box cannot be built the exception goes out to the
# caller (on the board: the REPL shows the traceback; the watchdog then resets the MCU).
import gc
import sys

import firmware
from firmware import VERSION
from firmware.config import Config

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(calib_quality=0, gnss_rate_hz=0, loop_faults=0)

# The Box's modules in dependency order, loaded by load_box() on the first power-on.
_BOX_MODULES = ("hw.compat", "firmware.rangecoder", "firmware.records", "firmware.codec", "firmware.store",
                "firmware.nmea", "firmware.odometer", "firmware.trip", "firmware.score", "firmware.calib",
                "firmware.motion", "hw.lis3dh", "firmware.app")
_RESERVE = 8192  # bytes held while they load: the room of the Box's first big buffer (codec models, 6.4 KB)


def load_box():
    """firmware.app.Box. On the first call its modules load one at a time with a collection after
    each, behind a reserve freed at the end. Loading a module leaves garbage (outgrown dict tables,
    temporaries) that the next module's objects would pin in place: imported in one go, the modules
    left ~18 KB of free holes of a few blocks each under them (64-bit VM), and on a 96 KiB heap the
    Box then found no free block for its codec models. (A module missing from _BOX_MODULES still
    loads, with firmware.app, only without its collection.)"""
    if "firmware.app" not in sys.modules:
        _load_modules()
    from firmware.app import Box

    return Box


def _load_modules():
    reserve = None
    n = _RESERVE
    while reserve is None and n >= 1024:
        try:
            reserve = bytearray(n)
        except MemoryError:
            n //= 2
    for name in _BOX_MODULES:
        if name not in sys.modules:
            __import__(name)
            gc.collect()
    reserve = None  # noqa: F841 - freed for the Box's buffers


def _join(a, b):
    return a + "/" + b if a else b


class Board:
    """What an entry point built, handed to the Runner.
    clock: ticks_ms() -> box ms; gnss_uart / link_uart: machine.UART subset (any, readinto, write,
    init(baudrate=)); i2c: machine.I2C subset; power: ignition() 0/1, supply_mv() (None: no power
    inputs, the box is always on); console: UART-like stream of the installer console (None: no
    console); fs_root: directory of config.json, state and the store; watchdog: feed() (None: no
    hardware watchdog); reset: callable that restarts the MCU (console `reboot`); reset_cause:
    callable -> "power_on" | "watchdog" | "hard" | "soft" | "deepsleep" (None: unknown, e.g. replay);
    kbd_intr: micropython.kbd_intr on a board (the console turns the REPL escape off with a PIN set).
    Power management (firmware/power.py; None: the box never sleeps): sleep(ms, ign, accel) sleeps at
    most ms, woken by the ignition pin (ign 1) or the accelerometer's INT1 (accel 1), and returns
    "ign", "accel" or "timer" (replay: the clock jumps); agent_rail(on) switches the edge agent's
    supply rail; gnss_power(on) the GNSS receiver's main supply (its backup supply stays)."""

    def __init__(self, clock, gnss_uart, i2c, power, fs_root, link_uart=None, console=None, watchdog=None,
                 reset=None, name="board", reset_cause=None, kbd_intr=None, sleep=None, agent_rail=None,
                 gnss_power=None):
        self.clock = clock
        self.gnss_uart = gnss_uart
        self.i2c = i2c
        self.power = power
        self.fs_root = fs_root
        self.link_uart = link_uart
        self.console = console
        self.watchdog = watchdog
        self.reset = reset
        self.name = name
        self.reset_cause = reset_cause
        self.kbd_intr = kbd_intr
        self.sleep = sleep
        self.agent_rail = agent_rail
        self.gnss_power = gnss_power


def set_baud(uart, baud):
    """Reconfigure a UART's baud rate (machine.UART.init keeps pins and buffers)."""
    if uart is not None and baud:
        uart.init(baudrate=baud)


def setup_gnss(uart, rate_hz):
    """Receiver setup at boot: u-blox UBX frames (automotive dynamics, navigation rate `rate_hz`,
    the NMEA sentences the parser reads), sent without waiting for ACKs: a generic NMEA receiver
    ignores UBX and keeps its own rate. The UBX module is unloaded afterwards (boot-only code)."""
    from firmware import ubx

    for fr in ubx.setup_frames(rate_hz):
        uart.write(fr)
    del ubx
    firmware.unload("ubx")


class Runner:
    """Owns the Box across power cycles. config: a firmware.config.Config (loaded from the board's
    filesystem when None); overrides: raw settings on top of it (replay and bench tunables that are
    not installer settings)."""

    def __init__(self, board, config=None, overrides=None):
        self.board = board
        if config is None:
            config = Config.load(_join(board.fs_root, "config.json"))
        self.config = config
        self.overrides = overrides
        config.on_change = self._on_config_change  # every change leaves an audit record; applied at reboot
        self.box = None
        self.summaries = []  # Box.summary() of every power cycle that ended (replay report)
        self.power_ons = 0
        self.reboot_requested = 0
        self.console = None
        if board.console is not None:
            from firmware.console import Console

            hooks = {"calibrate": self.calibrate, "reboot": self.reboot}
            if board.kbd_intr is not None:
                hooks["kbd_intr"] = board.kbd_intr
            # the wrong-PIN count lives on flash: a reboot gives no free tries
            self.console = Console(board.console, config, status_provider=self.status,
                                   now_ms=board.clock.ticks_ms, hooks=hooks, version=VERSION,
                                   lock_path=_join(board.fs_root, "pinlock.json"))

    def settings(self):
        """The settings the box runs with: schema defaults, then config.json, then overrides."""
        v = self.config.values()
        if self.overrides:
            for k in self.overrides:
                v[k] = self.overrides[k]
        return v

    # ---- power ----
    def power_on(self):
        """Boot: every installer setting takes effect here (UART baud rates, GNSS rate, store size)."""
        b = self.board
        cfg = self.settings()
        set_baud(b.gnss_uart, cfg["gnss_baud"])
        set_baud(b.link_uart, cfg["link_baud"])
        setup_gnss(b.gnss_uart, cfg["gnss_rate_hz"])
        # the Box's big buffers (codec models, crash ring) go into a heap freed of boot garbage:
        # on a 96 KiB heap, fragmentation and not the live bytes is what fails first
        Box = load_box()
        gc.collect()
        cause = b.reset_cause() if b.reset_cause is not None else None
        self.box = Box(b.clock, b.gnss_uart, b.i2c, b.power, b.fs_root, cfg, link_uart=b.link_uart,
                       reset_cause=cause, can_sleep=b.sleep is not None, agent_rail=b.agent_rail,
                       gnss_power=b.gnss_power)
        self.power_ons += 1
        return self.box

    def power_off(self):
        """Supply gone (supercap time): the Box commits everything; its summary is kept."""
        box = self.box
        if box is not None:
            box.shutdown()
            self.summaries.append(box.summary())
            self.box = None

    # ---- main loop ----
    def step(self):
        """One main-loop pass: the Box, the console, then the watchdog (fed only when the pass returned)."""
        box = self.box
        if box is not None:
            try:
                io = box.pmio
                if io is not None and io.sleep_ms > 0:
                    pm = io.core
                    io.wake(box, self.board.sleep(io.sleep_ms, pm.wake_ign, pm.wake_accel))
                else:
                    box.step()
            except (OSError, MemoryError) as e:
                # a fault no subsystem guard caught: counted and reported, the next pass goes on
                # (any other exception is a bug: it goes out, and on the board the watchdog resets)
                self.loop_fault(box, e)
        if self.console is not None:
            self.console.poll()
        wdt = self.board.watchdog
        if wdt is not None:
            wdt.feed()

    def loop_fault(self, box, e):
        box.faults["loop_faults"] += 1
        if box.faults["loop_faults"] <= 3:  # a fault every pass must not fill the store
            try:
                box._tamper(self.board.clock.ticks_ms(), "loop_fault",
                            e.args[0] if e.args and isinstance(e.args[0], int) else 0)
            except (OSError, MemoryError):
                pass

    def run_forever(self, sleep_ms, period_ms=100):
        """The board's loop: power_on, then step every period_ms for ever (the watchdog resets a hang)."""
        try:
            if self.box is None:
                self.power_on()
            while True:
                self.step()
                if self.reboot_requested and self.board.reset is not None:
                    self.power_off()
                    self.board.reset()
                sleep_ms(period_ms)
        except BaseException:
            # an error must not end in the REPL of a provisioned box: restart instead
            con = self.console
            if self.board.reset is not None and self.config.pin_set() and not (
                    con is not None and con.maintenance):
                self.board.reset()
            raise

    # ---- console hooks ----
    def status(self):
        box = self.box
        if box is None:
            return {"fw": VERSION, "powered": 0}
        return box.status()

    def calibrate(self):
        box = self.box
        if box is None or box.motion is None:
            return {"calib": "none", "text": "no accelerometer"}
        box.restart_calibration()
        return {"calib": box.motion.calib_state, "calib_quality": box.motion.calib_quality}

    def reboot(self):
        self.reboot_requested = 1

    def _on_config_change(self, key, old, new):
        if self.box is not None:
            self.box.on_config_change(key, old, new)
