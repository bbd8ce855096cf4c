# Board entry point: builds the real `machine` objects and runs the Box main loop.
# Pin and bus numbers come from /board.json when present (written by the installer), else the
# defaults below (ESP32 DevKit wiring documented in docs/installer.md).
import json

import machine
import time

from firmware import VERSION
from firmware.app import Box
from hw.compat import SystemClock

_DEFAULT_BOARD = {"gnss_uart": 1, "gnss_tx": 17, "gnss_rx": 16, "gnss_baud": 9600,
                  "i2c": 0, "scl": 22, "sda": 21, "ign_pin": 34, "supply_adc": 35,
                  "supply_divider_x1000": 5700, "link_uart": 2, "link_tx": 25, "link_rx": 26,
                  "link_baud": 115200, "fs_root": "/flash"}


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


def board_config():
    b = dict(_DEFAULT_BOARD)
    try:
        with open("/board.json") as f:
            b.update(json.load(f))
    except (OSError, ValueError):
        pass
    return b


def load_config(root):
    from firmware.config import Config

    # Config.load falls back to the backup copy, then to defaults: a box always boots and records
    return Config.load(root + "/config.json")


def run():
    b = board_config()
    gnss = machine.UART(b["gnss_uart"], baudrate=b["gnss_baud"], tx=b["gnss_tx"], rx=b["gnss_rx"], rxbuf=2048)
    i2c = machine.I2C(b["i2c"], scl=machine.Pin(b["scl"]), sda=machine.Pin(b["sda"]), freq=400000)
    link = machine.UART(b["link_uart"], baudrate=b["link_baud"], tx=b["link_tx"], rx=b["link_rx"], rxbuf=4096)
    power = BoardPower(b["ign_pin"], b["supply_adc"], b["supply_divider_x1000"])
    cfg = load_config(b["fs_root"])
    clock = SystemClock()
    box = Box(clock, gnss, i2c, power, b["fs_root"], cfg.values(), link_uart=link)
    cfg.on_change = box.on_config_change  # every change leaves an audit record; applied at reboot
    from firmware.console import Console, StdioUart
    import micropython

    # the console shares the REPL stream: with a PIN set it turns the Ctrl-C escape off
    # (micropython.kbd_intr(-1)) until a logged-in `maintenance`; the wrong-PIN count is on flash
    console = Console(StdioUart(), cfg, status_provider=box.status, now_ms=clock.ticks_ms,
                      hooks={"reboot": machine.reset, "kbd_intr": micropython.kbd_intr}, version=VERSION,
                      lock_path=b["fs_root"] + "/pinlock.json")
    wdt = machine.WDT(timeout=8000)
    try:
        while True:
            box.step()
            console.poll()
            wdt.feed()
            time.sleep_ms(100)
    except BaseException:
        # an error must not end in the REPL of a provisioned box: restart instead
        if cfg.pin_set() and not console.maintenance:
            machine.reset()
        raise


if __name__ == "__main__":
    run()
