# u-blox receiver setup over UBX (M8 and older: CFG-NAV5/CFG-RATE/CFG-MSG; M9/M10: CFG-VALSET).
# Generic NMEA receivers need no configuration: call nothing (see docs/gnss.md).
# Only app.py retries at the supervisor level; configure() retries each frame until ACKed.
from hw.compat import const

SYNC1 = const(0xB5)
SYNC2 = const(0x62)
CLS_ACK = const(0x05)
ID_ACK_ACK = const(0x01)
ID_ACK_NAK = const(0x00)
CLS_CFG = const(0x06)
ID_CFG_MSG = const(0x01)
ID_CFG_RATE = const(0x08)
ID_CFG_NAV5 = const(0x24)
ID_CFG_VALSET = const(0x8A)

DYN_AUTOMOTIVE = const(4)

# NMEA standard messages (class 0xF0): id
NMEA_IDS = {"GGA": 0x00, "GLL": 0x01, "GSA": 0x02, "GSV": 0x03, "RMC": 0x04, "VTG": 0x05, "GRS": 0x06,
            "GST": 0x07, "ZDA": 0x08, "GBS": 0x09, "DTM": 0x0A, "GNS": 0x0D, "VLW": 0x0F}
WANTED = ("RMC", "GGA", "GSA", "VTG")

# CFG-VALSET keys (u-blox M9/M10 interface description): key id, size in bytes
KEY_NAVSPG_DYNMODEL = (0x20110021, 1)
KEY_RATE_MEAS = (0x30210001, 2)
KEY_RATE_NAV = (0x30210002, 2)
# CFG-MSGOUT-NMEA_ID_<msg>_UART1
MSGOUT_UART1 = {"GGA": 0x209100BB, "GLL": 0x209100CA, "GSA": 0x209100C0, "GSV": 0x209100C5,
                "RMC": 0x209100AC, "VTG": 0x209100B1, "ZDA": 0x209100D9, "GNS": 0x209100B6}


class UBXError(Exception):
    pass


def checksum(body):
    """8-bit Fletcher over class, id, length and payload. Returns (ck_a, ck_b)."""
    a = 0
    b = 0
    for x in body:
        a = (a + x) & 0xFF
        b = (b + a) & 0xFF
    return a, b


def frame(cls, mid, payload=b""):
    n = len(payload)
    if n > 0xFFFF:
        raise ValueError("UBX payload too long: %d bytes" % n)
    out = bytearray(8 + n)
    out[0] = SYNC1
    out[1] = SYNC2
    out[2] = cls
    out[3] = mid
    out[4] = n & 0xFF
    out[5] = n >> 8
    out[6 : 6 + n] = payload
    a, b = checksum(memoryview(out)[2 : 6 + n])
    out[6 + n] = a
    out[7 + n] = b
    return bytes(out)


def _le(v, n):
    return bytes((v >> (8 * i)) & 0xFF for i in range(n))


def cfg_nav5(dyn_model=DYN_AUTOMOTIVE):
    p = bytearray(36)
    p[0] = 0x01  # mask: apply dynModel only
    p[2] = dyn_model
    return frame(CLS_CFG, ID_CFG_NAV5, p)


def cfg_rate(rate_hz):
    if rate_hz not in (1, 2, 5, 10):
        raise ValueError("rate_hz must be 1, 2, 5 or 10, got %r" % (rate_hz,))
    return frame(CLS_CFG, ID_CFG_RATE, _le(1000 // rate_hz, 2) + _le(1, 2) + _le(1, 2))  # GPS time


def cfg_msg(name, rate):
    """Output rate of an NMEA message on the current port (CFG-MSG short form)."""
    return frame(CLS_CFG, ID_CFG_MSG, bytes((0xF0, NMEA_IDS[name], rate)))


def cfg_valset(items, layers=0x01):
    """CFG-VALSET (M9/M10): items = [((key, size), value)], layers bit 0 RAM, 1 BBR, 2 flash."""
    p = bytearray((0, layers, 0, 0))
    for (key, size), v in items:
        p += _le(key, 4) + _le(v, size)
    return frame(CLS_CFG, ID_CFG_VALSET, p)


def setup_frames(rate_hz, generation="m8"):
    """UBX frames for automotive model, rate and only RMC/GGA/GSA/VTG."""
    if generation == "m8":
        out = [cfg_nav5(DYN_AUTOMOTIVE), cfg_rate(rate_hz)]
        for name in NMEA_IDS:
            out.append(cfg_msg(name, 1 if name in WANTED else 0))
        return out
    if generation == "m10":
        cfg_rate(rate_hz)  # validates
        items = [(KEY_NAVSPG_DYNMODEL, DYN_AUTOMOTIVE), (KEY_RATE_MEAS, 1000 // rate_hz), (KEY_RATE_NAV, 1)]
        for name in MSGOUT_UART1:
            items.append(((MSGOUT_UART1[name], 1), 1 if name in WANTED else 0))
        return [cfg_valset(items)]
    raise ValueError("generation must be 'm8' or 'm10', got %r" % (generation,))


class AckWaiter:
    """Byte-level UBX scanner for ACK-ACK/ACK-NAK of one (class, id). Feed it bytes; NMEA and other
    UBX frames in between are skipped."""

    def __init__(self):
        self._buf = bytearray(10)
        self._n = 0
        self.cls = 0
        self.mid = 0

    def reset(self, cls, mid):
        self._n = 0
        self.cls = cls
        self.mid = mid

    def feed(self, data, n):
        """Returns 1 on ACK, -1 on NAK, 0 when not seen yet."""
        b = self._buf
        for i in range(n):
            x = data[i]
            k = self._n
            if k == 0:
                if x == SYNC1:
                    b[0] = x
                    self._n = 1
                continue
            if k == 1 and x != SYNC2:
                self._n = 1 if x == SYNC1 else 0
                continue
            b[k] = x
            k += 1
            self._n = k
            if k == 4 and b[2] != CLS_ACK:
                self._n = 0
            elif k == 6 and (b[4] != 2 or b[5] != 0):
                self._n = 0
            elif k == 10:
                self._n = 0
                a, c = checksum(memoryview(b)[2:8])
                if a == b[8] and c == b[9] and b[6] == self.cls and b[7] == self.mid:
                    return 1 if b[3] == ID_ACK_ACK else -1
        return 0


def configure(uart, rate_hz=1, wait_ack=True, generation="m8", retries=3, polls=50, sleep=None):
    """Send the setup frames; with wait_ack, each must be ACKed: up to `polls` reads of the UART per
    attempt (sleep(ms) between polls when given, e.g. hw.compat.sleep_ms on the board; a fake peer
    answers between polls in tests), `retries` attempts per frame. Returns the number of frames ACKed.
    Raises UBXError naming the message on NAK or no answer."""
    if retries < 1 or polls < 1:
        raise ValueError("retries and polls must be >= 1")
    frames = setup_frames(rate_hz, generation)
    w = AckWaiter()
    buf = bytearray(64)
    acked = 0
    for fr in frames:
        if not wait_ack:
            uart.write(fr)
            continue
        w.reset(fr[2], fr[3])
        res = 0
        for _attempt in range(retries):
            uart.write(fr)
            res = 0
            for _p in range(polls):
                n = uart.readinto(buf) if uart.any() else 0
                if n:
                    res = w.feed(buf, n)
                    if res:
                        break
                if sleep is not None:
                    sleep(10)
            if res == 1:
                acked += 1
                break
            if res == -1:
                raise UBXError("UBX NAK for class 0x%02x id 0x%02x" % (fr[2], fr[3]))
        if res != 1:
            raise UBXError("no UBX ACK for class 0x%02x id 0x%02x after %d tries" % (fr[2], fr[3], retries))
    return acked
