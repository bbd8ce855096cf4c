# Link framing shared by the box (firmware/link.py, MicroPython) and the edge agent (edge_agent/link.py).
# Frame on the wire: COBS(type u8 | payload | CRC-32 LE u32 over type+payload) followed by 0x00.
# See docs/link-protocol.md. Runs unchanged on MicroPython and CPython.
import binascii
import struct

from hw.compat import const

PROTO_VERSION = const(1)

T_HELLO = const(1)
T_DATA = const(2)
T_ACK = const(3)
T_CMD = const(4)
T_RESULT = const(5)
T_KEEPALIVE = const(6)

TYPE_NAMES = {1: "HELLO", 2: "DATA", 3: "ACK", 4: "CMD", 5: "RESULT", 6: "KEEPALIVE"}

DATA_HDR = const(9)  # first_seq u32, last_seq u32, prio u8
MAX_BLOCK = const(16384)  # largest block a DATA frame carries (a 10 s crash trace at 200 Hz is 12 KB)
MAX_RAW = const(16384 + 16)  # type + DATA header + block + CRC, with slack
ACK_MAX = const(64)  # first_seqs per ACK frame


class LinkError(Exception):
    pass


def cobs_max(n):
    """Largest COBS encoding of n bytes (without the delimiter)."""
    return n + n // 254 + 1


def crc32(buf, n):
    if n == len(buf):
        return binascii.crc32(buf) & 0xFFFFFFFF
    return binascii.crc32(memoryview(buf)[0:n]) & 0xFFFFFFFF


def cobs_encode_into(src, n, dst, di=0):
    """COBS-encodes src[0:n] into dst starting at di; returns the index after the last byte written.
    No delimiter is written. dst needs cobs_max(n) bytes free. Allocation-free."""
    code_i = di
    di += 1
    code = 1
    for si in range(n):
        b = src[si]
        if b == 0:
            dst[code_i] = code
            code_i = di
            di += 1
            code = 1
        else:
            dst[di] = b
            di += 1
            code += 1
            if code == 0xFF:
                dst[code_i] = code
                code_i = di
                di += 1
                code = 1
    dst[code_i] = code
    return di


def cobs_decode_inplace(buf, n):
    """Decodes the COBS bytes buf[0:n] in place; returns the decoded length or -1 if malformed.
    Allocation-free (the output never overtakes the input)."""
    si = 0
    di = 0
    while si < n:
        code = buf[si]
        if code == 0:
            return -1
        si += 1
        end = si + code - 1
        if end > n:
            return -1
        while si < end:
            buf[di] = buf[si]
            di += 1
            si += 1
        if code != 0xFF and si < n:
            buf[di] = 0
            di += 1
    return di


def cobs_encode(data):
    """Host helper: bytes -> COBS bytes (no delimiter)."""
    out = bytearray(cobs_max(len(data)))
    k = cobs_encode_into(data, len(data), out)
    return bytes(out[0:k])


def cobs_decode(data):
    """Host helper: COBS bytes (no delimiter) -> bytes; ValueError if malformed."""
    buf = bytearray(data)
    k = cobs_decode_inplace(buf, len(buf))
    if k < 0:
        raise ValueError("cobs: malformed frame")
    return bytes(buf[0:k])


class FrameEncoder:
    """Builds wire frames into preallocated buffers: raw (type+payload+crc) and wire (COBS + 0x00)."""

    def __init__(self, max_raw=MAX_RAW):
        self.raw = bytearray(max_raw)
        self.wire = bytearray(cobs_max(max_raw) + 2)
        self.wire_mv = memoryview(self.wire)

    def finish(self, n, lead_zero=False):
        """raw[0:n] holds type+payload: appends the CRC, COBS-encodes and returns the wire length.
        The frame is wire[0:length] (ends with 0x00; starts with 0x00 too if lead_zero)."""
        raw = self.raw
        if n + 4 > len(raw):
            raise LinkError("frame of %d bytes exceeds the %d-byte buffer" % (n + 4, len(raw)))
        struct.pack_into("<I", raw, n, crc32(raw, n))
        di = 0
        if lead_zero:
            self.wire[0] = 0
            di = 1
        di = cobs_encode_into(raw, n + 4, self.wire, di)
        self.wire[di] = 0
        return di + 1

    def frame(self, ftype, payload=b"", lead_zero=False):
        """Allocating convenience: returns the wire bytes of one frame."""
        n = len(payload)
        self.raw[0] = ftype
        self.raw[1 : 1 + n] = payload
        k = self.finish(1 + n, lead_zero)
        return bytes(self.wire[0:k])


def encode_frame(ftype, payload=b""):
    """Host helper: one complete wire frame (COBS + trailing 0x00)."""
    raw = bytearray(1 + len(payload) + 4)
    raw[0] = ftype
    raw[1 : 1 + len(payload)] = payload
    struct.pack_into("<I", raw, 1 + len(payload), crc32(raw, 1 + len(payload)))
    return cobs_encode(raw) + b"\x00"


class FrameDecoder:
    """Streaming decoder: feed() it whatever the UART returned; it calls on_frame(ftype, buf, n)
    for every frame whose CRC matches, where the payload is buf[1:n] (valid only during the call).
    Garbage, truncated, oversized and corrupted frames are counted and dropped; the next 0x00
    resynchronises. The per-byte path is allocation-free."""

    def __init__(self, max_raw=MAX_RAW):
        self.buf = bytearray(cobs_max(max_raw) + 1)
        self.n = 0
        self.skip = False  # dropping an oversized frame until the next delimiter
        self.frames = 0
        self.crc_errors = 0
        self.cobs_errors = 0
        self.oversize = 0
        self.short = 0

    def reset(self):
        self.n = 0
        self.skip = False

    def feed(self, data, n, on_frame):
        buf = self.buf
        cap = len(buf)
        k = self.n
        for i in range(n):
            b = data[i]
            if b == 0:
                if self.skip:
                    self.skip = False
                elif k:
                    self.n = k
                    self._finish(on_frame)
                k = 0
            elif self.skip:
                pass
            elif k < cap:
                buf[k] = b
                k += 1
            else:
                self.oversize += 1
                self.skip = True
                k = 0
        self.n = k

    def _finish(self, on_frame):
        buf = self.buf
        m = cobs_decode_inplace(buf, self.n)
        self.n = 0
        if m < 0:
            self.cobs_errors += 1
            return
        if m < 5:
            self.short += 1
            return
        got = buf[m - 4] | (buf[m - 3] << 8) | (buf[m - 2] << 16) | (buf[m - 1] << 24)
        if crc32(buf, m - 4) != got:
            self.crc_errors += 1
            return
        self.frames += 1
        on_frame(buf[0], buf, m - 4)

    def stats(self):
        return {
            "frames": self.frames,
            "crc_errors": self.crc_errors,
            "cobs_errors": self.cobs_errors,
            "oversize": self.oversize,
            "short": self.short,
        }
