"""Power-cut fault injection under the real MicroPython VM (tests/mp/powercut_run.py).

A 20-minute drive (1 Hz positions + harsh events, ~1250 records) is encoded with firmware.codec and
appended to firmware.store on littlefs2 (vfs.VfsLfs2) over the emulated NOR flash testbed/flashsim.py; power
is cut at 1000 distinct points spread over every byte programmed (torn writes, interrupted erases).
After each cut the store must mount, return every committed block intact, never repeat a sequence
number, and take new blocks. Two VM processes share the cut points. A second run uses a store too small
for the drive (8 KiB), so cuts also strike evictions and compactions: a block may then be missing only if
the uncut run evicted it at or before the interrupted operation."""
import os
import re
import subprocess

from conftest import ROOT
from tools.mpvm import micropython_binary

NCUTS = 1000
WORKERS = 2
SECONDS = 1200


def run_powercut(ncuts=NCUTS, workers=WORKERS, seconds=SECONDS, seed=3, timeout=900, mode="normal"):
    exe = micropython_binary()
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "tests", "mp"), ROOT]))
    script = os.path.join(ROOT, "tests", "mp", "powercut_run.py")
    procs = [
        subprocess.Popen([exe, "-X", "heapsize=8M", script, str(ncuts), str(w), str(workers), str(seconds),
                          str(seed), mode], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for w in range(workers)
    ]
    fails = []
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        fails += [ln for ln in out.splitlines() if ln.startswith("FAIL ")]
        res = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        assert p.returncode == 0 and res, "powercut_run.py crashed (exit %s):\n%s\n%s" % (
            p.returncode, out[-2000:], err[-2000:])
        results.append(dict(re.findall(r"(\w+)=(\d+)", res[0])))
    return results, fails


def test_power_cuts_lose_nothing_committed():
    results, fails = run_powercut()
    assert not fails, "%d of %d cut points failed:\n%s" % (len(fails), NCUTS, "\n".join(fails[:30]))
    cuts = sum(int(r["cuts"]) for r in results)
    assert cuts == NCUTS
    r = results[0]
    # the workload really is a drive with many appends, and most cuts strike inside an append
    assert int(r["records"]) > 1000 and int(r["blocks"]) > 50
    assert sum(int(x["cuts_in_append"]) for x in results) > NCUTS // 2


def test_power_cuts_during_eviction():
    results, fails = run_powercut(ncuts=300, seed=4, mode="evict")
    assert not fails, "%d of 300 cut points failed:\n%s" % (len(fails), "\n".join(fails[:30]))
    assert sum(int(r["cuts"]) for r in results) == 300
    assert int(results[0]["evicted_blocks"]) >= 10, "the run must really evict"
