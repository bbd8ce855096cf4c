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


# The heap CI holds the firmware to (`paydbox replay --board-heap`). The 3-hour 1 Hz drive is held to
# the issue-13 target, 96K (its smallest heap today: 96K, 95K fails: no room for new code without a
# cut elsewhere). The bundled drive (100 Hz accelerometer) does not fit 96K yet: its smallest heap
# (123K before issue-14's power management, 127K after) plus 8 KiB then; docs/BENCHMARKS.md and
# docs/heap.md have the figures and what stands between it and 96K.
# Lower them as the heap work goes on; raising one is the lead's call, with the figure in the docs.
CI_BOARD_HEAP_BUNDLED = "132K"
CI_BOARD_HEAP_3H = "96K"


def _same_json(rep, ref):
    return json.dumps(rep, sort_keys=True) == json.dumps(ref, sort_keys=True)


def test_bundled_drive_fits_the_ci_board_heap():
    ref = replay_trace(TRACE, "cpython")
    rep = replay_trace(TRACE, "micropython", board_heap=CI_BOARD_HEAP_BUNDLED)
    heap = rep.pop("heap")
    assert _same_json(rep, ref)
    assert heap["peak_bytes"] <= heap["limit_bytes"]


def test_three_hour_drive_fits_the_ci_board_heap(tmp_path):
    # 3 h at 1 Hz GNSS, 72 km/h north-east, ignition on, no accelerometer (tools/bench/bench_firmware.py):
    # what grows with a drive's length (store index, trip accumulators) without 100 Hz samples to play
    from tools.bench.bench_firmware import long_drive

    path = long_drive(str(tmp_path / "drive_3h_1hz.jsonl.gz"), 3 * 3600)
    ref = replay_trace(path, "cpython")
    # the truth of the simulated drive: one trip, every fix accepted, 20 m/s for its duration
    (trip,) = ref["trips"]
    assert ref["gnss"]["fixes"] == 3 * 3600 and ref["odometer"]["accepted"] == 3 * 3600
    assert abs(trip["distance_m"] - 20.0 * trip["duration_s"]) < 0.001 * trip["distance_m"]
    assert ref["records"]["blocks"] > 100  # a long drive: the store index holds many blocks
    rep = replay_trace(path, "micropython", board_heap=CI_BOARD_HEAP_3H)
    heap = rep.pop("heap")
    assert _same_json(rep, ref)
    assert heap["peak_bytes"] <= heap["limit_bytes"]


def test_a_heap_too_small_for_the_firmware_fails_with_a_clear_error():
    with pytest.raises(ReplayError) as ei:
        replay_trace(TRACE, "micropython", board_heap="48K")
    first = str(ei.value).splitlines()[0]
    assert first.startswith("the firmware does not fit in --board-heap 48K") and "MemoryError" in first


def test_cli_board_heap_needs_the_micropython_runtime():
    exe = os.path.join(os.path.dirname(sys.executable), "paydbox")
    p = subprocess.run([exe, "replay", TRACE, "--board-heap", "96K", "--json"], capture_output=True,
                       text=True)
    assert (p.returncode == 2
            and p.stderr.strip() == "paydbox: error: --board-heap needs --runtime micropython")
    p = subprocess.run([exe, "replay", TRACE, "--runtime", "micropython", "--board-heap", "lots"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--board-heap: bad size 'lots'" in p.stderr
