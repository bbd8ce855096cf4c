# Board entry point: builds the real `machine` objects of this board and hands them to the runner
# (firmware/runner.py wires config, receiver setup, Box, console and watchdog).
# Which board: board.json {"board": NAME, ...pin overrides} written by `paydbox flash --board NAME`,
# else firmware.boards.DEFAULT. Pins and UARTs come from the profile table (firmware/boards.py).
import json
import time

import machine
from firmware.boards import DEFAULT, profile
from firmware.runner import Board, Runner
from hw.compat import SystemClock

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(supply_divider_x1000=0)


class BoardPower:
    """Ignition on a digital pin, supply voltage through a resistor divider on an ADC pin."""

    def __init__(self, ign_pin, adc_pin, divider_x1000):
        self.ign = machine.Pin(ign_pin, machine.Pin.IN)
        self.adc = machine.ADC(machine.Pin(adc_pin))
        self.divider_x1000 = divider_x1000

    def ignition(self):
        return self.ign.value()

    def supply_mv(self):
        return self.adc.read_uv() // 1000 * self.divider_x1000 // 1000


class BoardSleep:
    """The board's sleep primitive (firmware/runner.py Board.sleep): machine.lightsleep, woken by the
    ignition pin and the LIS3DH's INT1 (ESP32: ext1 wake on any high) or the timer. The sleep is cut
    into slices shorter than the watchdog's period, which is fed between them; a pin at 1 ends it.
    RP2040: MicroPython's lightsleep wakes on its timer only, so the pins are polled every slice."""

    def __init__(self, ign_pin, int1_pin, wdt, wdt_ms):
        self.ign = machine.Pin(ign_pin, machine.Pin.IN)
        self.int1 = machine.Pin(int1_pin, machine.Pin.IN)
        self.wdt = wdt
        self.slice_ms = wdt_ms // 2 if wdt_ms else 4000
        self.ext1 = 0  # ESP32: lightsleep wakes on the pins (ext1); elsewhere they are polled
        try:
            import esp32  # noqa: F401

            self.ext1 = 1
        except ImportError:
            self.slice_ms = min(self.slice_ms, 1000)

    def __call__(self, ms, ign=1, accel=1):
        pins = []
        if ign:
            pins.append(self.ign)
        if accel:
            pins.append(self.int1)
        if self.ext1 and pins:
            import esp32

            esp32.wake_on_ext1(tuple(pins), esp32.WAKEUP_ANY_HIGH)
        while ms > 0:
            if ign and self.ign.value():
                return "ign"
            if accel and self.int1.value():
                return "accel"
            k = ms if ms < self.slice_ms else self.slice_ms
            machine.lightsleep(k)
            ms -= k
            if self.wdt is not None:
                self.wdt.feed()
        if ign and self.ign.value():
            return "ign"
        if accel and self.int1.value():
            return "accel"
        return "timer"


def _out_pin(n):
    p = machine.Pin(n, machine.Pin.OUT, value=1)
    return lambda on: p.value(1 if on else 0)


def board_config():
    """The board profile, with the overrides board.json carries (a custom harness)."""
    over = {}
    try:
        with open("board.json") as f:  # the working directory: / on a board
            over = json.load(f)
    except (OSError, ValueError):
        pass
    b = dict(profile(over.get("board", DEFAULT)))
    b.update(over)
    return b


def reset_cause():
    """machine.reset_cause() as a name (the runner notices a reboot loop from it)."""
    c = machine.reset_cause()
    for name, attr in (("power_on", "PWRON_RESET"), ("watchdog", "WDT_RESET"), ("hard", "HARD_RESET"),
                       ("soft", "SOFT_RESET"), ("deepsleep", "DEEPSLEEP_RESET")):
        if c == getattr(machine, attr, -1):
            return name
    return "hard"


def build(b):
    # UARTs open at the schema's default rates; the runner applies the installer's gnss_baud and
    # link_baud (UART.init) at boot, before anything is read
    gnss = machine.UART(b["gnss_uart"], baudrate=9600, tx=b["gnss_tx"], rx=b["gnss_rx"],
                        rxbuf=b["gnss_rxbuf"])
    i2c = machine.I2C(b["i2c"], scl=machine.Pin(b["scl"]), sda=machine.Pin(b["sda"]), freq=b["i2c_freq"])
    link = machine.UART(b["link_uart"], baudrate=115200, tx=b["link_tx"], rx=b["link_rx"],
                        rxbuf=b["link_rxbuf"])
    power = BoardPower(b["ign_pin"], b["supply_adc"], b["supply_divider_x1000"])
    import micropython

    from firmware.console import StdioUart

    wdt = machine.WDT(timeout=b["wdt_ms"]) if b.get("wdt_ms") else None
    sleep = agent = gnss_en = None
    if b.get("agent_en") is not None and b.get("accel_int1") is not None:
        sleep = BoardSleep(b["ign_pin"], b["accel_int1"], wdt, b.get("wdt_ms", 0))
        agent = _out_pin(b["agent_en"])
        if b.get("gnss_en") is not None:
            gnss_en = _out_pin(b["gnss_en"])
    # the console shares the REPL stream: with a PIN set it turns the Ctrl-C escape off
    # (micropython.kbd_intr(-1)) until a logged-in `maintenance`
    return Board(SystemClock(), gnss, i2c, power, b["fs_root"], link_uart=link, console=StdioUart(),
                 watchdog=wdt, reset=machine.reset, name=b.get("board", DEFAULT), reset_cause=reset_cause,
                 kbd_intr=micropython.kbd_intr, sleep=sleep, agent_rail=agent, gnss_power=gnss_en)


def run():
    Runner(build(board_config())).run_forever(time.sleep_ms)


if __name__ == "__main__":
    run()
