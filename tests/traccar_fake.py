"""A byte-level fake Traccar `teltonika` server (Traccar itself cannot be installed here).

It follows what Traccar's TeltonikaProtocolDecoder does on TCP: the IMEI login is answered 01 for a
known device and 00 otherwise; a data packet is answered with its record count (4 bytes, big-endian).
Every accepted packet is decoded by an independent decoder, the PyPI `codecs-protocol` package (not
paydbox code), and kept in `records`. Faults, consumed one per packet in order of arrival:
  "lose_ack"  the packet is taken (records kept, as Traccar would have stored them) but its ACK is
              lost on the way: the connection stays open and silent, the client must time out and send
              it again (a duplicate the protocol allows);
  "close_before_ack"  records kept, then the connection closes before the ACK;
  "drop_mid"  the connection closes when half the packet has arrived: nothing is kept, nothing acked;
  None        normal.
"""
import asyncio
import socket
import threading
import time

from codecs_protocol import Codec8E


def oracle_decode(packet):
    """codecs-protocol's reading of one TCP packet: (records, ack hex). Its known faults, which the
    tests correct for and document: latitude/longitude read unsigned (a southern or western position
    comes back as ~429 deg minus its value), the timestamp as a 'dd.mm.YYYY HH:MM:SS' string (ms
    dropped), variable-length (NX) IO elements not parsed (paydbox sends none), and no CRC check."""
    return asyncio.run(Codec8E(packet.hex()).decode_data())


def oracle_signed(v_deg):
    """Undo codecs-protocol's unsigned read of a 1e-7 degree int32."""
    e7 = int(round(v_deg * 1e7))
    return (e7 - (1 << 32) if e7 >= 1 << 31 else e7) / 1e7


def crc16_ibm_ref(data):
    """Reference CRC-16/IBM (ARC) written from the algorithm's definition, for the fake's own check."""
    crc = 0
    for b in data:
        for i in range(8):
            bit = ((b >> i) & 1) ^ (crc & 1)
            crc >>= 1
            if bit:
                crc ^= 0xA001
    return crc


class FakeTraccar:
    def __init__(self, imeis=(), host="127.0.0.1"):
        self.imeis = set(imeis)
        self.faults = []
        self.records = []     # (imei, oracle record dict)
        self.packets = []     # raw packets whose records were kept
        self.logins = []      # (imei, accepted)
        self.acks = 0
        self.bad_crc = 0
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind((host, 0))
        self.srv.listen(8)
        self.host, self.port = self.srv.getsockname()
        self._stop = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.srv.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read(c, n):
        b = b""
        while len(b) < n:
            d = c.recv(n - len(b))
            if not d:
                raise ConnectionError("client closed")
            b += d
        return b

    def _serve(self, c):
        c.settimeout(30)
        try:
            n = int.from_bytes(self._read(c, 2), "big")
            imei = self._read(c, n).decode("ascii")
            ok = imei in self.imeis
            with self.lock:
                self.logins.append((imei, ok))
            c.sendall(b"\x01" if ok else b"\x00")
            if not ok:
                return
            while not self._stop:
                head = self._read(c, 8)
                assert head[:4] == b"\0\0\0\0", "preamble"
                total = int.from_bytes(head[4:8], "big") + 4
                with self.lock:
                    fault = self.faults.pop(0) if self.faults else None
                if fault == "drop_mid":
                    self._read(c, total // 2)
                    return
                body = self._read(c, total)
                data, crc = body[:-4], int.from_bytes(body[-4:], "big")
                if crc != crc16_ibm_ref(data):
                    with self.lock:
                        self.bad_crc += 1
                    return
                resp, ack = oracle_decode(head + body)
                with self.lock:
                    self.packets.append(head + body)
                    for r in resp["records"]:
                        self.records.append((imei, r))
                if fault == "lose_ack":
                    while not self._stop and c.recv(65536):
                        pass  # whatever else comes on this connection goes unanswered
                    return
                if fault == "close_before_ack":
                    return
                c.sendall(bytes.fromhex(ack))
                with self.lock:
                    self.acks += 1
        except (ConnectionError, OSError, socket.timeout):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def wait(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred(self):
                    return True
            time.sleep(0.05)
        return False

    def close(self):
        self._stop = True
        try:
            self.srv.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
