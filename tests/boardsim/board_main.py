# Runs firmware/main.py's wiring with the `machine` test double: builds the board from its profile,
# boots the runner, drives the console through a pipe (login, calibrate, status), prints JSON.
import json
import os
import sys

import firmware.main as M
import machine
from firmware.runner import Runner
from testbed.byteuart import ByteUart

root = sys.argv[1]
os.chdir(root)
machine.cause[0] = machine.WDT_RESET
b = M.board_config()
board = M.build(b)
board.console = con = ByteUart()  # the REPL stream (StdioUart) replaced by a pipe the test types into
board.clock = machine.clock
r = Runner(board)
r.power_on()
for i in range(20):
    machine.clock.now += 100
    r.step()
con.rx.extend(b"!set installer_pin 4821\n!login 4821\n!calibrate\n!status\n")  # first provisioning, then login
for i in range(5):
    machine.clock.now += 100
    r.step()
replies = [json.loads(ln) for ln in bytes(con.tx).decode().splitlines() if ln.startswith("{")]
print(json.dumps({"board": b.get("board", M.DEFAULT), "built": machine.built, "feeds": machine.WDT.feeds,
                  "replies": replies, "gnss_tx": len(board.gnss_uart.tx), "reset_cause": board.reset_cause()}))
