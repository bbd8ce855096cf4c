# The installer console on the VM's own stdin/stdout (the REPL stream, as on a board's USB serial),
# wired like firmware/main.py: kbd_intr hook = micropython.kbd_intr, wrong-PIN count on flash.
# Used by tests/test_security.py (Ctrl-C escape attacks): micropython -i stdio_console_box.py DIR
import sys
import time

import micropython

from firmware.config import Config
from firmware.console import Console, StdioUart

d = sys.argv[1]
cfg = Config.load(d + "/config.json")
con = Console(StdioUart(), cfg, now_ms=time.ticks_ms, hooks={"kbd_intr": micropython.kbd_intr},
              lock_path=d + "/pinlock.json")
print("READY")
while True:
    con.poll()
    time.sleep_ms(10)
