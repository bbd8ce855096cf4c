"""The edge agent against hostile frames: every frame below has a valid link CRC (firmware/framing.py) and
hostile contents. None may stop the agent; each is counted; data is acknowledged only when it is the bound
box's and its block checks. The agent runs in-process on a real pty (no broker needed: it keeps retrying)."""
import json
import os
import random
import struct
import time

import pytest

from edge_agent.agent import Agent
from firmware import framing
from firmware.framing import FrameDecoder, encode_frame
from testbed.simbox import make_block


class Line:
    """The box's end of a pty; the agent opens the other end through serial_for_url."""

    def __init__(self):
        import tty
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        os.set_blocking(self.master, False)
        self.dec = FrameDecoder()
        self.frames = []
        self.pump = lambda: time.sleep(0.01)

    def send(self, ftype, payload):
        data = b"\x00" + encode_frame(ftype, payload)
        while data:
            try:
                n = os.write(self.master, data)
                data = data[n:]
            except BlockingIOError:  # the pty is full: let the agent read
                self.pump()

    def read(self):
        buf = bytearray(4096)
        while True:
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            buf[:len(data)] = data
            self.dec.feed(buf, len(data), lambda t, b, n: self.frames.append((t, bytes(b[1:n]))))
        out, self.frames = self.frames, []
        return out

    def close(self):
        os.close(self.master)
        os.close(self._slave)


def _agent(tmp_path, line, device_id="box-1", qname="q.db"):
    cfg = {"device": {"fleet": "f", "id": device_id}, "serial": {"url": line.path},
           "queue": {"path": str(tmp_path / qname)},
           "mqtt": {"host": "127.0.0.1", "port": 1, "backoff_min_s": 5, "backoff_max_s": 5}, "agent": {}}
    a = Agent(cfg)
    line.pump = lambda: (a.step(), line.frames.extend(line.read()))
    a.step()  # opens the port (pyserial flushes its input on open: nothing may be sent before)
    line.read()
    return a


def _run(agent, line, secs=0.3):
    end = time.monotonic() + secs
    got = []
    while time.monotonic() < end:
        agent.step()
        got += line.read()
        time.sleep(0.005)
    return got


def _hello(device="box-1", boot=1, **kw):
    d = {"role": "box", "proto": 1, "device": device, "fw": "t", "boot": boot, "window": 4, "max_block": 4096}
    d.update(kw)
    return json.dumps(d).encode()


def _data(fs, ls, prio, block):
    return struct.pack("<IIB", fs, ls, prio) + block


def _acks(frames):
    out = []
    for t, p in frames:
        if t == framing.T_ACK:
            out += [struct.unpack_from("<I", p, i)[0] for i in range(0, len(p), 4)]
    return out


@pytest.fixture
def line():
    ln = Line()
    yield ln
    ln.close()


def test_the_hostile_frames_of_the_issue_are_counted_and_answered(tmp_path, line):
    a = _agent(tmp_path, line)
    _run(a, line, 0.2)  # the agent's opening HELLO; its next periodic one is due 1 s after it
    time.sleep(0.6)
    for payload in (b"[1, 2]", b"42", b'"box"', b"null"):
        line.send(framing.T_HELLO, payload)  # HELLO whose JSON is a list or a number
    line.send(framing.T_RESULT, b"[]")
    line.send(framing.T_KEEPALIVE, b"[]")
    line.send(framing.T_HELLO, _hello(boot="abc"))  # then DATA: the agent must not int("abc")
    blk = make_block("box-1", 1, 100, 4, random.Random(1))
    line.send(framing.T_DATA, _data(100, 103, 0, blk))
    got = _run(a, line, 0.1)
    assert any(t == framing.T_HELLO for t, _ in got), "answered at once with the agent's HELLO"
    got += _run(a, line, 0.4)
    assert a.counters["bad_frames"] == 7 and a.counters["internal_errors"] == 0
    assert _acks(got) == [], "no data acknowledged before a valid HELLO"
    # the agent still works: a valid HELLO, then the same DATA is stored and acknowledged
    line.send(framing.T_HELLO, _hello())
    line.send(framing.T_DATA, _data(100, 103, 0, blk))
    got = _run(a, line, 0.5)
    assert _acks(got) == [100] and a.queue.rows == 1
    a.close()


def test_a_block_whose_own_crc_fails_is_quarantined_not_forwarded(tmp_path, line):
    a = _agent(tmp_path, line)
    line.send(framing.T_HELLO, _hello())
    good = make_block("box-1", 1, 10, 4, random.Random(2))
    bad = bytearray(make_block("box-1", 1, 20, 4, random.Random(3)))
    # flash damage inside the block: the link CRC is recomputed, the block's is not
    bad[len(bad) // 2] ^= 0x40
    other = make_block("box-2", 1, 30, 4, random.Random(4))  # a block of another device
    line.send(framing.T_DATA, _data(10, 13, 0, good))
    line.send(framing.T_DATA, _data(20, 23, 0, bytes(bad)))
    line.send(framing.T_DATA, _data(30, 33, 0, other))
    line.send(framing.T_DATA, _data(40, 43, 0, os.urandom(60)))
    got = _run(a, line, 0.6)
    # acknowledged (the box must not retransmit them for ever), kept, never forwarded
    assert sorted(_acks(got)) == [10, 20, 30, 40]
    assert a.queue.rows == 1 and a.queue.quarantined == 3
    assert a.counters["blocks_quarantined"] == 3
    assert [r[3] for r in a.queue.head(10)] == [10]
    assert "bad_blocks" in a._status()["alarms"]
    a.close()


def test_structure_aware_fuzz_never_stops_the_agent(tmp_path, line):
    """Random frames of every type with a valid link CRC and hostile contents (JSON of every shape, wrong
    types, huge numbers, DATA with wrong headers and random blocks), mixed with valid traffic."""
    rng = random.Random(2026)
    a = _agent(tmp_path, line)
    values = [None, True, 0, -1, 2 ** 64, 1.5, "", "x" * 300, [], {}, [[]], {"a": []}, "box-1", "abc"]

    def rand_json():
        k = rng.random()
        if k < 0.3:
            return rng.choice(values)
        if k < 0.6:
            return {rng.choice(["role", "device", "boot", "id", "cmd", "fw", "x"]): rng.choice(values)
                    for _ in range(rng.randrange(0, 5))}
        base = json.loads(_hello())
        for key in rng.sample(sorted(base), rng.randrange(1, 4)):
            base[key] = rng.choice(values)
        return base

    sent_good = []
    fs = 1000
    for i in range(600):
        r = rng.random()
        if r < 0.45:
            t = rng.choice([framing.T_HELLO, framing.T_RESULT, framing.T_KEEPALIVE, framing.T_CMD,
                            framing.T_ACK])
            payload = (json.dumps(rand_json()).encode() if rng.random() < 0.9
                       else os.urandom(rng.randrange(0, 40)))
            if rng.random() < 0.05:
                payload = b"[" * 1800 + b"]" * 1800  # deep nesting: json's recursion limit
            line.send(t, payload)
        elif r < 0.75:
            hdr = struct.pack("<IIB", rng.getrandbits(32), rng.getrandbits(32), rng.randrange(256))
            line.send(framing.T_DATA, hdr + os.urandom(rng.randrange(0, 200)))
        elif r < 0.8:
            line.send(rng.randrange(7, 256), os.urandom(rng.randrange(0, 50)))
        else:
            line.send(framing.T_HELLO, _hello())
            blk = make_block("box-1", 1, fs, 3, rng)
            line.send(framing.T_DATA, _data(fs, fs + 2, 0, blk))
            sent_good.append(fs)
            fs += 3
        if i % 20 == 0:
            _run(a, line, 0.02)
    _run(a, line, 0.5)
    # a final valid exchange still works
    line.send(framing.T_HELLO, _hello())
    blk = make_block("box-1", 1, fs, 3, rng)
    line.send(framing.T_DATA, _data(fs, fs + 2, 0, blk))
    sent_good.append(fs)
    got = _run(a, line, 0.5)
    assert a.counters["internal_errors"] == 0
    assert a.counters["bad_frames"] > 100
    assert fs in _acks(got)
    stored = {r[3] for r in a.queue.head(10000)}
    assert set(sent_good) <= stored, "every valid block of the bound box is stored"
    a.close()


def test_an_agent_without_configured_id_stays_bound_to_its_first_box(tmp_path, line):
    a = _agent(tmp_path, line, device_id="")
    line.send(framing.T_HELLO, _hello("box-a"))
    line.send(framing.T_DATA, _data(1, 3, 0, make_block("box-a", 1, 1, 3, random.Random(1))))
    assert _acks(_run(a, line, 0.5)) == [1] and a.device == "box-a"
    a.close()
    # restarted (same queue): another box speaks first; it is refused, its data not acknowledged
    b = _agent(tmp_path, line, device_id="")
    assert b.device == "box-a"
    line.send(framing.T_HELLO, _hello("box-b"))
    line.send(framing.T_DATA, _data(50, 52, 0, make_block("box-b", 1, 50, 3, random.Random(1))))
    got = _run(b, line, 0.5)
    assert _acks(got) == [] and b.counters["device_mismatch"] >= 1
    assert "device_mismatch" in b._status()["alarms"]
    b.close()


def test_drop_oldest_policy_drops_loudly_and_the_count_survives_a_restart(tmp_path, line):
    """queue.on_full = drop_oldest: at the limit the oldest lowest-priority pending rows go (never a crash
    block before a position block), counted, alarmed, logged; the default back-pressure drops nothing."""
    cfg = {"device": {"fleet": "f", "id": "box-1"}, "serial": {"url": line.path},
           "queue": {"path": str(tmp_path / "d.db"), "max_bytes": 500, "on_full": "drop_oldest"},
           "mqtt": {"host": "127.0.0.1", "port": 1, "backoff_min_s": 5, "backoff_max_s": 5}, "agent": {}}
    a = Agent(cfg)
    line.pump = lambda: (a.step(), line.read())
    a.step()
    line.send(framing.T_HELLO, _hello())
    rng = random.Random(7)
    sent = []
    for i in range(8):
        fs = 100 + 10 * i
        prio = 4 if i == 0 else 0
        line.send(framing.T_DATA, _data(fs, fs + 3, prio, make_block("box-1", 1, fs, 4, rng)))
        sent.append(fs)
        _run(a, line, 0.05)
    _run(a, line, 0.3)
    kept = sorted(r[3] for r in a.queue.head(100))
    assert 100 in kept, "the crash block is never the one dropped"
    dropped = [fs for fs in sent if fs not in kept]
    assert dropped and dropped == sent[1:1 + len(dropped)], ("the oldest position blocks go first: %r"
                                                             % dropped)
    assert a.counters["dropped_blocks"] == len(dropped) and a.counters["dropped_records"] == 4 * len(dropped)
    assert "data_dropped" in a._status()["alarms"]
    a.close()
    b = _agent(tmp_path, line, qname="d.db")
    assert b.counters["dropped_blocks"] == len(dropped) and "data_dropped" in b._status()["alarms"]
    b.close()
