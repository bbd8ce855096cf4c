"""Flash store benchmark (runs the real MicroPython VM): flash erases per driving hour on littlefs2 over
the emulated 4 MiB NOR flash (testbed/flashsim.py, 4 KiB erase blocks), the resulting lifetime at 2 hours
of driving a day (100k erase cycles per block, typical NOR), and the power-cut fault injection with more
cut points than CI.

Workload (tests/mp/wear_run.py): 1 Hz fixes + harsh events (tests/mp/drive_gen.py) -> BlockEncoder
(512-byte blocks) -> Store(max 3 MiB, 8 KiB segments); "online": the agent acknowledges each block at
once (ack-state file rewritten per ack); "offline": no acks (no coverage).
Lifetime figures: "levelled" = all blocks share the erases (littlefs dynamic wear levelling relocates
metadata blocks after block_cycles erases); "hottest block" = the most-erased block's rate over the run,
i.e. the pessimistic bound if wear were not levelled beyond the run length."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NBLOCKS = 1024  # 4 MiB
CYCLES = 100000
HOURS_PER_DAY = 2


def _mp():
    from tools.mpvm import micropython_binary

    return micropython_binary()


def _env():
    return dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "tests", "mp"), ROOT]))


def wear(seconds, ack):
    p = subprocess.run([_mp(), "-X", "heapsize=16M", os.path.join(ROOT, "tests", "mp", "wear_run.py"),
                        str(seconds),
                        str(NBLOCKS), "8192", str(3 * 1024 * 1024), "1" if ack else "0"], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=3600)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if not line:
        raise RuntimeError("wear_run.py failed: %s %s" % (p.stdout[-1000:], p.stderr[-1000:]))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line[0])}


def powercut(ncuts, workers=2):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_powercut import run_powercut

    results, fails = run_powercut(ncuts=ncuts, workers=workers, seconds=1800, seed=5, timeout=7200)
    return results, fails


def run(quick=False):
    res = {}
    hours = 1 if quick else 8
    for label, ack in (("online", True), ("offline", False)):
        w = wear(3600 * hours, ack)
        per_h = w["erases"] / hours
        hot_h = w["max_block_erases"] / hours
        res["%s: blocks appended per driving hour" % label] = round(w["appends"] / hours, 1)
        res["%s: flash erases per driving hour" % label] = round(per_h, 1)
        res["%s: hottest block erases per driving hour" % label] = round(hot_h, 2)
        res["%s: bytes programmed per driving hour" % label] = int(w["programmed"] / hours)
        years = NBLOCKS * CYCLES / per_h / HOURS_PER_DAY / 365.0
        res["%s: 4 MiB flash lifetime at 2 h/day, levelled (years)" % label] = round(years, 0)
        res["%s: lifetime if the hottest block were never relieved (years)" % label] = round(
            CYCLES / max(hot_h, 1e-9) / HOURS_PER_DAY / 365.0, 1)
    ncuts = 300 if quick else 5000
    results, fails = powercut(ncuts)
    res["power cuts injected"] = sum(int(r["cuts"]) for r in results)
    res["power cuts with a failure"] = len(fails)
    res["power-cut run: records per replay"] = int(results[0]["records"])
    res["power-cut run: blocks per replay"] = int(results[0]["blocks"])
    res["power-cut run: cuts inside an append"] = sum(int(r["cuts_in_append"]) for r in results)
    if fails:
        res["first failures"] = "; ".join(fails[:5])
    from test_powercut import run_powercut

    ev_cuts = 200 if quick else 1000
    results, fails = run_powercut(ncuts=ev_cuts, workers=2, seconds=1200, seed=6, timeout=7200, mode="evict")
    res["power cuts injected while evicting (6 KiB store)"] = sum(int(r["cuts"]) for r in results)
    res["power cuts while evicting with a failure"] = len(fails)
    res["blocks evicted per replay (6 KiB store)"] = int(results[0]["evicted_blocks"])
    return res


def main():
    quick = "--quick" in sys.argv
    for k, v in run(quick).items():
        print("%-68s %s" % (k, v))


if __name__ == "__main__":
    main()
