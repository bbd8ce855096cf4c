# Link framing and the box side of the link (firmware/framing.py, firmware/link.py), under MicroPython
# and CPython. The agent side here is a minimal in-test peer built on the same framing.
import json
import struct

from firmware import framing
from firmware.framing import FrameDecoder, cobs_decode, cobs_encode, encode_frame
from firmware.link import BoxLink
from mptest import assert_eq, assert_raises, heap_locked


class Rng:
    def __init__(self, seed):
        self.s = seed

    def next(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n


def _payload(rng, n, zeros):
    b = bytearray(n)
    for i in range(n):
        b[i] = 0 if rng.next(100) < zeros else rng.next(256)
    return bytes(b)


def test_cobs_round_trip():
    rng = Rng(7)
    cases = [b"", b"\x00", b"\x00\x00", b"\x01", bytes(range(1, 256)), b"\xff" * 254, b"\xff" * 255,
             b"\xff" * 253 + b"\x00", b"\x00" + b"\x07" * 600]
    for n in (1, 2, 30, 253, 254, 255, 508, 509, 1000):
        cases.append(_payload(rng, n, 10))
        cases.append(_payload(rng, n, 0))
    for c in cases:
        e = cobs_encode(c)
        assert_eq(e.find(b"\x00"), -1, "no zero in COBS")
        assert len(e) <= framing.cobs_max(len(c))
        assert_eq(cobs_decode(e), c, "round trip %d" % len(c))


def test_cobs_malformed():
    assert_raises(ValueError, cobs_decode, b"\x05ab")  # code runs past the end


def _collect():
    got = []

    def on_frame(t, buf, n):
        got.append((t, bytes(buf[1:n])))

    return got, on_frame


def test_decoder_resyncs_after_garbage():
    got, on_frame = _collect()
    d = FrameDecoder()
    f1 = encode_frame(framing.T_CMD, b"hello\x00world")
    f2 = encode_frame(framing.T_ACK, struct.pack("<II", 5, 9))
    bad = bytearray(f1)
    bad[3] ^= 0x10  # bit flip -> CRC error
    stream = b"\x13\x37garbage\x00" + f1 + bytes(bad) + b"\xaa\x00\x00" + f2[:4]
    d.feed(stream, len(stream), on_frame)
    d.feed(f2[4:], len(f2) - 4, on_frame)
    assert_eq(got, [(framing.T_CMD, b"hello\x00world"), (framing.T_ACK, struct.pack("<II", 5, 9))])
    assert_eq(d.crc_errors + d.cobs_errors + d.short >= 2, True, "bad frames counted")


def test_decoder_byte_at_a_time_and_oversize():
    got, on_frame = _collect()
    d = FrameDecoder(64)
    big = encode_frame(framing.T_DATA, b"\x01" * 200)
    ok = encode_frame(framing.T_KEEPALIVE, b"{}")
    s = big + ok
    for i in range(len(s)):
        d.feed(s[i : i + 1], 1, on_frame)
    assert_eq(got, [(framing.T_KEEPALIVE, b"{}")])
    assert_eq(d.oversize, 1)


def _feed_partial(d, data, n):
    d.feed(data, n, None)  # no delimiter: on_frame is never called


def test_decoder_feed_heap_locked():
    d = FrameDecoder()
    data = bytearray(b"\x05abcdefghijklmnopqrstuvwxyz" * 4)
    heap_locked(_feed_partial, d, data, len(data))
    assert_eq(d.n, len(data))


class LoopUart:
    """One direction pair of a UART: write() goes to peer.rx; any/readinto read our rx."""

    def __init__(self):
        self.rx = bytearray()
        self.peer = None
        self.drop_next_write = 0
        self.written = 0

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        k = min(n, len(self.rx))
        buf[0:k] = self.rx[0:k]
        self.rx = self.rx[k:]
        return k

    def write(self, b):
        self.written += len(b)
        if self.drop_next_write:
            self.drop_next_write -= 1
            return len(b)
        self.peer.rx.extend(b)
        return len(b)


def uart_pair():
    a = LoopUart()
    b = LoopUart()
    a.peer = b
    b.peer = a
    return a, b


class FakeStore:
    def __init__(self):
        self.blocks = {}
        self.acks = []

    def append(self, block, first_seq, last_seq, prio):
        self.blocks[first_seq] = (first_seq, last_seq, prio, block)

    def peek(self, n):
        ks = sorted(self.blocks, key=lambda fs: (-self.blocks[fs][2], fs))
        return [self.blocks[k] for k in ks[:n]]

    def ack(self, first_seq):
        self.acks.append(first_seq)
        if first_seq in self.blocks:
            del self.blocks[first_seq]


class MiniAgent:
    def __init__(self, uart):
        self.uart = uart
        self.dec = FrameDecoder()
        self.got = {}
        self.order = []
        self.results = []
        self.hello = None
        self.ack_enabled = True
        self.rx = bytearray(512)

    def _on(self, t, buf, n):
        if t == framing.T_HELLO:
            self.hello = json.loads(bytes(buf[1:n]))
            self.uart.write(encode_frame(framing.T_HELLO, b'{"role": "agent", "session": 1, "reply": 1}'))
        elif t == framing.T_DATA:
            fs, ls, prio = struct.unpack("<IIB", bytes(buf[1:10]))
            self.order.append(fs)
            self.got[fs] = (ls, prio, bytes(buf[10:n]))
            if self.ack_enabled:
                self.uart.write(encode_frame(framing.T_ACK, struct.pack("<I", fs)))
        elif t == framing.T_RESULT:
            self.results.append(json.loads(bytes(buf[1:n])))

    def pump(self):
        while self.uart.any():
            k = self.uart.readinto(self.rx, len(self.rx))
            self.dec.feed(self.rx, k, self._on)


def _setup(nblocks, window=4):
    bu, au = uart_pair()
    st = FakeStore()
    for i in range(nblocks):
        st.append(bytes([i & 0xFF]) * (50 + i), 100 + 10 * i, 109 + 10 * i, 0)
    link = BoxLink(bu, st, "box-1", "1.0.0", 3, window=window, rto_ms=500)
    return link, st, MiniAgent(au), bu


def test_box_link_handshake_and_drain():
    link, st, ag, bu = _setup(20)
    t = 0
    link.poll(t)
    ag.pump()
    assert_eq(ag.hello["device"], "box-1")
    assert_eq(ag.hello["boot"], 3)
    for step in range(40):
        t += 100
        link.poll(t)
        ag.pump()
    assert_eq(len(st.blocks), 0, "all acked")
    assert_eq(sorted(ag.got), [100 + 10 * i for i in range(20)])
    assert_eq(ag.got[110], (119, 0, bytes([1]) * 51))
    assert_eq(link.counters["retransmits"], 0)


def test_box_link_window_and_retransmit():
    link, st, ag, bu = _setup(10, window=3)
    link.poll(0)
    ag.pump()
    ag.ack_enabled = False
    link.poll(100)
    ag.pump()
    assert_eq(len(ag.order), 3, "window of 3 in flight")
    link.poll(200)
    ag.pump()
    assert_eq(len(ag.order), 3, "nothing more before the timeout")
    ag.ack_enabled = True
    link.poll(700)  # rto 500 -> retransmit the 3
    ag.pump()
    assert_eq(link.counters["retransmits"], 3)
    t = 700
    for i in range(20):
        t += 100
        link.poll(t)
        ag.pump()
    assert_eq(len(st.blocks), 0)


def test_box_link_priority_first_and_lost_frames():
    link, st, ag, bu = _setup(6, window=2)
    st.append(b"CRASH\x00\x00", 5000, 5000, 4)
    link.poll(0)
    ag.pump()
    bu.drop_next_write = 1  # the first DATA frame is lost on the wire
    t = 0
    for i in range(60):
        t += 100
        link.poll(t)
        ag.pump()
    assert_eq(ag.order[0], 5000, "crash first (its first transmission was lost, then resent)")
    assert_eq(len(st.blocks), 0)


def test_box_link_commands():
    seen = []

    def on_command(d):
        seen.append(d["cmd"])
        if d["cmd"] == "boom":
            raise ValueError("bad key")
        return {"ok": True, "value": 42}

    link, st, ag, bu = _setup(0)
    link.on_command = on_command
    link.poll(0)
    ag.pump()
    ag.uart.write(encode_frame(framing.T_CMD, b'{"id": "a1", "cmd": "config_get", "key": "x"}'))
    ag.uart.write(encode_frame(framing.T_CMD, b'{"id": "a1", "cmd": "config_get", "key": "x"}'))
    ag.uart.write(encode_frame(framing.T_CMD, b'{"id": "a2", "cmd": "boom"}'))
    link.poll(100)
    ag.pump()
    assert_eq(seen, ["config_get", "boom"], "retransmitted command executed once")
    assert_eq(ag.results[0], {"ok": True, "value": 42, "id": "a1"})
    assert_eq(ag.results[1], ag.results[0])
    assert_eq(ag.results[2]["ok"], False)
    assert_eq(ag.results[2]["id"], "a2")


def test_box_link_keepalive_and_timeout():
    link, st, ag, bu = _setup(0)
    link.poll(0)
    ag.pump()
    link.poll(100)
    assert_eq(link.link_up(), True)
    link.poll(20000)  # no frame from the agent for 20 s -> back to HELLO
    assert_eq(link.link_up(), False)
    ag.pump()
    assert_eq(link.counters["timeouts"], 1)


def test_box_link_bad_args():
    a, b = uart_pair()
    assert_raises(ValueError, BoxLink, a, FakeStore(), "d", "f", 1, 0)


def test_box_link_resend_command_requeues_from_the_store():
    # gap repair through the link, with the real flash store: acknowledged blocks still on flash go out again
    from firmware.store import Store
    from store_fs import fresh_root

    root, bd = fresh_root()
    st = Store(root, max_bytes=64 * 1024, segment_bytes=4096)
    for i in range(5):
        st.append(bytes([i]) * 60, 100 + 10 * i, 109 + 10 * i, 0, 10)
    bu, au = uart_pair()
    link = BoxLink(bu, st, "box-1", "1.0.0", 3, window=4, rto_ms=500)
    ag = MiniAgent(au)
    t = 0
    for step in range(30):
        t += 100
        link.poll(t)
        ag.pump()
    assert_eq(st.peek(10), [], "drained")
    ag.order = []
    ag.uart.write(encode_frame(framing.T_CMD,
                               b'{"id": "r1", "cmd": "resend", "boot": 3, "ranges": [[110, 129], [90, 99]]}'))
    for step in range(20):
        t += 100
        link.poll(t)
        ag.pump()
    res = ag.results[-1]
    assert_eq((res["id"], res["ok"], res["requeued"], res["missing"]), ("r1", True, 2, [[90, 99]]))
    assert_eq(sorted(ag.order), [110, 120], "the two blocks were sent again")
    assert_eq(st.peek(10), [], "and acknowledged again")


class TapUart:
    """Records every byte the box writes (write() may take part of them: `take` bytes at most)."""

    def __init__(self, take=1 << 30):
        self.out = bytearray()
        self.take = take

    def any(self):
        return 0

    def readinto(self, buf, n=-1):
        return 0

    def write(self, b):
        k = min(len(b), self.take)
        self.out.extend(bytes(b)[:k])
        return k


def test_box_link_frames_are_the_framing_encoders_bytes():
    # the link writes each frame COBS-encoded group by group from its parts; on the wire it must be
    # framing.encode_frame's frame (the agent's decoder), byte for byte: blocks of 0..16 KiB with
    # zeros, no zeros, runs of 254/255 non-zero bytes (COBS group edges); partial UART writes
    rng = Rng(11)
    blocks = [b"", b"\x00", bytes(range(1, 256)), b"\x07" * 254, b"\x07" * 255, b"\x07" * 253 + b"\x00",
              _payload(rng, 600, 10), _payload(rng, 16384, 2), _payload(rng, 16384, 0)]
    for take in (1 << 30, 7):
        u = TapUart(take)
        link = BoxLink(u, FakeStore(), "box-1", "1.0.0", 3)
        link._burst = False
        want = bytearray()
        for i, b in enumerate(blocks):
            link._send_data((i, i + 3, i % 5, b))
            want.extend(encode_frame(framing.T_DATA, struct.pack("<IIB", i, i + 3, i % 5) + b))
        link._send_payload(framing.T_RESULT, b'{"ok": true}')
        want.extend(encode_frame(framing.T_RESULT, b'{"ok": true}'))
        assert_eq(bytes(u.out), bytes(want), "wire bytes (write takes %d)" % take)
        assert_eq(link.counters["tx_bytes"], len(want))


def test_box_link_holds_no_frame_sized_buffer():
    # a link for 16 KiB crash blocks: a few hundred bytes of buffers, not a raw + COBS copy of the
    # largest frame (2 x 16.4 KiB). MicroPython's heap only (CPython has no gc.mem_alloc)
    import gc

    if not hasattr(gc, "mem_alloc"):
        return
    gc.collect()
    a = gc.mem_alloc()
    link = BoxLink(TapUart(), FakeStore(), "box-1", "1.0.0", 3, max_block=framing.MAX_BLOCK)
    gc.collect()
    used = gc.mem_alloc() - a
    assert used < 4096, "BoxLink holds %d bytes" % used
    assert_eq(link.max_block, framing.MAX_BLOCK)
