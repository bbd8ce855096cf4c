"""paydbox virtual-box: the real box firmware in the MicroPython VM behind pseudo-terminals.

Run mode (default): `micropython tools/installer/vbox_runner.py` runs the firmware with BOXDIR as its
filesystem, replaying TRACE through hw/replay.py at --speed times real time. The VM's console and
edge-agent link UARTs are TCP connections to this process, which relays each to a host pty (the pty
paths stay the same when the VM restarts: reboot, power cut). When ready it prints one JSON line:
    {"console": "/dev/pts/N", "link": "/dev/pts/M", "dir": BOXDIR, "pid": VM_PID, ...}
Firmware: the one flashed into BOXDIR by `paydbox flash` when BOXDIR has a manifest
(--source flashed: the file copy of boards without a ROMFS partition), else the ROMFS image built
from the source tree's manifest modules, mounted with vfs.VfsRom (--source tree).

REPL mode (--repl): the VM's raw REPL on a pty (socat PTY <-> EXEC micropython, cwd BOXDIR), so
`paydbox flash PTY --board unix` and mpremote deploy into BOXDIR. mpremote's soft reset (Ctrl-D)
ends the VM; the pty is recreated at the same --repl-pty-link for the next session.
"""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from hw.linux import RawPty
from tools.mpvm import micropython_binary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "tools", "installer", "vbox_runner.py")
REBOOT_EXIT = 75


class VirtualBoxError(Exception):
    pass


class _PtyEnd(RawPty):
    """A host pty whose slave path is given to users; the master side is relayed to the VM."""

    def __init__(self, name, link=None):
        RawPty.__init__(self)
        self.name = name
        self.link = link
        if link:
            try:
                os.unlink(link)
            except FileNotFoundError:
                pass
            os.symlink(self.path, link)
        self.sock = None
        self.attached = 0  # VM connections attached so far (one per boot)
        self.pending = b""  # VM -> pty bytes not yet accepted by the pty

    def close(self):
        RawPty.close(self)
        if self.link:
            try:
                if os.path.islink(self.link):
                    os.unlink(self.link)
            except OSError:
                pass


class VirtualBox:
    def __init__(self, trace, boxdir, speed=1.0, link_pty_link=None, console_pty_link=None, source="auto",
                 exit_at_end=False, heapsize="4M", log_path=None, mp_path=None):
        self.trace = os.path.abspath(trace)
        self.boxdir = os.path.abspath(boxdir)
        os.makedirs(self.boxdir, exist_ok=True)
        if source == "auto":
            source = "flashed" if os.path.exists(os.path.join(self.boxdir, "paydbox.json")) else "tree"
        self.source = source
        self.speed = speed
        self.exit_at_end = exit_at_end
        self.heapsize = heapsize
        self.mp_path = mp_path or ROOT
        self.log_path = log_path or os.path.join(self.boxdir, "vbox.log")
        self.ends = {"console": _PtyEnd("console", console_pty_link), "link": _PtyEnd("link", link_pty_link)}
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.proc = None
        self.events = []
        self._cv = threading.Condition()
        self._stop = False
        self._relay = None
        self._reader = None  # the thread reading the VM's events (stdout) until it exits
        self.restarts = 0
        self.auto_restart = True
        self._log = open(self.log_path, "ab")

    # ---- VM process ----
    def _spawn(self):
        env = dict(os.environ)
        env["MICROPYPATH"] = ((self.boxdir if self.source == "flashed" else self.mp_path) + os.pathsep
                              + ".frozen")
        self._log.flush()
        self._log_start = self._log.tell()  # this boot's stderr (a traceback) starts here
        src = self.source
        if src == "tree":  # the same ROMFS image `paydbox replay --board-heap` runs
            src = "image=" + self._image()
        cmd = [micropython_binary(), "-X", "heapsize=" + self.heapsize, RUNNER, str(self.port), self.boxdir,
               self.trace, repr(float(self.speed)), src, "1" if self.exit_at_end else "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, cwd=self.boxdir, env=env)
        attached = {k: e.attached for k, e in self.ends.items()}
        self._reader = threading.Thread(target=self._read_events, args=(self.proc, attached), daemon=True)
        self._reader.start()

    def _read_events(self, proc, attached):
        for line in proc.stdout:
            self._log.write(line)
            self._log.flush()
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cv:
                if ev.get("event") == "ready":
                    # the VM sent its console and link hellos before "ready", but the relay may not have
                    # read them yet: until it has, what a user types on the pty is dropped (no VM attached)
                    self._cv.wait_for(lambda: all(self.ends[k].attached > n for k, n in attached.items())
                                      or self._stop, 30)
                self.events.append(ev)
                self._cv.notify_all()
        rc = proc.wait()
        with self._cv:
            self.events.append({"event": "exit", "code": rc, "pid": proc.pid})
            self._cv.notify_all()
        if rc == REBOOT_EXIT and not self._stop and self.auto_restart:
            self.restarts += 1
            self._spawn()

    def _image(self):
        from tools.trace.replay import ReplayError, image_for

        try:
            return image_for(self.mp_path)
        except ReplayError as e:
            raise VirtualBoxError(str(e))

    def boot_log(self, max_lines=40):
        """The VM's stderr of its last boot (the MicroPython traceback when the firmware failed)."""
        try:
            self._log.flush()
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_start", 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        lines = [ln for ln in text.splitlines() if not ln.startswith("{")]  # JSON lines are events
        return "\n".join(lines[-max_lines:]) or "(no output)"

    def wait_event(self, name, timeout=30, after=0):
        """Wait for the VM event `name` at index >= after in self.events; returns it (or raises)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for ev in self.events[after:]:
                    if ev.get("event") == name:
                        return ev
                    if ev.get("event") == "exit" and name != "exit" and ev.get("code") not in (REBOOT_EXIT,):
                        raise VirtualBoxError("the VM exited (status %s) before %s (log %s):\n%s"
                                              % (ev.get("code"), name, self.log_path, self.boot_log()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise VirtualBoxError("timeout waiting for the VM event %r (log: %s)"
                                          % (name, self.log_path))
                self._cv.wait(left)

    def start(self, timeout=30):
        self._relay = threading.Thread(target=self._relay_loop, daemon=True)
        self._relay.start()
        n = len(self.events)
        self._spawn()
        ev = self.wait_event("ready", timeout, after=n)
        return self.info(ev)

    def info(self, ready=None):
        d = {"console": self.ends["console"].path, "link": self.ends["link"].path, "dir": self.boxdir,
             "pid": self.proc.pid if self.proc else None, "source": self.source, "speed": self.speed}
        for k in ("console", "link"):
            if self.ends[k].link:
                d[k + "_link"] = self.ends[k].link
        if ready:
            d["version"] = ready.get("version")
            d["config"] = ready.get("config")
            d["firmware_from"] = ready.get("firmware_from")
        return d

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def power_cut(self):
        """kill -9 the VM (the ptys stay); call power_on() to boot it again."""
        self.auto_restart = False
        p, reader = self.proc, self._reader
        if p and p.poll() is None:
            p.kill()
            p.wait()
        if reader is not None and reader is not threading.current_thread():
            # its "exit" event is in self.events before power_on() counts them, or power_on() would
            # take this VM's exit (status -9) for the next boot's failure
            reader.join(10)
        time.sleep(0.05)
        self.auto_restart = True

    def power_on(self, timeout=30):
        n = len(self.events)
        if self.source == "auto" or os.path.exists(os.path.join(self.boxdir, "paydbox.json")):
            self.source = "flashed"
        self._spawn()
        return self.wait_event("ready", timeout, after=n)

    def stop(self):
        self._stop = True
        p = self.proc
        if p and p.poll() is None:
            p.terminate()
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            self.server.close()
        except OSError:
            pass
        if self._relay:
            self._relay.join(2)
        for e in self.ends.values():
            e.close()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    # ---- relay: pty master <-> VM socket ----
    def _relay_loop(self):
        pending_hello = {}
        while not self._stop:
            rl = [self.server] + list(pending_hello)
            wl = []
            for e in self.ends.values():
                rl.append(e.master)
                if e.sock is not None:
                    rl.append(e.sock)
                if e.pending:
                    wl.append(e.master)
            try:
                r, w, _ = select.select(rl, wl, [], 0.2)
            except (OSError, ValueError):
                if self._stop:
                    return
                continue
            for fd in r:
                if fd is self.server:
                    try:
                        c, _ = self.server.accept()
                        pending_hello[c] = b""
                    except OSError:
                        pass
                    continue
                if fd in pending_hello:
                    try:
                        d = fd.recv(64)
                    except OSError:
                        d = b""
                    if not d:
                        del pending_hello[fd]
                        fd.close()
                        continue
                    buf = pending_hello[fd] + d
                    if b"\n" in buf:
                        name, rest = buf.split(b"\n", 1)
                        del pending_hello[fd]
                        e = self.ends.get(name.decode(errors="replace"))
                        if e is None:
                            fd.close()
                            continue
                        if e.sock is not None:
                            e.sock.close()
                        e.sock = fd
                        e.pending += rest
                        with self._cv:
                            e.attached += 1
                            self._cv.notify_all()
                    else:
                        pending_hello[fd] = buf
                    continue
                for e in self.ends.values():
                    if fd == e.master:
                        try:
                            d = os.read(e.master, 4096)
                        except (BlockingIOError, OSError):
                            d = b""
                        if d and e.sock is not None:
                            try:
                                e.sock.sendall(d)
                            except OSError:
                                e.sock.close()
                                e.sock = None
                        # no VM attached (power cut): the bytes are lost, as on a dead UART
                    elif fd is e.sock:
                        try:
                            d = e.sock.recv(4096)
                        except OSError:
                            d = b""
                        if not d:
                            e.sock.close()
                            e.sock = None
                        else:
                            e.pending += d
                            if len(e.pending) > 65536:  # nobody reads the pty: drop the oldest
                                e.pending = e.pending[-65536:]
            for e in self.ends.values():
                if e.pending:
                    try:
                        k = os.write(e.master, e.pending)
                        e.pending = e.pending[k:]
                    except (BlockingIOError, OSError):
                        pass


class ReplBox:
    """The VM's raw REPL on a pty (socat), cwd BOXDIR; restarted whenever the VM ends."""

    def __init__(self, boxdir, pty_link, heapsize="4M"):
        if not shutil.which("socat"):
            raise VirtualBoxError("--repl needs socat (apt-get install socat)")
        self.boxdir = os.path.abspath(boxdir)
        os.makedirs(self.boxdir, exist_ok=True)
        self.link = os.path.abspath(pty_link)
        self.heapsize = heapsize
        self.proc = None
        self._stop = False
        self._thread = None
        self.sessions = 0

    def _spawn(self):
        exe = micropython_binary()
        env = dict(os.environ, MICROPYPATH=self.boxdir + os.pathsep + ".frozen")
        cmd = ["socat", "PTY,link=%s,raw,echo=0" % self.link,
               "EXEC:'%s -X heapsize=%s',pty,raw,echo=0,stderr" % (exe, self.heapsize)]
        self.proc = subprocess.Popen(cmd, cwd=self.boxdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.sessions += 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(self.link) and self.vm_pid():
                return
            time.sleep(0.02)
        raise VirtualBoxError("socat did not create %s" % self.link)

    def vm_pid(self):
        """pid of the micropython process under socat (None if not running)."""
        if not self.proc:
            return None
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except (OSError, ValueError):
            return None

    def start(self):
        self._spawn()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return {"repl": self.link, "dir": self.boxdir, "pid": self.vm_pid()}

    def _watch(self):
        while not self._stop:
            p = self.proc
            p.wait()
            if self._stop:
                return
            time.sleep(0.05)
            try:
                self._spawn()
            except VirtualBoxError:
                time.sleep(0.5)

    def wait_ready(self, old_pid=None, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.vm_pid()
            if pid and pid != old_pid and os.path.exists(self.link):
                return pid
            time.sleep(0.02)
        raise VirtualBoxError("the REPL VM did not come back")

    def power_cut(self):
        pid = self.vm_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self):
        self._stop = True
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def add_arguments(p):
    p.add_argument("--trace", help="trace to replay (run mode)")
    p.add_argument("--dir", default="vbox", help="box filesystem directory (default ./vbox)")
    p.add_argument("--link-pty-link", metavar="PATH", help="also make PATH a symlink to the link pty")
    p.add_argument("--console-pty-link", metavar="PATH", help="also make PATH a symlink to the console pty")
    p.add_argument("--speed", type=float, default=1.0,
                   help="time factor (1 = real time, 20 = 20x, 0 = as fast as possible)")
    p.add_argument("--source", choices=("auto", "flashed", "tree"), default="auto",
                   help="firmware flashed into --dir (auto when it has a manifest) or the source tree")
    p.add_argument("--exit-at-end", action="store_true",
                   help="stop when the trace is replayed; print the summary")
    p.add_argument("--repl", action="store_true",
                   help="expose the VM's raw REPL for paydbox flash / mpremote instead")
    p.add_argument("--repl-pty-link", metavar="PATH", help="REPL pty symlink (default DIR.repl)")


def run(args):
    if args.repl:
        link = args.repl_pty_link or os.path.abspath(args.dir).rstrip("/") + ".repl"
        rb = ReplBox(args.dir, link)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        print(json.dumps(rb.start()), flush=True)
        try:
            while True:
                time.sleep(1)
        finally:
            rb.stop()
    if not args.trace:
        raise VirtualBoxError("--trace TRACE is required (or --repl)")
    if not os.path.exists(args.trace):
        raise VirtualBoxError("trace not found: %s" % args.trace)
    vb = VirtualBox(args.trace, args.dir, args.speed, args.link_pty_link, args.console_pty_link, args.source,
                    exit_at_end=args.exit_at_end)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        print(json.dumps(vb.start()), flush=True)
        if args.exit_at_end:
            ev = vb.wait_event("summary", timeout=10 ** 9)
            print(json.dumps(ev["summary"]), flush=True)
            return 0
        while True:
            ev = vb.wait_event("exit", timeout=10 ** 9, after=len(vb.events))
            if ev.get("code") != REBOOT_EXIT:
                return 1 if ev.get("code") else 0
    finally:
        vb.stop()
