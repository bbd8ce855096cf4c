"""Host tests: the agent's link (edge_agent/link.py) against the box's (firmware/link.py) in-process,
the SQLite queue's durability/dedupe/limit rules, and framing properties (hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.link import AgentLink
from edge_agent.queue import Queue
from firmware import framing
from firmware.link import BoxLink
from testbed.simbox import MemStore


class Pipe:
    """pyserial-like end (read/write/in_waiting) + machine.UART-like end (any/readinto/write)."""

    def __init__(self):
        self.a2b = bytearray()
        self.b2a = bytearray()

    # agent side (pyserial)
    @property
    def in_waiting(self):
        return len(self.b2a)

    def read(self, n):
        d = bytes(self.b2a[:n])
        del self.b2a[:n]
        return d

    def write(self, b):
        self.a2b.extend(b)
        return len(b)


class BoxEnd:
    def __init__(self, pipe):
        self.p = pipe

    def any(self):
        return len(self.p.a2b)

    def readinto(self, buf, n):
        k = min(n, len(self.p.a2b))
        buf[0:k] = self.p.a2b[:k]
        del self.p.a2b[:k]
        return k

    def write(self, b):
        self.p.b2a.extend(b)
        return len(b)


@given(st.binary(max_size=1500))
@settings(max_examples=200, deadline=None)
def test_frame_round_trip_any_payload(payload):
    got = []
    d = framing.FrameDecoder()
    w = framing.encode_frame(framing.T_DATA, payload)
    assert w.count(0) == 1 and w[-1] == 0
    d.feed(w, len(w), lambda t, b, n: got.append((t, bytes(b[1:n]))))
    assert got == [(framing.T_DATA, payload)]


@given(st.binary(min_size=1, max_size=300), st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_single_bit_flip_never_passes(payload, bit):
    w = bytearray(framing.encode_frame(framing.T_CMD, payload))
    bit %= (len(w) - 1) * 8
    w[bit // 8] ^= 1 << (bit % 8)
    got = []
    framing.FrameDecoder().feed(w, len(w), lambda t, b, n: got.append(bytes(b[1:n])))
    assert got == []  # a flipped frame is never delivered


def test_agent_link_against_box_link():
    pipe = Pipe()
    store = MemStore()
    for i in range(30):
        store.append(bytes([i]) * 100, 10 * i, 10 * i + 9, 4 if i == 29 else 0, 10)
    box = BoxLink(BoxEnd(pipe), store, "box-9", "fw1", 7, window=4, rto_ms=300)
    ag = AgentLink(pipe)
    ag.send_hello(reply=False)
    got = []
    t = 0
    for _ in range(50):
        box.poll(t)
        t += 100
        for kind, v in ag.read_frames() if pipe.in_waiting else []:
            if kind == "hello":
                ag.box = v
                ag.send_hello(reply=True)
            elif kind == "data":
                got.append(v[0])
                ag.send_ack([v[0]])
    assert ag.box["device"] == "box-9" and ag.box["boot"] == 7
    assert sorted(got) == [10 * i for i in range(30)]
    assert got[0] == 290, "crash block first"
    assert store.pending() == 0


def test_queue_dedupe_limit_and_restart(tmp_path):
    p = str(tmp_path / "q.db")
    q = Queue(p, max_bytes=1000)
    ack, refused, _, _ = q.add_batch("d", 1, [(1, 5, 0, b"a" * 400), (6, 9, 4, b"b" * 400)])
    assert ack == [1, 6] and refused == []
    ack, refused, _, _ = q.add_batch("d", 1, [(1, 5, 0, b"a" * 400), (10, 12, 0, b"c" * 400)])
    assert ack == [1] and refused == [10] and q.full  # duplicate re-acked, over-limit refused
    assert [r[3] for r in q.head(5)] == [6, 1]  # crash first
    q.close()
    q = Queue(p, max_bytes=1000)  # survives a restart, still full
    assert q.rows == 2 and q.bytes == 800
    assert q.add_batch("d", 1, [(10, 12, 0, b"c" * 400)])[:2] == ([], [10])
    q.delete([r[0] for r in q.head(5) if r[3] == 6])
    assert not q.full
    ack, refused, _, _ = q.add_batch("d", 1, [(6, 9, 4, b"b" * 400)])
    assert ack == [6] and q.rows == 1  # already delivered and archived: acked again, not requeued
    assert q.archive_rows == 1
    assert q.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
