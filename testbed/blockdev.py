# RAM block device for tests, MicroPython and CPython (MicroPython block device protocol, extended
# form). Erased bytes are 0xFF. No fault injection (the storage tests have their own flash model).
from hw.compat import const

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)


class RAMBlockDevice:
    def __init__(self, block_size=4096, block_count=64):
        if block_size <= 0 or block_count <= 0:
            raise ValueError("block_size and block_count must be > 0")
        self.block_size = block_size
        self.block_count = block_count
        self.data = bytearray(b"\xff" * (block_size * block_count))
        self.reads = 0
        self.writes = 0
        self.erases = 0

    def _start(self, n, offset, length):
        start = n * self.block_size + offset
        if n < 0 or offset < 0 or start + length > len(self.data):
            raise OSError(22, "block %d offset %d length %d outside the device" % (n, offset, length))
        return start

    def readblocks(self, n, buf, offset=0):
        start = self._start(n, offset, len(buf))
        self.reads += 1
        mv = memoryview(self.data)
        buf[:] = mv[start : start + len(buf)]

    def writeblocks(self, n, buf, offset=None):
        if offset is None:
            offset = 0
        start = self._start(n, offset, len(buf))
        self.writes += 1
        self.data[start : start + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == _IOCTL_INIT or op == _IOCTL_DEINIT or op == _IOCTL_SYNC:
            return 0
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            start = self._start(arg, 0, self.block_size)
            self.erases += 1
            for i in range(start, start + self.block_size):
                self.data[i] = 0xFF
            return 0
        return None
