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
    p = subprocess.run([micropython_binary(), "-X", "heapsize=2M",
                        os.path.join(ROOT, "tests", "boardsim", "board_main.py"),
                        str(tmp_path)], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    prof = BOARDS[board]
    uarts = {u[1]: u[2] for u in out["built"] if u[0] == "UART"}
    assert (uarts[prof["gnss_uart"]]["tx"] == prof["gnss_tx"]
            and uarts[prof["gnss_uart"]]["rx"] == prof["gnss_rx"])
    assert (uarts[prof["link_uart"]]["tx"] == prof["link_tx"]
            and uarts[prof["link_uart"]]["rx"] == prof["link_rx"])
    i2c = [u for u in out["built"] if u[0] == "I2C"][0]
    assert i2c[1] == prof["i2c"] and i2c[2]["scl"] == prof["scl"] and i2c[2]["sda"] == prof["sda"]
    assert ["WDT", 0, {"timeout": prof["wdt_ms"]}] in out["built"]
    # the installer's baud rates (schema defaults here) applied at boot; receiver setup sent
    assert ["UART.init", prof["gnss_uart"], {"baudrate": 9600}] in out["built"]
    assert ["UART.init", prof["link_uart"], {"baudrate": 115200}] in out["built"]
    assert out["gnss_tx"] > 0 and out["feeds"] == 25 and out["reset_cause"] == "watchdog"
    setpin, login, calib, status = out["replies"]
    assert (setpin["ok"] and login["ok"] and calib["ok"] and "calib" in calib
            and "not supported" not in json.dumps(calib))
    assert status["ok"] and status["accel"] == 1
    # power management (docs/power.md): the rails' enable pins are outputs, on at boot; INT1 an input
    assert ["Pin", prof["agent_en"], 2] in out["built"] and ["Pin", prof["gnss_en"], 2] in out["built"]
    assert ["Pin", prof["accel_int1"], 1] in out["built"]
    assert out["rails_off"] == [0, 0]
    # sleep: 10 s with nothing at 1, cut into slices of half the watchdog period (RP2040: 1 s, the pins
    # polled), the watchdog fed after each; INT1 at 1 ends it at once; the ignition only when armed
    slice_ms = prof["wdt_ms"] // 2 if board.startswith("esp32") else 1000
    n = -(-10000 // slice_ms)
    assert out["woke"] == ["timer", "accel", "timer", "ign"]
    assert out["sleeps"][:n] == [slice_ms] * (n - 1) + [10000 - slice_ms * (n - 1)]
    assert out["sleep_feeds"] == n + -(-3000 // slice_ms)
    if board.startswith("esp32"):  # ext1 wake on the armed pins, any high
        assert out["ext1"][0] == [[prof["ign_pin"], prof["accel_int1"]], True]
        assert out["ext1"][2] == [[prof["ign_pin"]], True]
