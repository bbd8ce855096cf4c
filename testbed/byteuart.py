# A UART as two byte queues (MicroPython and CPython): the test puts what the box should read into
# `rx` and finds what the box wrote in `tx`. machine.UART semantics: read/readinto return None when
# nothing is there.


class ByteUart:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n=-1):
        k = min(len(buf), len(self.rx)) if n < 0 else min(n, len(buf), len(self.rx))
        if not k:
            return None
        buf[:k] = self.rx[:k]
        self.rx = self.rx[k:]
        return k

    def read(self, n=-1):
        k = len(self.rx) if n < 0 else min(n, len(self.rx))
        if not k:
            return None
        d = bytes(self.rx[:k])
        self.rx = self.rx[k:]
        return d

    def write(self, b):
        self.tx.extend(b)
        return len(b)
