# Runs firmware/main.py's wiring with the `machine` test double: builds the board from its profile,
# boots the runner, drives the console through a pipe (login, calibrate, status), prints JSON.
import json
import os
import sys

import firmware.main as M
import machine
from firmware.runner import Runner
from testbed.byteuart import ByteUart


class Esp32:
    """Test double of the esp32 module (only on ESP32 boards): records wake_on_ext1()."""
    WAKEUP_ANY_HIGH = True
    ext1 = []

    @staticmethod
    def wake_on_ext1(pins, level):
        Esp32.ext1.append(([p.n for p in pins], level))


root = sys.argv[1]
os.chdir(root)
machine.cause[0] = machine.WDT_RESET
b = M.board_config()
if b["platform"] == "esp32":
    sys.modules["esp32"] = Esp32
board = M.build(b)
board.console = con = ByteUart()  # the REPL stream (StdioUart) replaced by a pipe the test types into
board.clock = machine.clock
r = Runner(board)
r.power_on()
for i in range(20):
    machine.clock.now += 100
    r.step()
# first provisioning, then login
con.rx.extend(b"!set installer_pin 4821\n!login 4821\n!calibrate\n!status\n")
for i in range(5):
    machine.clock.now += 100
    r.step()
replies = [json.loads(ln) for ln in bytes(con.tx).decode().splitlines() if ln.startswith("{")]
# the board's sleep primitive: the pins at 0 sleep the whole time (in slices, the watchdog fed); INT1 at 1
# ends it; the ignition pin only when armed
machine.Pin.values[b["ign_pin"]] = 0
machine.Pin.values[b["accel_int1"]] = 0
feeds0 = machine.WDT.feeds
woke = [board.sleep(10000, 1, 1)]
machine.Pin.values[b["accel_int1"]] = 1
woke.append(board.sleep(10000, 1, 1))
woke.append(board.sleep(3000, 1, 0))
machine.Pin.values[b["ign_pin"]] = 1
woke.append(board.sleep(10000, 1, 0))
board.agent_rail(0)
board.gnss_power(0)
rails = [machine.Pin.values[b["agent_en"]], machine.Pin.values[b["gnss_en"]]]
print(json.dumps({"board": b.get("board", M.DEFAULT), "built": machine.built, "feeds": feeds0,
                  "replies": replies, "gnss_tx": len(board.gnss_uart.tx), "reset_cause": board.reset_cause(),
                  "woke": woke, "sleeps": machine.sleeps, "sleep_feeds": machine.WDT.feeds - feeds0,
                  "rails_off": rails, "ext1": Esp32.ext1}))
