"""paydbox replay --board-heap: the firmware from its ROMFS image in the MicroPython VM with a heap
budget for the firmware alone; same report as CPython plus a "heap" object."""
import json
import os
import subprocess
import sys

import pytest

from tools.trace.replay import _MOUNT as _MOUNT_CODE
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
    # the harness's share (image buffer, VM, peers) is measured apart, never charged to the firmware
    assert heap["harness_bytes"] > heap["image_bytes"]
    # and the firmware gets SIZE, not SIZE plus the VM's slack: 4 KiB below its own peak it cannot run
    below = (heap["peak_bytes"] - 4096) // 1024
    with pytest.raises(ReplayError) as ei:
        replay_trace(TRACE, "micropython", board_heap="%dK" % below)
    assert "MemoryError" in str(ei.value).splitlines()[0]


# The heap CI holds the firmware to (`paydbox replay --board-heap`: the harness on the host, the
# firmware given exactly SIZE free bytes). Measured on main after the strings and calib rounds of issue
# 13 (99c28be, 2026-12-02, 5th session), 1 KiB steps: the bundled drive (100 Hz accelerometer) gives
# the CPython report from 92K to 104K (live peak 89536 B; 91K fails at boot, the parser's 752 B
# dict); the 3-hour 1 Hz drive from 79K (live peak 76032 B; 78K differs). Each drive runs at the
# issue-13 target, 96K, and at a lower limit that holds what was won (2-3K above the edge: the edge
# moves by about 1K with the layout, a few bytes of code elsewhere).
# If a change that adds names fails these by ~14 KB: the replay's modules are ~40 names below the
# seventh qstr pool (docs/heap.md, "Strings and the calibration's floats").
# docs/heap.md has the figures and what stands between them and 64K.
# Lower them as the heap work goes on; raising one is the lead's call, with the figure in the docs.
CI_BOARD_HEAP_BUNDLED = ("94K", "96K")
CI_BOARD_HEAP_3H = ("82K", "96K")
# A crash (the simulator's "crash" drive, 198 s, 100 Hz accelerometer): the crash record's trace,
# block encoder and models come on top of the drive's heap at once. It gives the CPython report at
# 118K-150K (live peak 95296 B; 116K and lower lose it: the edge is chaotic), held to 122K.
CI_BOARD_HEAP_CRASH = "122K"


def _same_json(rep, ref):
    return json.dumps(rep, sort_keys=True) == json.dumps(ref, sort_keys=True)


@pytest.mark.parametrize("size", CI_BOARD_HEAP_BUNDLED)
def test_bundled_drive_fits_the_ci_board_heap(size):
    ref = replay_trace(TRACE, "cpython")
    rep = replay_trace(TRACE, "micropython", board_heap=size)
    heap = rep.pop("heap")
    assert _same_json(rep, ref)
    assert heap["peak_bytes"] <= heap["limit_bytes"]


@pytest.mark.parametrize("size", CI_BOARD_HEAP_3H)
def test_three_hour_drive_fits_the_ci_board_heap(tmp_path, size):
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
    rep = replay_trace(path, "micropython", board_heap=size)
    heap = rep.pop("heap")
    assert _same_json(rep, ref)
    assert heap["peak_bytes"] <= heap["limit_bytes"]


def test_a_crash_fits_the_ci_board_heap(tmp_path):
    from tools.sim.engine import simulate

    path = str(tmp_path / "crash-3.jsonl.gz")
    truth = simulate(path, "crash", seed=3)
    ref = replay_trace(path, "cpython")
    # the truth of the simulated drive: one trip with one crash in it, and the box saw it
    assert len(truth["trips"]) == 1
    crashes = [e for t in ref["trips"] for e in t["events"] if e["type"] == "crash"]
    crashes += [e for e in ref["events"] if e["type"] == "crash"]
    assert len(crashes) == 1
    rep = replay_trace(path, "micropython", board_heap=CI_BOARD_HEAP_CRASH)
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


def test_the_vm_side_peers_allocate_nothing_per_call():
    """--board-heap charges the VM's peers (firmware/replay_main.py) to the harness, measured before
    the firmware loads: that holds only if a call allocates nothing. Under micropython.heap_lock() in
    the VM, each peer call is answered by this test as the host would (protocol in replay_main)."""
    import struct

    from tools.mpvm import micropython_binary

    code = _MOUNT_CODE % image_for() + (
        "import micropython, firmware.replay_main as r\n"
        "p = r._Pipe(); u = r._PipeUART(p, 9600); i2c = r._PipeI2C(p)\n"
        "def calls(buf, b6):\n"  # locals: a global's first store would grow the module's dict
        " micropython.heap_lock()\n"
        " n = u.any(); k = u.readinto(buf, 5); k2 = u.readinto(buf); i2c.readfrom_mem_into(0x18, 0xA8, b6)\n"
        " i2c.writeto_mem(0x18, 0x20, b6); u.write(b6); t = p.ticks_ms() + p.supply_mv() + p.ignition()\n"
        " p.call(0x6B)\n"
        " micropython.heap_unlock()\n"
        " return n, k, k2, t\n"
        "buf = bytearray(16); b6 = bytearray(6)\n"
        "n, k, k2, t = calls(buf, b6)\n"
        "print('\\n@@', n, k, k2, t, bytes(buf[:5]), bytes(b6))\n")
    p = subprocess.Popen([micropython_binary(), "-X", "heapsize=400K", "-c", code],
                         env=dict(os.environ, MICROPYPATH="/rom"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)

    def req():
        return struct.unpack("<BBBBI", p.stdout.read(8))

    def ans(x=0, payload=b"", c=0):
        p.stdin.write(struct.pack("<BBBBII", ord("="), c, 0, 0, x, 0) + payload)

    assert req() == (ord("a"), 0, 0, 0, 0)
    ans(x=7)
    assert req() == (ord("r"), 0, 0, 0, 5)
    ans(x=5, payload=b"$GPGG")  # shorter than the buffer
    assert req() == (ord("r"), 0, 0, 0, 16)
    ans(x=0xFFFFFFFF)  # nothing available: None
    assert req() == (ord("i"), 0x18, 0xA8, 0, 6)
    ans(payload=b"\x01\x02\x03\x04\x05\x06")
    assert req() == (ord("W"), 0x18, 0x20, 0, 6) and p.stdout.read(6) == b"\x01\x02\x03\x04\x05\x06"
    ans()
    assert req() == (ord("w"), 0, 0, 0, 6) and p.stdout.read(6) == b"\x01\x02\x03\x04\x05\x06"
    last = p.stdout.read(8)
    out = p.stdout.read().decode()
    assert last == b"k" + bytes(7), (last + out.encode()).decode("ascii", "replace")
    p.wait()
    assert p.returncode == 0, out
    assert out.split("@@")[-1].split() == ["7", "5", "None", "1", "b'$GPGG'",
                                           "b'\\x01\\x02\\x03\\x04\\x05\\x06'"]


def _vm(code, heap="400K"):
    """Run code in the VM with the firmware's ROMFS image mounted; its stdout (the VM's exit status 0)."""
    from tools.mpvm import micropython_binary

    p = subprocess.run([micropython_binary(), "-X", "heapsize=" + heap, "-c",
                        _MOUNT_CODE % image_for() + code],
                       env=dict(os.environ, MICROPYPATH="/rom"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_the_config_schema_is_in_the_heap_only_while_a_config_uses_it(tmp_path):
    """firmware/config.py loads the schema (firmware/schema.py) and the PIN module for each use and
    unloads them after: what the box holds for a drive is the values. Heap figures from the VM:
    the schema imported and held against the same Config without it."""
    out = _vm(
        "import gc, sys, firmware\n"
        "from firmware.config import Config\n"
        "def mods():\n"
        " return [m for m in ('firmware.schema', 'firmware.pin')\n"
        "         if m in sys.modules or hasattr(firmware, m[9:])]\n"
        "audit = []\n"
        "c = Config.load(%r, on_change=lambda k, o, n: audit.append((k, o, n)))\n"
        "print('load', c.source, mods())\n"
        "print('set', c.set('crash_g', '3.5'), c.set('installer_pin', '4821'), mods())\n"
        "print('audit', audit)\n"
        "c2 = Config.load(%r)\n"
        "print('reload', c2.source, c2.get_str('crash_g'), c2.check_pin('4821'), c2.check_pin('1111'),"
        " c2.export()['crash_g'], mods())\n"
        # heap (the second round: the schema's names are qstrs by then, never freed): the schema
        # held, then unloaded, then a Config without it
        "del c, c2\n"
        "for i in range(2):\n"
        " gc.collect(); a0 = gc.mem_alloc()\n"
        " from firmware import schema\n"
        " gc.collect(); a1 = gc.mem_alloc()\n"
        " del schema; firmware.unload('schema')\n"
        " gc.collect(); a2 = gc.mem_alloc()\n"
        " c = Config(None)\n"
        " gc.collect(); a3 = gc.mem_alloc()\n"
        " del c\n"
        "print('heap', a1 - a0, a2 - a0, a3 - a2, mods())\n"
        % (str(tmp_path / "config.json"), str(tmp_path / "config.json")))
    lines = {ln.split()[0]: ln.split(None, 1)[1] for ln in out.splitlines() if ln.strip()}
    assert lines["load"] == "defaults []"
    assert lines["set"] == "('3.00', '3.50') ('unset', 'set') []"
    assert lines["audit"] == "[('crash_g', '3.00', '3.50'), ('installer_pin', 'unset', 'set')]"
    assert lines["reload"] == "main 3.50 True False 3.50 []"
    held, left, config = (int(x) for x in lines["heap"].split()[:3])
    assert lines["heap"].endswith("[]")
    # held, the schema is ~7.8 KB (with its qstrs in the pool: ~12 KB, the biggest box module);
    # unloaded it leaves nothing; a Config (the 32 values, 1.5 KB) is a fraction of it
    assert held > 6000 and abs(left) <= 64 and config < held // 4, lines["heap"]


def test_the_console_commands_are_in_the_heap_only_while_a_line_runs():
    """On a board the Runner holds a Console (the replay has none): its line reader and PIN lockout
    stay loaded, its commands (firmware/console_cmds.py) are loaded for each line and unloaded after
    the reply. Heap figures from the VM: the commands held against the console without them."""
    out = _vm(
        "import gc, sys, firmware\n"
        "from firmware.config import Config\n"
        "from firmware.console import Console\n"
        "class U:\n"
        " def __init__(self): self.rx = bytearray(); self.tx = bytearray()\n"
        " def any(self): return len(self.rx)\n"
        " def read(self, n):\n"
        "  b = bytes(self.rx[:n]); self.rx = self.rx[n:]; return b\n"
        " def write(self, b): self.tx.extend(b); return len(b)\n"
        "u = U(); c = Config(None)\n"
        "con = Console(u, c, now_ms=lambda: 0, version='9.9')\n"
        "def loaded(): return 'firmware.console_cmds' in sys.modules or hasattr(firmware, 'console_cmds')\n"
        "print('boot', loaded())\n"
        "u.rx.extend(b'!status\\nget crash_g\\n!set crash_g 4\\n')\n"
        "print('lines', con.poll(), loaded())\n"
        "print('tx', bytes(u.tx).decode().replace('\\r', '').replace('\\n', '|'))\n"
        "for i in range(2):\n"
        " gc.collect(); a0 = gc.mem_alloc()\n"
        " from firmware import console_cmds\n"
        " gc.collect(); a1 = gc.mem_alloc()\n"
        " del console_cmds; firmware.unload('console_cmds')\n"
        " gc.collect(); a2 = gc.mem_alloc()\n"
        "print('heap', a1 - a0, a2 - a0, loaded())\n")
    lines = {ln.split()[0]: ln.split(None, 1)[1] for ln in out.splitlines() if ln.strip()}
    assert lines["boot"] == "False" and lines["lines"] == "3 False"
    tx = lines["tx"].split("|")
    assert '"fw": "9.9"' in tx[0] and tx[1] == "key: crash_g" and tx[2] == "value: 3.00"
    assert tx[3].startswith("> {") and '"error": "set needs the installer PIN: login PIN"' in tx[3], tx
    held, left = (int(x) for x in lines["heap"].split()[:2])
    assert held > 2000 and abs(left) <= 64 and lines["heap"].endswith("False"), lines["heap"]
