"""paydbox replay --board-heap: the firmware from its ROMFS image in the MicroPython VM with a heap
budget for the firmware alone; same report as CPython plus a "heap" object."""
import json
import os
import subprocess
import sys

import pytest

from tools.trace.replay import ReplayError, image_for, replay_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACE = os.path.join(ROOT, "tests", "traces", "commute.jsonl.gz")


def test_board_heap_report_is_the_cpython_report_plus_heap():
    ref = replay_trace(TRACE, "cpython")
    rep = replay_trace(TRACE, "micropython", board_heap="192K")
    heap = rep.pop("heap")
    assert json.dumps(rep, sort_keys=True) == json.dumps(ref, sort_keys=True)
    assert heap["limit_bytes"] == 192 * 1024
    assert 40 * 1024 < heap["peak_bytes"] <= heap["limit_bytes"]
    assert heap["image_bytes"] == os.path.getsize(image_for())
    # the harness's share (image buffer, VM, trace reader) is measured apart, never charged to the firmware
    assert heap["harness_bytes"] > heap["image_bytes"]


def test_a_heap_too_small_for_the_firmware_fails_with_a_clear_error():
    with pytest.raises(ReplayError) as ei:
        replay_trace(TRACE, "micropython", board_heap="48K")
    first = str(ei.value).splitlines()[0]
    assert first.startswith("the firmware does not fit in --board-heap 48K") and "MemoryError" in first


def test_cli_board_heap_needs_the_micropython_runtime():
    exe = os.path.join(os.path.dirname(sys.executable), "paydbox")
    p = subprocess.run([exe, "replay", TRACE, "--board-heap", "96K", "--json"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "paydbox: error: --board-heap needs --runtime micropython"
    p = subprocess.run([exe, "replay", TRACE, "--runtime", "micropython", "--board-heap", "lots"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--board-heap: bad size 'lots'" in p.stderr
