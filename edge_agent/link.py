"""Agent side of the box <-> agent UART link (docs/link-protocol.md), on top of firmware/framing.py."""
import json
import random
import struct
import time

from firmware import framing
from firmware.framing import T_ACK, T_CMD, T_DATA, T_HELLO, T_KEEPALIVE, T_RESULT, FrameDecoder, encode_frame


class AgentLink:
    """Wraps a pyserial-like port (read/write/in_waiting). read_frames() returns decoded frames:
    ('hello', dict) | ('data', (first_seq, last_seq, prio, block)) | ('result', dict) |
    ('keepalive', dict) | ('ack', [..]) | ('cmd', dict)."""

    def __init__(self, ser, session=None):
        self.ser = ser
        self.dec = FrameDecoder()
        self.session = session if session is not None else random.getrandbits(31)
        self.box = None  # the box's HELLO (device, fw, boot, ...)
        self.last_rx = None  # time.monotonic() of the last good frame
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.bad_payloads = 0
        self._out = []

    def _on_frame(self, ftype, buf, n):
        p = bytes(buf[1:n])
        try:
            if ftype == T_DATA:
                if len(p) < framing.DATA_HDR:
                    raise ValueError("DATA shorter than its header")
                fs, ls, prio = struct.unpack_from("<IIB", p, 0)
                self._out.append(("data", (fs, ls, prio, p[framing.DATA_HDR:])))
            elif ftype == T_HELLO:
                self._out.append(("hello", json.loads(p)))
            elif ftype == T_RESULT:
                self._out.append(("result", json.loads(p)))
            elif ftype == T_KEEPALIVE:
                self._out.append(("keepalive", json.loads(p) if p else {}))
            elif ftype == T_ACK:
                self._out.append(("ack",
                                  [struct.unpack_from("<I", p, i)[0] for i in range(0, len(p) - 3, 4)]))
            elif ftype == T_CMD:
                self._out.append(("cmd", json.loads(p)))
            else:
                self.bad_payloads += 1
                return
        # RecursionError: JSON nested deeper than Python's limit
        except (ValueError, struct.error, RecursionError):
            self.bad_payloads += 1
            return
        self.last_rx = time.monotonic()

    def feed(self, data):
        self.rx_bytes += len(data)
        self.dec.feed(data, len(data), self._on_frame)
        out, self._out = self._out, []
        return out

    def read_frames(self):
        n = self.ser.in_waiting
        data = self.ser.read(n if n > 0 else 1)
        if not data:
            return []
        return self.feed(data)

    def _write(self, frame):
        self.ser.write(b"\x00" + frame)
        self.tx_bytes += len(frame) + 1

    def send_hello(self, reply, version="0"):
        d = {"role": "agent", "proto": framing.PROTO_VERSION, "session": self.session,
             "reply": 1 if reply else 0, "agent": version}
        self._write(encode_frame(T_HELLO, json.dumps(d).encode()))

    def send_ack(self, first_seqs):
        for i in range(0, len(first_seqs), framing.ACK_MAX):
            chunk = first_seqs[i : i + framing.ACK_MAX]
            self._write(encode_frame(T_ACK, struct.pack("<%dI" % len(chunk), *chunk)))

    def send_cmd(self, d):
        self._write(encode_frame(T_CMD, json.dumps(d).encode()))

    def send_result(self, d):
        """RESULT to a command of the box (agent -> box, e.g. the answer to "shutdown")."""
        self._write(encode_frame(T_RESULT, json.dumps(d).encode()))

    def send_keepalive(self):
        self._write(encode_frame(T_KEEPALIVE, b""))

    def stats(self):
        d = self.dec.stats()
        d.update(rx_bytes=self.rx_bytes, tx_bytes=self.tx_bytes, bad_payloads=self.bad_payloads)
        return d
