# Runs firmware/main.py's wiring with the `machine` test double: builds the board from its profile,
# boots the runner, drives the console through a pipe (login, calibrate, status), prints JSON.
import json
import os
import sys

import machine
import firmware.main as M
from firmware.runner import Runner


class Pipe:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()

    def any(self):
        return len(self.rx)

    def read(self, n=1):
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d

    def write(self, b):
        self.tx.extend(b)
        return len(b)


root = sys.argv[1]
os.chdir(root)
machine.cause[0] = machine.WDT_RESET
b = M.board_config()
board = M.build(b)
board.console = con = Pipe()  # the REPL stream (StdioUart) replaced by a pipe the test types into
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
