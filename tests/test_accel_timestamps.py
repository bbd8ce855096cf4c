"""The sample times the box gives the motion code are the times the samples had in the trace (item 6 of
issue 19): firmware/app.py rebuilds them from the FIFO count and its clock. Real trace, real LIS3DH
model, real Box; every sample carries its own index in x (index mod 1000, times the 12 mg step of the
+-16 g range so the chip's quantisation keeps it), so each stamp can be checked against the time the
trace gave that sample."""
import os

import pytest

from firmware.app import Box
from firmware.config import defaults
from hw.replay import ReplaySession
from tools.trace.cli import TraceWriter

_LSB = 12   # mg per digit of the LIS3DH at +-16 g, high resolution


def _trace(path, rate, seconds):
    hdr = {"device": {"id": "ts", "source": "simulate"}, "start_utc": None,
           "gnss": {"baud": 9600, "rate_hz": 1, "receiver": "none"},
           "accel": {"chip": "lis3dh", "rate_hz": rate, "unit": "mg"}, "truth": False}
    with TraceWriter(path, hdr) as w:
        for s in range(seconds):
            w.accel(float(s), rate, [[((s * rate + i) % 1000) * _LSB, 0, 1000] for i in range(rate)])


@pytest.mark.parametrize("rate,step_ms", [(400, 50), (200, 100), (100, 100), (50, 100)])
def test_sample_stamps_follow_the_trace(tmp_path, rate, step_ms):
    path = str(tmp_path / "t.jsonl")
    _trace(path, rate, 4)
    sess = ReplaySession(path)
    root = str(tmp_path / "fs")
    os.mkdir(root)
    box = Box(sess.clock, sess.gnss_uart, sess.i2c, None, root, dict(defaults(), accel_rate_hz=rate))
    stamps = []
    feed = box.motion.feed

    def spy(t0, xyz, n):
        for i in range(n):
            stamps.append((t0 + i * 1000 // rate, xyz[3 * i]))   # Motion's own spacing of a chunk
        feed(t0, xyz, n)

    box.motion.feed = spy
    t = 0
    while t < 3900:
        t += step_ms
        sess.advance(t)
        box.step()
    assert len(stamps) > 3 * rate
    worst = 0.0
    for ts, x in stamps:
        low = x // _LSB
        idx = low + 1000 * int(round((ts * rate / 1000.0 - low) / 1000.0))
        true_ms = (idx // rate) * 1000 + (idx % rate) * 1000 // rate   # the trace's time of that sample
        worst = max(worst, abs(ts - true_ms))
    # each sample is stamped at its own time, within a millisecond and a sample period (rounding)
    assert worst <= 1000.0 / rate + 1, "stamps off by up to %.1f ms at %d Hz" % (worst, rate)
    prev = None
    for ts, _ in stamps:
        assert prev is None or ts >= prev, "stamps go back in time at %d Hz" % rate
        prev = ts
