# Replay session (hw/replay.py): GNSS UART timing and chunking, trace errors, power; MicroPython + CPython.
import binascii
import json
import os

from hw.replay import ReplaySession, TraceError
from mptest import assert_eq, assert_raises, heap_locked
from tools.sim.nmea_gen import sentence

_N = [0]
# this run's own paths: the CPython and MicroPython runs of a script may run at once (pytest -n)
_TAG = "".join("%02x" % b for b in os.urandom(4))


def _trace(lines, baud=9600, header=None, raw_lines=None):
    _N[0] += 1
    path = "/tmp/paydbox_mp_replay_%s_%d.jsonl" % (_TAG, _N[0])
    h = {"format": "paydbox-trace", "version": 1, "device": {"id": "t"}, "duration_s": 5.0,
         "gnss": {"baud": baud}}
    if header:
        h.update(header)
    f = open(path, "w")
    f.write(json.dumps(h) + "\n")
    for o in lines:
        f.write(json.dumps(o) + "\n")
    for r in raw_lines or ():
        f.write(r + "\n")
    f.close()
    return path


def _sentence(i):
    body = "GPGGA,%06d.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,," % i
    return sentence(body).decode()


def _burst(n):
    s = ""
    i = 0
    while len(s) < n:
        s += _sentence(i)
        i += 1
    return s


def _drain(s, step_ms, until_ms, baud):
    """Reads every step until until_ms. -> (bytes, read sizes)."""
    got = bytearray()
    sizes = []
    t = s.clock.now
    while t <= until_ms:
        s.advance(t)
        n = s.gnss_uart.any()
        if n:
            b = s.gnss_uart.read()
            assert_eq(len(b), n, "read returns what any() said")
            got.extend(b)
            sizes.append(len(b))
        t += step_ms
    return bytes(got), sizes


def test_never_faster_than_baud():
    data = _burst(2000)
    s = ReplaySession(_trace([{"t": 1.0, "s": "gnss", "d": data}]))
    got = bytearray()
    for t in range(0, 4000):
        s.advance(t)
        b = s.gnss_uart.read()
        if b:
            got.extend(b)
        # bytes fully on the wire by t: (t - 1000) ms * 9600 bit/s / 10 bit
        limit = 0 if t < 1000 else (t - 1000) * 960 // 1000
        if len(got) > limit:
            raise AssertionError("at %d ms %d bytes delivered, wire allows %d" % (t, len(got), limit))
    assert_eq(bytes(got), data.encode(), "all bytes, in order")
    assert s.done


def test_back_to_back_lines_queue_on_the_wire():
    a = _burst(1500)  # 1.56 s on the wire at 9600
    b = _sentence(99)
    s = ReplaySession(_trace([{"t": 0.0, "s": "gnss", "d": a}, {"t": 1.0, "s": "gnss", "d": b}]))
    got, _ = _drain(s, 10, 1500, 9600)
    assert len(got) < len(a), "second line cannot overtake the first"
    got2, _ = _drain(s, 10, 3000, 9600)
    assert_eq(got + got2, (a + b).encode(), "order kept")


def test_chunks_split_sentences_deterministically():
    data = _burst(3000)
    sizes_by_seed = []
    for seed in (1, 1, 7):
        s = ReplaySession(_trace([{"t": 0.0, "s": "gnss", "d": data}], baud=115200), chunk_seed=seed)
        got, sizes = _drain(s, 1, 400, 115200)
        assert_eq(got, data.encode(), "bytes")
        sizes_by_seed.append(sizes)
        distinct = {}
        for k in sizes:
            distinct[k] = 1
        assert len(distinct) >= 5, "chunk sizes vary: %r" % (sizes[:20],)
    assert_eq(sizes_by_seed[0], sizes_by_seed[1], "same seed, same chunks")
    assert sizes_by_seed[0] != sizes_by_seed[2], "another seed, other chunks"
    # sentences are split across reads: some read does not end at a line end
    ends = 0
    pos = 0
    for k in sizes_by_seed[0]:
        pos += k
        if data[pos - 1] != "\n":
            ends += 1
    assert ends > 10, "sentences split across reads"


def test_binary_and_nul_bytes():
    raw = b"\x00\xb5\x62\x01\x07\x00$GPRMC,,V,,,,,,,,,,N*53\r\n\xff\r"
    s = ReplaySession(_trace([{"t": 0.25, "s": "gnss", "b64": binascii.b2a_base64(raw).decode().strip()}]))
    got, _ = _drain(s, 5, 500, 9600)
    assert_eq(got, raw, "b64 bytes exact")


def _readinto(u, buf):
    return u.readinto(buf)


def test_readinto_heap_locked_and_none_when_empty():
    data = _burst(300)
    s = ReplaySession(_trace([{"t": 0.0, "s": "gnss", "d": data}], baud=115200))
    buf = bytearray(64)
    assert_eq(s.gnss_uart.readinto(buf), None, "nothing yet")
    s.advance(100)
    got = bytearray()
    while True:
        n = heap_locked(_readinto, s.gnss_uart, buf)
        if not n:
            break
        got.extend(buf[:n])
    assert_eq(bytes(got), data.encode(), "readinto bytes")
    assert_eq(s.gnss_uart.read(), None, "read() None when empty")


def test_rx_overflow_counts_dropped_bytes():
    data = _burst(1000)
    s = ReplaySession(_trace([{"t": 0.0, "s": "gnss", "d": data}], baud=115200), rxbuf=256)
    s.advance(1000)
    assert_eq(s.gnss_uart.any(), 256, "ring full")
    assert_eq(s.gnss_uart.overflows, len(data) - 256, "dropped")


def test_power_and_accel_absent():
    s = ReplaySession(_trace([{"t": 0.0, "s": "gnss", "d": "x\r\n"}]))
    assert_eq((s.power.recorded, s.power.ignition(), s.power.supply_mv()), (0, 1, 12600), "defaults")
    e = assert_raises(OSError, s.i2c.readfrom_mem_into, 0x18, 0x0F, bytearray(1))
    assert_eq(e.args[0], 19, "ENODEV")
    p = _trace([{"t": 1.0, "s": "power", "mv": 12400, "ign": 1},
                {"t": 2.0, "s": "power", "mv": 11900, "ign": 0}],
               header={"power": {"nominal_mv": 12000}})
    s = ReplaySession(p)
    assert_eq(s.power.supply_mv(), 12000, "nominal before the first line")
    s.advance(1500)
    assert_eq((s.power.ignition(), s.power.supply_mv()), (1, 12400), "first")
    s.advance(2000)
    assert_eq((s.power.ignition(), s.power.supply_mv()), (0, 11900), "held from t")
    assert s.done
    assert_eq(s.duration_ms, 5000, "duration from the header")
    assert_raises(ValueError, s.advance, 10)


def _replay_all(p):
    s = ReplaySession(p)
    s.advance(10000)


def test_malformed_traces_name_line_and_field():
    p = _trace([])
    f = open(p, "w")
    f.write('{"format": "other", "version": 1}\n')
    f.close()
    e = assert_raises(TraceError, ReplaySession, p)
    assert "'format'" in str(e), str(e)
    f = open(p, "w")
    f.write('{"format": "paydbox-trace", "version": 9}\n')
    f.close()
    e = assert_raises(TraceError, ReplaySession, p)
    assert "'version'" in str(e), str(e)
    p = _trace([{"t": 0.0, "s": "gnss", "d": "a"}], raw_lines=['{"t": 0.5, "s": "gnss"'])
    e = assert_raises(TraceError, _replay_all, p)
    assert "line 3" in str(e), str(e)
    p = _trace([{"t": 2.0, "s": "gnss", "d": "a"}, {"t": 1.0, "s": "gnss", "d": "b"}])
    e = assert_raises(TraceError, _replay_all, p)
    assert "line 3" in str(e) and "'t'" in str(e), str(e)
    p = _trace([{"t": 0.0, "s": "accel", "rate": 100, "mg": [[1, 2]]}], header={"accel": {"chip": "lis3dh"}})
    e = assert_raises(TraceError, _replay_all, p)
    assert "'mg'" in str(e) and "line 2" in str(e), str(e)


def test_ram_block_device_protocol():
    # testbed/blockdev.py (test helper shared by the storage tests): extended block protocol + littlefs
    from testbed.blockdev import RAMBlockDevice

    bd = RAMBlockDevice(512, 16)
    assert_eq((bd.ioctl(4, 0), bd.ioctl(5, 0)), (16, 512), "count, size")
    bd.writeblocks(3, b"abcd", 10)
    buf = bytearray(6)
    bd.readblocks(3, buf, 9)
    assert_eq(bytes(buf), b"\xffabcd\xff", "offset read/write")
    bd.ioctl(6, 3)
    bd.readblocks(3, buf, 9)
    assert_eq(bytes(buf), b"\xff" * 6, "erased")
    assert_raises(OSError, bd.readblocks, 16, buf)
    try:
        import vfs
    except ImportError:
        return  # CPython: no littlefs
    vfs.VfsLfs2.mkfs(bd)
    fs = vfs.VfsLfs2(bd)
    f = fs.open("a", "w")
    f.write("hello")
    f.close()
    assert_eq(fs.open("a", "r").read(), "hello", "littlefs on the RAM device")
