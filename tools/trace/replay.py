"""paydbox replay: run a trace through the real firmware, under CPython or inside the MicroPython VM.

Both runtimes execute the same module (firmware/replay_main.py), which prints ints and strings; this
host side turns them into the report (seconds, metres, coach sentences), so both give the same JSON.
"""
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from tools.mpvm import micropython_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ReplayError(Exception):
    pass


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
        code = _MOUNT % image_for(src_root) + "import firmware.replay_main as r\nr.main(%r, %r, %r)" % (
            trace, fs_root, json.dumps(config) if config else None)
        env = dict(os.environ, MICROPYPATH="/rom")
        p = subprocess.run([micropython_binary(), "-X", "heapsize=" + heap, "-c", code], cwd=src_root,
                           env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise mp_failure(p.stdout + p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])


def _count_fields():
    from firmware import records

    return [f for f, _ in records.fields("trip_end") if f.startswith("n_")]
def parse_size(text):
    """'96K', '1M', '98304' -> bytes; ReplayError naming the option."""
    t = str(text).strip().upper()
    mult = 1
    if t.endswith("K"):
        mult, t = 1024, t[:-1]
    elif t.endswith("M"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        n = int(t) * mult
    except ValueError:
        raise ReplayError("--board-heap: bad size %r (e.g. 96K, 1M)" % text)
    if n < 16 * 1024:
        raise ReplayError("--board-heap: %r is below 16K" % text)
    return n


def build_image(out_path, src_root=ROOT):
    """The virtual box's ROMFS image: what `paydbox flash --board unix` builds (the manifest modules of
    tools/installer/flash.py compiled by its `build`, packed by its `build_romfs`), the same bytes."""
    from tools.installer import flash as F

    with tempfile.TemporaryDirectory(prefix="paydbox-img-") as d:
        try:
            image = F.build_romfs(F.build("unix", src_root, out_dir=d))
        except F.FlashError as e:
            raise ReplayError("image build failed: %s" % e) from e
    with open(out_path, "wb") as f:
        f.write(image)
    return len(image)


_IMAGES = {}  # (source root, newest mtime of its manifest modules) -> image path


def image_for(src_root=ROOT):
    """The ROMFS image of src_root's manifest modules, built once per state of those files (kept in
    the temp directory): what `paydbox replay --runtime micropython` and the virtual box run."""
    from tools.installer import flash as F

    stamp = max(os.stat(os.path.join(src_root, p)).st_mtime_ns for p in F.source_files("unix", src_root))
    key = (os.path.abspath(src_root), stamp)
    if key not in _IMAGES or not os.path.exists(_IMAGES[key]):
        d = os.path.join(tempfile.gettempdir(), "paydbox-images")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "%s-%d.romfs" % (hashlib.sha1(key[0].encode()).hexdigest()[:12], stamp))
        tmp = path + ".%d.tmp" % os.getpid()
        build_image(tmp, src_root)
        os.replace(tmp, path)
        _IMAGES[key] = path
    return _IMAGES[key]


_MOUNT = ("import sys, vfs\nf = open(%r, 'rb')\nimg = f.read()\nf.close()\nvfs.mount(vfs.VfsRom(img), "
          "'/rom')\nsys.path[:] = ['/rom']\n")


_STEP_MS = 100  # the replay loop's pass (firmware/replay_main.py)
# VM heap beyond --board-heap for the image, the VM and the peers (what is left over is held back in the VM)
_HEAP_SLACK = 64 * 1024


class _VMText(Exception):
    """The VM wrote text where a request was due (args[0]: the bytes read)."""


class _Host:
    """The host end of `paydbox replay --board-heap` (protocol: firmware/replay_main.py, pipe_main):
    the real harness (hw.replay.ReplaySession under CPython) answers the firmware's board calls."""

    def __init__(self, proc, sess):
        self.p = proc
        self.w = proc.stdin
        self.r = proc.stdout
        self.sess = sess

    def _read(self, n):
        out = b""
        while len(out) < n:
            k = self.r.read(n - len(out))
            if not k:
                raise EOFError
            out += k
        return out

    def send(self, kind, c=0, d=0, x=0, y=0, payload=b""):
        self.w.write(struct.pack("<BBBBII", ord(kind), c, d, 0, x & 0xFFFFFFFF, y & 0xFFFFFFFF) + payload)
        self.w.flush()

    def serve(self):
        """Answer the VM's calls until it says the pass is done."""
        sess = self.sess
        u = sess.gnss_uart
        m = sess.i2c
        while True:
            kind, a, b, _c, n = struct.unpack("<BBBBI", self._read(8))
            if kind == 0x6B:  # 'k'
                return
            if kind == 0x61:  # any
                self.send("=", x=u.any())
            elif kind == 0x72 or kind == 0x52:  # readinto(n) / read(n)
                d = u.read(-1 if n == 0xFFFFFFFF else n) if n else None
                if d is None:
                    self.send("=", x=0xFFFFFFFF)
                else:
                    self.send("=", x=len(d), payload=bytes(d))
            elif kind == 0x77:  # write
                u.write(self._read(n))
            elif kind == 0x62:  # init(baudrate=)
                u.init(baudrate=n)
            elif kind == 0x69:  # I2C read
                buf = bytearray(n)
                try:
                    m.readfrom_mem_into(a, b, buf)
                except OSError as e:
                    self.send("=", c=e.args[0] or 5)
                    continue
                self.send("=", payload=bytes(buf))
            elif kind == 0x57:  # I2C write
                data = self._read(n)
                try:
                    m.writeto_mem(a, b, data)
                except OSError as e:
                    self.send("=", c=e.args[0] or 5)
                    continue
                self.send("=")
            elif kind == 0x73:  # sleep
                why = sess.sleep(n, a, b)
                pw = sess.power
                self.send("Z", c=("timer", "ign", "accel").index(why), d=pw.ignition(), x=sess.clock.now,
                          y=pw.supply_mv())
            elif kind == 0x70:  # gnss_power
                sess.gnss_power(a)
            else:  # not a request: the VM is printing (its traceback, on the way out)
                raise _VMText(struct.pack("<BBBBI", kind, a, b, _c, n))


def run_board_heap(path, board_heap, config=None, timeout=3600, src_root=ROOT):
    """The replay with the firmware alone in the VM, run from its ROMFS image, with `board_heap`
    bytes of free heap when it starts. The harness runs on the host (hw.replay under CPython, the
    same models as the CPython replay) and answers the firmware's board calls over the VM's
    stdin/stdout (firmware/replay_main.py, pipe_main); in the VM, the peers' fixed buffers are made
    first and what the VM heap has free beyond board_heap is then held by one block, so the
    firmware gets exactly board_heap free bytes, and its peak is the live heap above that base."""
    if not os.path.exists(path):
        raise ReplayError("trace not found: %s" % path)
    limit = parse_size(board_heap)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from hw.replay import ReplaySession

    with tempfile.TemporaryDirectory(prefix="paydbox-replay-") as tmp:
        trace = _plain_trace(path, tmp)
        img = image_for(src_root)
        image_bytes = os.path.getsize(img)
        fs_root = os.path.join(tmp, "flash")
        os.mkdir(fs_root)
        sess = ReplaySession(trace)
        h = sess.header
        sleeps = "sleep" in h and "power" in h
        code = _MOUNT % img + "import firmware.replay_main as r\nr.pipe_main(%r, %d, %d, %d, %d, %r)" % (
            fs_root, limit, sess.gnss_uart.baudrate, "power" in h, sleeps,
            json.dumps(config) if config else None)
        heap = limit + limit // 32 + image_bytes + _HEAP_SLACK  # the GC's tables take ~1/86 of it
        err = open(os.path.join(tmp, "stderr"), "w+b")
        proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=%d" % heap, "-c", code], cwd=tmp,
                                env=dict(os.environ, MICROPYPATH="/rom"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, bufsize=0)
        host = _Host(proc, sess)
        try:
            try:
                pw = sess.power
                host.send("S", c=pw.ignition(), x=sess.clock.now, y=pw.supply_mv())  # the boot
                host.serve()
                while not sess.done:
                    t = sess.clock.now + _STEP_MS  # a sleep jumped the clock
                    sess.advance(t)
                    host.send("S", c=sess.power.ignition(), x=t, y=sess.power.supply_mv())
                    host.serve()
                host.send("E")
                proc.stdin.close()
                out = proc.stdout.read().decode("utf-8", "replace")
            except (EOFError, BrokenPipeError, _VMText) as e:
                head = e.args[0] if isinstance(e, _VMText) else b""
                out = (head + proc.stdout.read()).decode("utf-8", "replace")
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        errtext = err.read().decode("utf-8", "replace")
        err.close()
        if proc.returncode:
            e = mp_failure(out + errtext)
            if "MemoryError" in str(e).splitlines()[0]:
                raise ReplayError("the firmware does not fit in --board-heap %s: %s" % (board_heap, e))
            raise e
        raw = json.loads(out.strip().splitlines()[-1])
    live = raw.pop("heap_live_peak")
    harness = raw.pop("heap_harness")
    free0 = raw.pop("heap_free_at_start")
    if abs(free0 - limit) > 64:
        raise ReplayError("--board-heap: the firmware started with %d bytes free, not %d" % (free0, limit))
    raw["heap"] = {"limit_bytes": limit, "peak_bytes": live, "image_bytes": image_bytes,
                   "harness_bytes": harness}
    return raw


def format_report(raw, trace, runtime):
    from firmware.coach import coach

    count_fields = _count_fields()

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
            # the trip_end record's own counts (n_<type>), to check against the events list
            # (optional fields, absent when 0: docs/record-format.md)
            "counts": {f[2:]: s.get(f, 0) for f in count_fields},
            "score_note": s.get("score_note", ""),
            "events": [{"type": e["type"], "t": e["t_ms"] / 1000, "dur_s": e["dur_ms"] / 1000,
                        "peak_mg": e["peak_mg"]} for e in s["events"]],
            "coach": coach(summary, "en"), "coach_fr": coach(summary, "fr"),
        })
    rec = raw["records"]
    out = {
        "trace": trace,
        "trips": trips,
        "odometer_m": raw["odometer_mm"] / 1000,
        "records": {"count": rec["count"], "bytes": rec["bytes"], "blocks": rec["blocks"],
                    "fixes": rec["pos"],
                    "bytes_per_fix": round(rec["bytes"] / rec["pos"], 2) if rec["pos"] else None},
        "gnss": raw["gnss"], "odometer": raw["odometer"], "calibration": raw["motion"],
        "store": raw["store"], "boots": raw.get("reboots", 0) + 1,
        # tamper records: unplugged while driving shows as unaccounted_distance (value in mm)
        "tamper": [{"reason": t["reason"], "value": t["value"], "t": t["t_ms"] / 1000}
                   for t in raw["tamper"]],
        # motion events outside any trip (shocks or crashes while parked)
        "events": [{"type": e["type"], "t": e["t_ms"] / 1000, "dur_s": e["dur_ms"] / 1000,
                    "peak_mg": e["peak_mg"]}
                   for e in raw.get("events", ())],
    }
    if "heap" in raw:
        out["heap"] = raw["heap"]
    if raw.get("power"):
        # a trace that models sleep: the power manager's states, wakes and agent shutdowns (paydbox power
        # gives the currents); the log is left out
        out["power"] = {k: v for k, v in raw["power"].items() if k != "log"}
    return out


def replay_trace(path, runtime="cpython", heap="2M", config=None, board_heap=None):
    if board_heap is not None:
        if runtime != "micropython":
            raise ReplayError("--board-heap needs --runtime micropython")
        return format_report(run_board_heap(path, board_heap, config), os.path.basename(path), runtime)
    return format_report(run_raw(path, runtime, heap, config), os.path.basename(path), runtime)


def add_arguments(p):
    p.add_argument("trace", help="trace file (.jsonl or .jsonl.gz)")
    p.add_argument("--runtime", choices=["cpython", "micropython"], default="cpython")
    p.add_argument("--heap", default="2M", help="MicroPython heap size (e.g. 96K)")
    p.add_argument("--board-heap", metavar="SIZE",
                   help="run the firmware from its ROMFS image with SIZE (e.g. 96K) of heap for the firmware "
                        "alone (harness measured apart); adds \"heap\" to the JSON (needs --runtime "
                        "micropython)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args):
    rep = replay_trace(args.trace, args.runtime, args.heap, board_heap=args.board_heap)
    if args.json:
        print(json.dumps(rep, indent=1, sort_keys=True))
        return 0
    print("trace %s (%s): odometer %.3f km, %d records, %d bytes (%s bytes/fix)" % (
        rep["trace"], args.runtime, rep["odometer_m"] / 1000, rep["records"]["count"],
        rep["records"]["bytes"], rep["records"]["bytes_per_fix"]))
    for i, t in enumerate(rep["trips"]):
        print("trip %d: %7.1f s -> %7.1f s  %6.2f km  %5d s  score %3d  events %s" % (
            i + 1, t["start_t"], t["end_t"], t["distance_m"] / 1000, t["duration_s"], t["score"],
            ", ".join("%s@%.1f" % (e["type"], e["t"]) for e in t["events"]) or "-"))
        for line in t["coach"]:
            print("    " + line)
    return 0
