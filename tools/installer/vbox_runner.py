# Virtual box, MicroPython side: runs the box firmware in the MicroPython unix VM with the box
# directory as its filesystem (VfsPosix), replaying a trace through hw/replay.py in paced time.
# The console and the edge-agent link are TCP connections to the host (tools/installer/virtual_box.py), which
# maps them to pseudo-terminals. Started by the host as:
#   micropython vbox_runner.py PORT BOXDIR TRACE SPEED SOURCE EXIT_AT_END
# SOURCE: 'flashed' (import firmware/ and hw/ from BOXDIR, as deployed by `paydbox flash`, after
# finishing any interrupted install), 'image=PATH' (mount the ROMFS image PATH built from the source
# tree's manifest modules and import from it) or 'tree' (the import path the host gave).
# The box is wired by firmware/runner.py (the same composition root as the board and the replay);
# if the firmware cannot be imported or built the VM exits with the traceback on stderr.
# Exit status 75 = reboot requested (the host restarts the VM); 0 = trace finished (EXIT_AT_END).
# Events for the host are JSON lines on stdout.
import json
import os
import select
import socket
import sys
import time

DRAIN_MAX_MS = 120000  # box time allowed for the agent to acknowledge the last blocks
REBOOT_EXIT = 75
STEP_MS = 100  # main-loop period in box time
POWER_OFF_MV = 6000


def emit(ev):
    sys.stdout.write(json.dumps(ev) + "\n")
    try:
        sys.stdout.flush()
    except AttributeError:
        pass


class SockUart:
    """machine.UART subset over a non-blocking TCP socket: any(), read(n), readinto(buf[, n]), write(b)."""

    def __init__(self, sock):
        self.s = sock
        sock.setblocking(False)
        self.rx = bytearray()
        self.closed = False
        self.dropped = 0
        self._poll = select.poll()
        self._poll.register(sock, select.POLLOUT)

    def _fill(self):
        if self.closed:
            return
        try:
            d = self.s.recv(2048)
        except OSError:  # EAGAIN: nothing waiting
            return
        if not d:
            self.closed = True
        else:
            self.rx.extend(d)

    def any(self):
        if len(self.rx) < 2048:
            self._fill()
        return len(self.rx)

    def read(self, n=-1):
        self.any()
        if not self.rx:
            return None
        if n < 0 or n > len(self.rx):
            n = len(self.rx)
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d

    def readinto(self, buf, n=-1):
        self.any()
        if n < 0 or n > len(buf):
            n = len(buf)
        if n > len(self.rx):
            n = len(self.rx)
        if n == 0:
            return None
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def init(self, baudrate=None, **_kw):
        """machine.UART.init: a TCP stream has no baud rate; the setting is kept for status."""
        if baudrate is not None:
            self.baudrate = baudrate

    def write(self, b):
        if self.closed:
            return 0
        mv = memoryview(b)
        sent = 0
        deadline = time.ticks_add(time.ticks_ms(), 1000)
        while sent < len(b):
            try:
                k = self.s.send(mv[sent:])
                sent += k
            except OSError:
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:  # host not reading: the wire drops it
                    self.dropped += len(b) - sent
                    break
                self._poll.poll(10)
        return sent


def connect(port, name):
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    s.send((name + "\n").encode())
    return SockUart(s)


def main(argv):
    port, boxdir, trace, speed_s, source, exit_at_end = argv[:6]
    speed = float(speed_s)
    exit_at_end = exit_at_end == "1"
    os.chdir(boxdir)
    if source == "flashed":
        sys.path[:] = [boxdir, ".frozen"]
        import pdboot  # written by every `paydbox flash`

        if pdboot.recover():
            emit({"event": "install_recovered"})
    elif source.startswith("image="):
        # the ROMFS image of the manifest modules (tools/trace/replay.py build_image), bytecode run in place
        import vfs

        f = open(source[6:], "rb")
        img = f.read()
        f.close()
        vfs.mount(vfs.VfsRom(img), "/rom")
        sys.path[:] = ["/rom", ".frozen"]
        source = "tree"
    else:
        while sys.path and sys.path[0].endswith("installer"):  # the script's own directory
            sys.path.pop(0)

    # no fallback: a firmware that cannot be imported or built ends the VM with its traceback on
    # stderr (the host shows it), never a stand-in box that lets tests pass with a broken app
    from firmware import VERSION
    from firmware.replay_main import replay_board, supply_step
    from firmware.runner import Runner
    from hw.replay import ReplaySession

    console_uart = connect(int(port), "console")
    link_uart = connect(int(port), "link")

    sess = ReplaySession(trace)
    runner = Runner(replay_board(sess, boxdir, link_uart=link_uart, console=console_uart))
    con = runner.console

    def status():
        st = runner.status()
        st["t_ms"] = sess.clock.now
        st["trace_done"] = 1 if sess.done else 0
        return st

    con.status_provider = status
    runner.power_on()
    import firmware

    emit({"event": "ready", "version": VERSION, "config": runner.config.source, "source": source,
          "app": type(runner.box).__name__, "firmware_from": firmware.__file__})

    cpoll = select.poll()
    cpoll.register(console_uart.s, select.POLLIN)
    t_box = 0
    t0 = time.ticks_ms()
    done_reported = False
    while True:
        t_box += STEP_MS
        sess.advance(t_box)
        supply_step(runner, sess)
        runner.step()
        if console_uart.closed:  # the host (tools/installer/virtual_box.py) is gone: power off
            return 0
        if runner.reboot_requested:
            runner.power_off()
            emit({"event": "reboot"})
            sys.exit(REBOOT_EXIT)
        if sess.done and not done_reported:
            done_reported = True
            box = runner.box
            if box is not None:
                box.flush()
            emit({"event": "trace_done", "t_ms": t_box})
            if exit_at_end:
                if box is not None:
                    # the drive is over: ignition off, trip closed, last block committed; then keep
                    # the link running until the agent has acknowledged every block (or give up
                    # after DRAIN_MAX_MS of box time: the store keeps what was not acknowledged)
                    box.shutdown()
                    t_end = t_box + DRAIN_MAX_MS
                    while box.link is not None and box.store.peek(1) and t_box < t_end:
                        t_box += STEP_MS
                        sess.clock.now = t_box
                        box.link.poll(t_box)
                        con.poll()
                        time.sleep_ms(STEP_MS if speed > 0 else 1)
                    left = len(box.store.peek(1000)) if box.link is not None else 0
                    emit({"event": "summary", "summary": box.summary(), "unacked_blocks": left})
                return 0
        if speed > 0:  # pace box time; answer the console while waiting (a terminal feels no lag)
            while True:
                wait = int(t_box / speed) - time.ticks_diff(time.ticks_ms(), t0)
                if wait <= 0:
                    break
                if cpoll.poll(wait):
                    con.poll()
                    if runner.reboot_requested or console_uart.closed:
                        break


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)
