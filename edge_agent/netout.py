"""Shared plumbing of the agent's TCP outputs (Traccar Codec 8 Extended, OsmAnd HTTP): a non-blocking
connection driven from the agent's single loop, and reconnect backoff with full jitter (monotonic time)."""
import errno
import logging
import random
import socket

log = logging.getLogger("paydbox.agent.out")


class LinkDown(Exception):
    pass


class Conn:
    """A non-blocking TCP connection: connect() then poll() every loop pass; send() queues bytes,
    recv_into_buffer() appends what arrived to self.rx. LinkDown on any failure or peer close."""

    def __init__(self, host, port):
        self.host, self.port = host, int(port)
        self.sock = None
        self.connected = False
        self.tx = bytearray()
        self.rx = bytearray()

    def connect(self):
        try:
            addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
        except OSError as e:
            raise LinkDown("cannot resolve %s: %s" % (self.host, e))
        s = socket.socket(addr[0], socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(addr[4])
        if rc not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            s.close()
            raise LinkDown("connect %s:%d: %s" % (self.host, self.port, errno.errorcode.get(rc, rc)))
        self.sock = s
        self.connected = rc == 0

    def poll(self):
        """Advance connect and send; read what is there. Returns True once connected."""
        import select

        s = self.sock
        if s is None:
            raise LinkDown("not connected")
        r, w, _ = select.select([s], [s] if (not self.connected or self.tx) else [], [], 0)
        if not self.connected:
            if not w:
                return False
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise LinkDown("connect %s:%d: %s" % (self.host, self.port, errno.errorcode.get(err, err)))
            self.connected = True
        if self.tx and w:
            try:
                n = s.send(self.tx)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                raise LinkDown("send: %s" % e)
            del self.tx[:n]
        if r:
            try:
                d = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                d = None
            except OSError as e:
                raise LinkDown("recv: %s" % e)
            if d == b"":
                raise LinkDown("closed by the server")
            if d:
                self.rx += d
        return True

    def send(self, data):
        self.tx += data

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.connected = False
        self.tx = bytearray()
        self.rx = bytearray()


class Backoff:
    def __init__(self, lo=0.5, hi=60.0):
        self.lo, self.hi = float(lo), float(hi)
        self.attempt = 0

    def next_delay(self, at_least=0.0):
        self.attempt += 1
        cap = min(self.hi, self.lo * 2 ** min(self.attempt, 20))
        return max(at_least, random.uniform(self.lo / 2, cap))

    def reset(self):
        self.attempt = 0
