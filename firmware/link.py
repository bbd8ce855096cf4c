# Box side of the box <-> edge agent UART link (docs/link-protocol.md). MicroPython and CPython.
# Non-blocking: the main loop calls poll(t_ms) every ~100 ms.
import binascii
import json
import struct

from firmware import framing
from firmware.framing import (
    DATA_HDR,
    T_ACK,
    T_CMD,
    T_DATA,
    T_HELLO,
    T_KEEPALIVE,
    T_RESULT,
    LinkError,
)
from hw.compat import const

# String constants that are names: seen here first as names, mpy-cross makes each a qstr (16 B of
# the box's heap), not a str object (40 B). Compiled away (docs/heap.md, "Strings").
if 0:
    dict(ack_unknown=0, retransmits=0, store_error=0)

_ST_HELLO = const(0)
_ST_UP = const(1)

_RX_CHUNK = const(256)
_MAX_BACKOFF_SHIFT = const(2)  # rto x4 at most: only `window` blocks are ever in flight


def _elapsed(now, then):
    # t_ms from the box clock: ms since boot, monotonic (ints). Wrapping tick counters are the
    # caller's business: app.py passes an unwrapped ms count.
    return now - then


class BoxLink:
    """Sends the store's unacknowledged blocks to the agent with a send window, retransmits on timeout
    (exponential backoff per block), acks them in the store on the agent's ACK, answers commands."""

    def __init__(
        self,
        uart,
        store,
        device,
        fw,
        boot,
        window=4,
        rto_ms=2000,
        on_command=None,
        hello_ms=1000,
        keepalive_ms=5000,
        link_timeout_ms=15000,
        max_block=framing.MAX_BLOCK,
    ):
        if window < 1 or window > 32:
            raise ValueError("window: %r not in 1..32" % (window,))
        if rto_ms < 10:
            raise ValueError("rto_ms: %r too small" % (rto_ms,))
        self.uart = uart
        self.store = store
        self.device = device
        self.fw = fw
        self.boot = boot
        self.window = window
        self.rto_ms = rto_ms
        self.on_command = on_command
        self.hello_ms = hello_ms
        self.keepalive_ms = keepalive_ms
        self.link_timeout_ms = link_timeout_ms
        self.max_block = max_block
        # the largest payload a frame takes (the agent's decoder holds frames of framing.MAX_RAW)
        self._max_payload = DATA_HDR + max_block + 11
        self._head = bytearray(1 + DATA_HDR)  # frame type + DATA header
        self._crc = bytearray(4)
        self._grp = bytearray(256)  # one COBS group being written: code byte + <= 254 bytes
        self._grp_mv = memoryview(self._grp)
        self._wn = 0  # wire bytes of the frame being written
        self._wok = 1  # 0: the UART refused a write, the rest of the frame is dropped
        self.dec = framing.FrameDecoder(max(1100, 64 * 4 + 16))
        self.rxbuf = bytearray(_RX_CHUNK)
        self.state = _ST_HELLO
        self.agent_session = None
        self.inflight = {}  # first_seq -> [sent_t_ms, tries, (first_seq, last_seq, prio, block)]
        self.last_rx_t = 0
        self.last_hello_t = None
        self.last_ka_t = None
        self.last_cmd_id = None
        self.last_result = None
        self.t_ms = 0
        self._burst = True
        # a command of the box to the agent (power management: "shutdown"): [cmd, id, last sent t_ms],
        # resent every rto_ms until the agent's RESULT with its id comes back (`answered`). Two
        # attributes only: the instance's attribute table is at its size limit
        self.req = None
        self.answered = None
        self.counters = {
            "tx_frames": 0,
            "tx_bytes": 0,
            "rx_bytes": 0,
            "data_sent": 0,
            "retransmits": 0,
            "acked": 0,
            "ack_unknown": 0,
            "commands": 0,
            "sessions": 0,
            "timeouts": 0,
            "requests": 0,
        }

    # ---- output
    # A frame is COBS-encoded while it is written, one COBS group (<= 255 bytes) at a time, from its
    # parts in place (type + header, the block as the store gave it, the CRC): no buffer of the
    # frame's size (a 16 KiB crash block needed 2 x 16 KiB of raw + COBS buffers).
    def _frame(self, head, nh, payload):
        """Writes the frame of head[0:nh] + payload (CRC-32 over both) to the UART, with a leading
        0x00 after a line break (`_burst`)."""
        crc = binascii.crc32(payload, binascii.crc32(memoryview(head)[0:nh])) & 0xFFFFFFFF
        t = self._crc
        struct.pack_into("<I", t, 0, crc)
        g = self._grp
        self._wn = 0
        self._wok = 1
        if self._burst:
            g[0] = 0
            self._out(1)
            self._burst = False
        code = 1
        for part, n in ((head, nh), (payload, len(payload)), (t, 4)):
            for i in range(n):
                b = part[i]
                if b == 0:
                    g[0] = code
                    self._out(code)
                    code = 1
                else:
                    g[code] = b
                    code += 1
                    if code == 0xFF:
                        g[0] = code
                        self._out(code)
                        code = 1
        g[0] = code
        self._out(code)
        g[0] = 0
        self._out(1)
        self.counters["tx_frames"] += 1
        self.counters["tx_bytes"] += self._wn

    def _out(self, k):
        """grp[0:k] to the UART. A refused write (nobody listening / buffer full) loses the rest of
        the frame, like on a wire."""
        self._wn += k
        if not self._wok:
            return
        mv = self._grp_mv
        off = 0
        while off < k:
            w = self.uart.write(mv[off:k])
            if not w:
                self._wok = 0
                return
            off += w

    def _send_payload(self, ftype, payload):
        n = len(payload)
        if n > self._max_payload:
            raise LinkError("frame payload of %d bytes too large" % n)
        self._head[0] = ftype
        self._frame(self._head, 1, payload)

    def _send_hello(self):
        d = {
            "role": "box",
            "proto": framing.PROTO_VERSION,
            "device": self.device,
            "fw": self.fw,
            "boot": self.boot,
            "window": self.window,
            "max_block": self.max_block,
        }
        self._send_payload(T_HELLO, json.dumps(d).encode())

    def _send_keepalive(self):
        h = {"t_ms": self.t_ms, "inflight": len(self.inflight), "fw": self.fw, "boot": self.boot}
        st = getattr(self.store, "stats", None)
        if st is not None:
            try:
                s = st()
                for k in s:
                    v = s[k]
                    if isinstance(v, int) or isinstance(v, str):
                        h["store_" + k] = v
            except Exception:  # health is best effort; never let it stop the link
                h["store_error"] = 1
        self._send_payload(T_KEEPALIVE, json.dumps(h).encode())

    def _send_data(self, entry):
        first_seq, last_seq, prio, block = entry
        n = len(block)
        if n > self.max_block:
            raise LinkError("block %d is %d bytes > max_block %d" % (first_seq, n, self.max_block))
        h = self._head
        h[0] = T_DATA
        struct.pack_into("<IIB", h, 1, first_seq, last_seq, prio)
        self._frame(h, 1 + DATA_HDR, block)

    # ---- input
    def _on_frame(self, ftype, buf, n):
        self.last_rx_t = self.t_ms
        if ftype == T_ACK:
            self._on_ack(buf, n)
        elif ftype == T_HELLO:
            try:
                d = json.loads(bytes(buf[1:n]))
            except ValueError:
                return
            if d.get("role") != "agent":
                return  # our own HELLO echoed back, or a foreign talker
            sess = d.get("session")
            if sess != self.agent_session:
                # new agent process: everything in flight is due now
                self.agent_session = sess
                self.counters["sessions"] += 1
                for fs in self.inflight:
                    e = self.inflight[fs]
                    e[0] = self.t_ms - (self.rto_ms << _MAX_BACKOFF_SHIFT) - 1
                    e[1] = 0
            if d.get("reply") != 1:
                self._send_hello()
            self.state = _ST_UP
        elif ftype == T_CMD:
            self._on_cmd(bytes(buf[1:n]))
        elif ftype == T_RESULT and self.req is not None:
            try:
                d = json.loads(bytes(buf[1:n]))
            except ValueError:
                return
            if isinstance(d, dict) and d.get("id") == self.req[1]:
                self.answered = d
        # KEEPALIVE: only refreshes last_rx_t

    def _on_ack(self, buf, n):
        i = 1
        while i + 4 <= n:
            fs = buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)
            i += 4
            if fs in self.inflight:
                del self.inflight[fs]
                self.counters["acked"] += 1
            else:
                self.counters["ack_unknown"] += 1
            try:
                self.store.ack(fs)
            except Exception:  # already acked / evicted: the agent holds it either way
                pass

    def _on_cmd(self, payload):
        self.counters["commands"] += 1
        try:
            d = json.loads(payload)
            cid = d.get("id")
        except (ValueError, AttributeError):
            self._send_payload(T_RESULT, b'{"ok": false, "error": "bad command json"}')
            return
        if cid is not None and cid == self.last_cmd_id and self.last_result is not None:
            self._send_payload(T_RESULT, self.last_result)  # retransmitted command: same answer
            return
        try:
            if d.get("cmd") == "resend":
                res = self._resend(d)
            elif self.on_command is not None:
                res = self.on_command(d)
            elif d.get("cmd") == "ping":
                res = {"ok": True, "pong": self.t_ms}
            else:
                res = {"ok": False, "error": "unsupported command"}
            if not isinstance(res, dict):
                res = {"ok": True, "result": res}
        except Exception as e:  # a failing command must not kill the link
            res = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        res["id"] = cid
        out = json.dumps(res).encode()
        if len(out) > self._max_payload:
            out = json.dumps({"id": cid, "ok": False, "error": "result too large"}).encode()
        self.last_cmd_id = cid
        self.last_result = out
        self._send_payload(T_RESULT, out)

    def _resend(self, d):
        """Gap repair (docs/mqtt-topics.md): blocks of the seq ranges asked for that are still on flash are
        sent again through the normal window; the answer names the ranges the box no longer holds."""
        ranges = d.get("ranges")
        rq = getattr(self.store, "requeue", None)
        if rq is None or not isinstance(ranges, list):
            return {"ok": False, "cmd": "resend", "error": "ranges: a list of [lo, hi] expected"}
        missing = []
        n = 0
        for r in ranges[:64]:
            if not isinstance(r, list) or len(r) != 2 or not isinstance(r[0], int) or not isinstance(
                    r[1], int):
                return {"ok": False, "cmd": "resend", "error": "ranges: bad range"}
            m, k = rq(r[0], r[1])
            missing += m
            n += k
        return {"ok": True, "cmd": "resend", "boot": d.get("boot"), "requeued": n, "missing": missing}

    def request(self, cmd):
        """Ask the agent `cmd` (box -> agent CMD {"id", "cmd"}); None withdraws the request.
        Idempotent while the same command is pending; its RESULT lands in `answered`."""
        if cmd == (self.req[0] if self.req is not None else None):
            return
        self.answered = None
        if cmd is None:
            self.req = None
            return
        self.counters["requests"] += 1
        self.req = [cmd, "box-%d-%d" % (self.boot, self.counters["requests"]), None]

    def _read(self):
        uart = self.uart
        while True:
            avail = uart.any() if hasattr(uart, "any") else _RX_CHUNK
            if not avail:
                return
            k = uart.readinto(self.rxbuf, min(avail, _RX_CHUNK))
            if not k:
                return
            self.counters["rx_bytes"] += k
            self.dec.feed(self.rxbuf, k, self._on_frame)

    # ---- main loop entry
    def poll(self, t_ms):
        self.t_ms = t_ms
        self._burst = True
        self._read()
        if self.state == _ST_UP and _elapsed(t_ms, self.last_rx_t) > self.link_timeout_ms:
            self.state = _ST_HELLO
            self.counters["timeouts"] += 1
        if self.state != _ST_UP:
            if self.last_hello_t is None or _elapsed(t_ms, self.last_hello_t) >= self.hello_ms:
                self.last_hello_t = t_ms
                self._send_hello()
            return
        rq = self.req
        if rq is not None and self.answered is None and (
                rq[2] is None or _elapsed(t_ms, rq[2]) >= self.rto_ms):
            rq[2] = t_ms
            self._send_payload(T_CMD, json.dumps({"id": rq[1], "cmd": rq[0]}).encode())
        if self.last_ka_t is None or _elapsed(t_ms, self.last_ka_t) >= self.keepalive_ms:
            self.last_ka_t = t_ms
            self._send_keepalive()
        # retransmit what timed out (backoff doubles per try, capped)
        for fs in self.inflight:
            e = self.inflight[fs]
            sh = e[1] - 1
            if sh > _MAX_BACKOFF_SHIFT:
                sh = _MAX_BACKOFF_SHIFT
            if sh < 0:
                sh = 0
            if _elapsed(t_ms, e[0]) >= (self.rto_ms << sh):
                if e[1]:
                    self.counters["retransmits"] += 1
                e[0] = t_ms
                e[1] += 1
                self._send_data(e[2])
        # fill the window with new blocks (highest prio first, as the store orders them)
        free = self.window - len(self.inflight)
        if free > 0:
            for entry in self.store.peek(self.window + len(self.inflight)):
                if free <= 0:
                    break
                fs = entry[0]
                if fs in self.inflight:
                    continue
                self.inflight[fs] = [t_ms, 1, entry]
                self.counters["data_sent"] += 1
                self._send_data(entry)
                free -= 1

    def link_up(self):
        return self.state == _ST_UP

    def stats(self):
        d = dict(self.counters)
        d.update(self.dec.stats())
        d["state"] = "up" if self.state == _ST_UP else "hello"
        d["inflight"] = len(self.inflight)
        return d
