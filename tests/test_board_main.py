"""firmware/main.py on a board: the `machine` objects come from the board profile, the runner boots,
the watchdog is fed, the console's calibrate works (MicroPython VM with a `machine` test double)."""
import json
import os
import subprocess

import pytest

from firmware.boards import BOARDS
from tools.mpvm import micropython_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("board", ["esp32-wroom", "pico-w"])
def test_board_entry_point_builds_the_profile_and_calibrate_works(tmp_path, board):
    (tmp_path / "board.json").write_text(json.dumps({"board": board}))
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "tests", "boardsim"), ROOT]))
    # main.py reads board.json in the working directory (/ on a board): here the box directory
    p = subprocess.run([micropython_binary(), "-X", "heapsize=2M", os.path.join(ROOT, "tests", "boardsim", "board_main.py"),
                        str(tmp_path)], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    prof = BOARDS[board]
    uarts = {u[1]: u[2] for u in out["built"] if u[0] == "UART"}
    assert uarts[prof["gnss_uart"]]["tx"] == prof["gnss_tx"] and uarts[prof["gnss_uart"]]["rx"] == prof["gnss_rx"]
    assert uarts[prof["link_uart"]]["tx"] == prof["link_tx"] and uarts[prof["link_uart"]]["rx"] == prof["link_rx"]
    i2c = [u for u in out["built"] if u[0] == "I2C"][0]
    assert i2c[1] == prof["i2c"] and i2c[2]["scl"] == prof["scl"] and i2c[2]["sda"] == prof["sda"]
    assert ["WDT", 0, {"timeout": prof["wdt_ms"]}] in out["built"]
    # the installer's baud rates (schema defaults here) applied at boot; receiver setup sent
    assert ["UART.init", prof["gnss_uart"], {"baudrate": 9600}] in out["built"]
    assert ["UART.init", prof["link_uart"], {"baudrate": 115200}] in out["built"]
    assert out["gnss_tx"] > 0 and out["feeds"] == 25 and out["reset_cause"] == "watchdog"
    setpin, login, calib, status = out["replies"]
    assert setpin["ok"] and login["ok"] and calib["ok"] and "calib" in calib and "not supported" not in json.dumps(calib)
    assert status["ok"] and status["accel"] == 1
