# Supervisor fault injection (firmware/runner.py + firmware/app.py), MicroPython and CPython: the
# bundled drive with I2C errors, an accelerometer that vanishes and comes back (registers lost),
# garbage bursts on the GNSS UART, and a flash that fills up (real littlefs, MicroPython). In each
# case the loop never raises, the box keeps recording, and the billed distance matches the truth.
import errno
import os

from firmware.config import Config
from firmware.replay_main import replay_board, supply_step
from firmware.runner import Runner
from hw.replay import ReplaySession
from mptest import IS_MICROPYTHON, assert_eq, skip

TRACE = "tests/traces/commute.jsonl.gz"
# ground truth of the bundled drive (its truth lines: trip and event records)
TRUE_DIST_M = 3178.068
TRUE_EVENTS = (("harsh_accel", 115.64, 118.22), ("harsh_brake", 250.62, 251.61),
               ("harsh_corner_left", 375.14, 381.09))

_N = [0]
# this run's own paths: the CPython and MicroPython runs of a script may run at once (pytest -n)
_TAG = "".join("%02x" % b for b in os.urandom(4))


def _rmtree(p):
    try:
        names = os.listdir(p)
    except OSError:
        return
    for n in names:
        q = p + "/" + n
        try:
            os.remove(q)
        except OSError:
            _rmtree(q)
    os.rmdir(p)


def _fresh(base="/tmp"):
    _N[0] += 1
    d = base + "/paydbox_mp_sup_%s_%d" % (_TAG, _N[0])
    _rmtree(d)
    os.mkdir(d)
    return d


def drive(fs_root, at=None, wrap=None):
    """Replay the bundled drive through the Runner; at(t_ms, sess, board) runs before each pass."""
    sess = ReplaySession(TRACE)
    board = replay_board(sess, fs_root)
    if wrap is not None:
        wrap(board)
    runner = Runner(board, Config(None), overrides={"gnss_baud": sess.gnss_uart.baudrate})
    runner.power_on()
    t = 0
    while not sess.done:
        t += 100
        sess.advance(t)
        if at is not None:
            at(t, sess, board)
        if supply_step(runner, sess):
            runner.step()
    box = runner.box
    runner.power_off()
    return runner.summaries[-1], box


def check_billing_and_events(s, what):
    d = s["odometer_mm"] / 1000
    if abs(d - TRUE_DIST_M) / TRUE_DIST_M >= 0.005:
        raise AssertionError("%s: odometer %.1f m vs true %.1f m" % (what, d, TRUE_DIST_M))
    assert_eq(len(s["trips"]), 1, what + " trips")
    got = [(e["type"], e["t_ms"] / 1000) for e in s["trips"][0]["events"]]
    for kind, a, b in TRUE_EVENTS:
        if not [1 for k, t in got if k == kind and a - 2 <= t <= b + 2]:
            raise AssertionError("%s: %s in %.1f..%.1f s not detected (got %r)" % (what, kind, a, b, got))


def no_heap_between(t0, t1, *methods):
    """A fault window for drive(): each (class, name) raises MemoryError from box time t0 to t1.
    Returns (at, calls, restore): drive's at(), the count of failed calls in calls[0], and restore()
    (call it in a finally: the class keeps the raising method otherwise)."""
    real = [(c, n, getattr(c, n)) for c, n in methods]
    calls = [0]

    def no_heap(self, *args):
        calls[0] += 1
        raise MemoryError("no heap")

    def at(t, sess, board):
        for c, n, f in real:
            setattr(c, n, no_heap if t0 <= t < t1 else f)

    def restore():
        for c, n, f in real:
            setattr(c, n, f)

    return at, calls, restore


def reasons(s):
    return [t["reason"] for t in s["tamper"]]


class FlakyI2C:
    """I2C bus whose transfers fail with EIO every other call while `bad` is set (a loose connector)."""

    def __init__(self, bus):
        self.bus = bus
        self.bad = 0
        self.calls = 0
        self.failed = 0

    def _maybe_fail(self):
        self.calls += 1
        if self.bad and self.calls % 2:
            self.failed += 1
            raise OSError(errno.EIO, "EIO")

    def readfrom_mem_into(self, addr, memaddr, buf):
        self._maybe_fail()
        return self.bus.readfrom_mem_into(addr, memaddr, buf)

    def writeto_mem(self, addr, memaddr, buf):
        self._maybe_fail()
        return self.bus.writeto_mem(addr, memaddr, buf)


def test_i2c_errors_mid_drive():
    flaky = []

    def wrap(board):
        flaky.append(FlakyI2C(board.i2c))
        board.i2c = flaky[0]

    def at(t, sess, board):
        flaky[0].bad = 1 if 150000 <= t < 170000 else 0

    s, box = drive(_fresh(), at, wrap)
    # 20 s of faults, retries backing off 0.1, 0.2, 0.4 ... 6.4 s: about 8 failed transfers, not 200
    if not 5 <= flaky[0].failed <= 10:
        raise AssertionError("%d failed transfers in the 20 s outage (backoff?)" % flaky[0].failed)
    r = reasons(s)
    assert_eq(r.count("accel_fault") >= 1 and r.count("accel_fault") == r.count("accel_restored"), True,
              "each outage reported and closed: %r" % r)
    assert_eq(s["faults"]["i2c_errors"] >= 1, True, "i2c errors counted")
    check_billing_and_events(s, "i2c errors")


def test_accelerometer_vanishes_and_comes_back():
    seen = {}

    def at(t, sess, board):
        m = sess.i2c
        if t == 280000:
            m.present = 0
        elif t == 310000:
            # the chip comes back from a power loss: its registers are at their power-on values
            for r in range(0x1E, 0x40):
                m.regs[r] = 0
            m.regs[0x0F] = 0x33
            m.regs[0x20] = 0x07
            m._update_mode()
            m._fn = 0
            m.present = 1
        elif t == 309900:
            seen["reads_down"] = board_reads(sess)

    def board_reads(sess):
        return sess.i2c.samples_in

    s, box = drive(_fresh(), at)
    tam = [t for t in s["tamper"] if t["reason"] in ("accel_fault", "accel_restored")]
    assert_eq([t["reason"] for t in tam], ["accel_fault", "accel_restored"], "outage records")
    assert_eq(tam[0]["value"], errno.ENODEV, "fault value is the errno")
    # back within the 10 s retry cap after the chip returned at 310 s; value = outage length in ms
    if not (280000 <= tam[0]["t_ms"] <= 280200 and 310000 <= tam[1]["t_ms"] <= 320200):
        raise AssertionError("outage times %r" % tam)
    assert_eq(tam[1]["value"], tam[1]["t_ms"] - tam[0]["t_ms"], "outage length")
    # set up anew: the FIFO collects again (samples enter only with the ODR and FIFO configured)
    if box.accel.reads == 0 or s["faults"]["accel_reinits"] < 1:
        raise AssertionError("accelerometer not set up again: %r" % s["faults"])
    if sess_samples_after(box) <= 0:
        raise AssertionError("no samples after the return")
    check_billing_and_events(s, "accelerometer outage")


def sess_samples_after(box):
    return box.accel.count + box.accel.reads


def test_gnss_uart_garbage_bursts():
    clean, _ = drive(_fresh())
    state = {"seed": 7, "bursts": 0}

    def at(t, sess, board):
        # a 64-byte burst of noise every 10 s, half a second after the epoch (the line is idle then)
        if t % 10000 == 500:
            b = bytearray(64)
            for i in range(64):
                state["seed"] = state["seed"] * 1103515245 + 12345 & 0x7FFFFFFF
                b[i] = state["seed"] >> 16 & 0xFF
            sess.gnss_uart._queue(t, bytes(b))
            state["bursts"] += 1

    s, _ = drive(_fresh(), at)
    if state["bursts"] < 40:
        raise AssertionError("only %d bursts" % state["bursts"])
    g = s["gnss"]
    if g["junk_bytes"] + g["bad_checksum"] + g["malformed"] + g["too_long"] == 0:
        raise AssertionError("garbage not seen by the parser: %r" % g)
    # GNSS was fine between the bursts: the billed distance is the clean run's, to the millimetre
    assert_eq(s["odometer_mm"], clean["odometer_mm"], "odometer with garbage bursts")
    assert_eq(g["fixes"], clean["gnss"]["fixes"], "fixes")
    check_billing_and_events(s, "gnss garbage")


def test_flash_full_then_freed():
    if not IS_MICROPYTHON:
        skip("needs littlefs (vfs.VfsLfs2), which only the MicroPython VM has")
    import vfs

    from testbed.blockdev import RAMBlockDevice

    bdev = RAMBlockDevice(512, 320)  # small blocks: files outgrow littlefs inline storage
    vfs.VfsLfs2.mkfs(bdev)
    mnt = "/pdfull%d" % _N[0]
    vfs.mount(vfs.VfsLfs2(bdev), mnt)
    root = mnt + "/box"
    os.mkdir(root)
    st = {"full": 0, "freed": 0}

    def at(t, sess, board):
        if t == 100000:  # something else fills the flash to the last byte
            f = open(mnt + "/ballast", "wb")
            chunk = bytes(512)
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError as e:
                assert_eq(e.args[0], 28, "ballast stops at ENOSPC (28)")
            try:
                f.close()
            except OSError:
                pass
            st["full"] = 1
        elif t == 250000:
            os.remove(mnt + "/ballast")
            st["freed"] = 1

    try:
        s, box = drive(root, at)
    finally:
        vfs.umount(mnt)
    assert_eq(st["full"] and st["freed"], 1, "flash filled and freed")
    f = s["faults"]
    if f["store_errors"] < 1:
        raise AssertionError("the store never saw the full flash: %r" % f)
    assert_eq(f["blocks_lost"], 0, "blocks lost")
    assert_eq(box._unstored, [], "blocks left in RAM")
    assert_eq("store_fault" in reasons(s), True, "store_fault reported")
    check_billing_and_events(s, "flash full")
    # every record reached the store once the flash had room again: seqs contiguous from 0
    from firmware import decoder

    vfs.mount(vfs.VfsLfs2(bdev), mnt)
    try:
        from firmware.store import Store

        store = Store(root + "/store", 1 << 20, 32768)
        seqs = []
        for b in store.peek(10000):
            for r in decoder.decode_block(b[3])[1]:
                seqs.append(r["seq"])
    finally:
        vfs.umount(mnt)
    seqs.sort()
    assert_eq(seqs, list(range(len(seqs))), "stored seqs contiguous")
    assert_eq(len(seqs), s["records"]["count"], "every record stored")


def test_no_heap_for_the_store_index():
    # a MemoryError from the store (no heap for its index, raised before anything is written) is a
    # store fault like a full flash: the blocks wait in RAM, go out once there is heap, none is lost
    from firmware.store import Store

    at, calls, restore = no_heap_between(100000, 160000, (Store, "_room_for_row"))
    root = _fresh()
    try:
        s, box = drive(root, at)
    finally:
        restore()
    if calls[0] < 1:
        raise AssertionError("no block was appended during the outage")
    f = s["faults"]
    assert_eq(f["store_errors"] >= 1 and f["blocks_lost"] == 0 and f["loop_faults"] == 0, True,
              "faults %r" % f)
    assert_eq(box._unstored, [], "blocks left in RAM")
    assert_eq("store_fault" in reasons(s), True, "store_fault reported")
    check_billing_and_events(s, "no heap for the index")
    from firmware import decoder

    seqs = []
    for b in Store(root + "/store", 1 << 20, 32768).peek(10000):
        for r in decoder.decode_block(b[3])[1]:
            seqs.append(r["seq"])
    seqs.sort()
    assert_eq(seqs, list(range(len(seqs))), "stored seqs contiguous")
    assert_eq(len(seqs), s["records"]["count"], "every record stored")


def test_no_heap_for_calibration():
    # calibration's maths with the heap full (the MemoryErrors a 99K board saw, inside the GNSS
    # parser's fix callback): a motion fault, counted and reported; the fix still reaches the
    # odometer and the trip, and the rest of the UART read the parser, so the billed km and the
    # positions are those of the same drive without the fault
    from firmware.calib import LagCalib

    at, calls, restore = no_heap_between(20000, 400000, (LagCalib, "solve"), (LagCalib, "pair"))
    clean, _ = drive(_fresh())
    try:
        s, box = drive(_fresh(), at)
    finally:
        restore()
    if calls[0] < 100:
        raise AssertionError("calibration was called %d times in the fault window" % calls[0])
    f = s["faults"]
    assert_eq(f["motion_faults"], calls[0], "every motion fault counted")
    assert_eq(f["loop_faults"], 0, "no fault left the motion guard")
    assert_eq(reasons(s).count("motion_fault"), 3, "the first three reported")
    d = s["odometer_mm"] / 1000
    if abs(d - TRUE_DIST_M) / TRUE_DIST_M >= 0.005:
        raise AssertionError("odometer %.1f m vs true %.1f m" % (d, TRUE_DIST_M))
    assert_eq(s["odometer_mm"], clean["odometer_mm"], "billed distance unchanged by the fault")
    assert_eq(len(s["trips"]), 1, "trips")
    assert_eq(s["trips"][0]["distance_m"], clean["trips"][0]["distance_m"], "trip distance")
    assert_eq(s["records"]["pos"], clean["records"]["pos"], "positions recorded")


def test_no_heap_for_the_state_save():
    # the periodic state save (odometer and motion state to flash) with the heap full: a state error,
    # counted, the next save tries again; no loop fault, the km as without the fault
    from firmware.odometer import Odometer

    at, calls, restore = no_heap_between(30000, 300000, (Odometer, "state"))
    try:
        s, box = drive(_fresh(), at)
    finally:
        restore()
    if calls[0] < 1:
        raise AssertionError("no state save in the fault window")
    f = s["faults"]
    assert_eq(f["state_errors"], calls[0], "every failed save counted")
    assert_eq(f["loop_faults"], 0, "no loop fault")
    check_billing_and_events(s, "no heap for the state save")
