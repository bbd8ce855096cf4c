# Virtual box, MicroPython side: runs the box firmware in the MicroPython unix VM with the box
# directory as its filesystem (VfsPosix), replaying a trace through hw/replay.py in paced time.
# The console and the edge-agent link are TCP connections to the host (tools/virtual_box.py), which
# maps them to pseudo-terminals. Started by the host as:
#   micropython vbox_runner.py PORT BOXDIR TRACE SPEED SOURCE EXIT_AT_END
# SOURCE: 'flashed' (import firmware/ and hw/ from BOXDIR, as deployed by `paydbox flash`, after
# finishing any interrupted install) or 'tree' (the import path the host gave).
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


class MiniBox:
    """Stand-in main loop used when firmware.app.Box cannot be built: drains the GNSS UART through
    firmware.nmea, reads the accelerometer FIFO, answers status. No records, no link traffic."""

    def __init__(self, sess, link_uart, why):
        self.why = why
        self.sess = sess
        self.link_uart = link_uart
        self.gnss_bytes = 0
        self.fix = None
        self._buf = bytearray(512)
        try:
            from firmware.nmea import NMEAParser

            self.parser = NMEAParser(on_fix=self._on_fix)
        except ImportError:
            self.parser = None
        self.accel = None
        try:
            from hw.lis3dh import LIS3DH

            self.accel = LIS3DH(sess.i2c)
        except (ImportError, OSError):
            pass
        self.last_mg = (0, 0, 0)

    def _on_fix(self, fix):
        self.fix = (fix.valid, fix.sats, fix.hdop_x10, fix.lat_e7, fix.lon_e7, fix.speed_mmps)

    def step(self):
        u = self.sess.gnss_uart
        while u.any():
            n = u.readinto(self._buf)
            if not n:
                break
            self.gnss_bytes += n
            if self.parser is not None:
                self.parser.feed(self._buf, n, self.sess.clock.now)
        if self.accel is not None:
            k = self.accel.read_fifo()
            if k:
                xyz = self.accel.xyz_mg
                i = 3 * (k - 1)
                self.last_mg = (xyz[i], xyz[i + 1], xyz[i + 2])
        if self.link_uart is not None and self.link_uart.any():
            self.link_uart.read()

    def status(self):
        f = self.fix or (0, -1, -1, 0, 0, -1)
        x, y, z = self.last_mg
        return {"app": "minimal (%s)" % self.why, "gnss_bytes": self.gnss_bytes, "gnss_fix": f[0], "sats": f[1],
                "hdop_x10": f[2], "accel_ok": 1 if self.accel is not None else 0,
                "accel_mg": "%d,%d,%d" % (x, y, z), "calib": "none", "store_used": 0}

    def shutdown(self):
        pass

    def summary(self):
        return {"app": "minimal", "gnss_bytes": self.gnss_bytes}


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
        try:
            import pdboot

            if pdboot.recover():
                emit({"event": "install_recovered"})
        except ImportError:
            pass
    else:
        while sys.path and sys.path[0].endswith("tools"):  # the script's own directory
            sys.path.pop(0)

    from firmware import VERSION
    from firmware.config import Config
    from firmware.console import Console
    from hw.replay import ReplaySession

    try:
        from firmware.app import Box
    except ImportError as e:
        Box = None
        emit({"event": "warning", "text": "firmware.app not importable: %s" % e})

    console_uart = connect(int(port), "console")
    link_uart = connect(int(port), "link")

    sess = ReplaySession(trace)
    has_power = "power" in sess.header
    state = {"box": None, "reboot": 0}
    cfg = Config.load(boxdir + "/config.json")

    def on_change(key, old, new):
        box = state["box"]
        if box is None:
            return
        rec = {"type": "config", "t_ms": sess.clock.now, "utc_s": -1, "key": key, "old": old, "new": new}
        if hasattr(box, "on_config_change"):
            box.on_config_change(key, old, new)
        elif hasattr(box, "_emit"):
            box._emit(rec)

    cfg.on_change = on_change

    def new_box():
        if Box is not None:
            try:
                return Box(sess.clock, sess.gnss_uart, sess.i2c, sess.power if has_power else None, boxdir,
                           cfg.values(), link_uart=link_uart)
            except Exception as e:  # noqa: BLE001 - report it and keep the console usable
                emit({"event": "warning", "text": "Box() failed: %s: %s" % (type(e).__name__, e)})
                return MiniBox(sess, link_uart, "Box() failed: %s" % e)
        return MiniBox(sess, link_uart, "no firmware.app")

    def status():
        box = state["box"]
        st = {}
        if box is not None and hasattr(box, "status"):
            st = box.status()
        elif box is None:
            st["powered"] = 0
        if box is not None and "gnss_bytes" not in st and hasattr(box, "parser"):
            st["gnss_bytes"] = box.parser.counters.get("sentences", 0)
        if "accel_ok" not in st and "accel" in st:
            st["accel_ok"] = st["accel"]
        st["t_ms"] = sess.clock.now
        st["trace_done"] = 1 if sess.done else 0
        return st

    def calibrate():
        box = state["box"]
        m = getattr(box, "motion", None) if box is not None else None
        if m is None:
            return {"calib": "none", "text": "no accelerometer"}
        if hasattr(m, "start_calibration"):
            m.start_calibration()
        return {"calib": m.calib_state, "calib_quality": m.calib_quality}

    def reboot():
        state["reboot"] = 1

    hooks = {"calibrate": calibrate, "reboot": reboot}
    con = Console(console_uart, cfg, status_provider=status, now_ms=lambda: sess.clock.now, hooks=hooks,
                  version=VERSION, lock_path="pinlock.json")  # wrong-PIN count survives a reboot
    state["box"] = new_box()
    emit({"event": "ready", "version": VERSION, "config": cfg.source, "source": source,
          "app": type(state["box"]).__name__ if state["box"] is not None else "none"})

    cpoll = select.poll()
    cpoll.register(console_uart.s, select.POLLIN)
    t_box = 0
    t0 = time.ticks_ms()
    done_reported = False
    while True:
        t_box += STEP_MS
        sess.advance(t_box)
        box = state["box"]
        if has_power and sess.power.supply_mv() < POWER_OFF_MV:
            if box is not None:
                box.shutdown()
                state["box"] = None
            while sess.gnss_uart.any():  # an unpowered MCU's UART receives nothing
                sess.gnss_uart.read(sess.gnss_uart.any())
        elif box is None:
            state["box"] = new_box()
        elif box is not None:
            box.step()
        con.poll()
        if console_uart.closed:  # the host (tools/virtual_box.py) is gone: power off
            return 0
        if state["reboot"]:
            if state["box"] is not None:
                state["box"].shutdown()
            emit({"event": "reboot"})
            sys.exit(REBOOT_EXIT)
        if sess.done and not done_reported:
            done_reported = True
            box = state["box"]
            if box is not None and hasattr(box, "flush"):
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
                    if state["reboot"] or console_uart.closed:
                        break


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)
