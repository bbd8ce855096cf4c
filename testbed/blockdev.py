# Block devices for tests (MicroPython block device protocol, extended form; erased bytes are 0xFF):
# RAMBlockDevice (MicroPython and CPython) and FileBlockDevice (a file, CPython). No fault injection
# (the storage tests have their own flash model, testbed/flashsim.py).
import errno
import os

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


class FileBlockDevice:
    """Block device in a file (created/extended to block_size * block_count bytes, erased = 0xFF).
    MicroPython block device protocol, extended form: readblocks(n, buf, offset=0),
    writeblocks(n, buf, offset=None) (offset None: whole-block write, implies erase), ioctl(op, arg)."""

    def __init__(self, path, block_size=4096, block_count=256):
        if block_size <= 0 or block_count <= 0:
            raise ValueError("block_size and block_count must be > 0")
        self.path = path
        self.block_size = block_size
        self.block_count = block_count
        size = block_size * block_count
        mode = "r+b" if os.path.exists(path) else "w+b"
        self._f = open(path, mode)
        self._f.seek(0, 2)
        have = self._f.tell()
        if have < size:
            self._f.write(b"\xff" * (size - have))
            self._f.flush()

    def _check(self, n, offset, length):
        start = n * self.block_size + offset
        if n < 0 or offset < 0 or start + length > self.block_size * self.block_count:
            raise OSError(errno.EINVAL,
                          "block %d offset %d length %d outside the device" % (n, offset, length))
        return start

    def readblocks(self, n, buf, offset=0):
        start = self._check(n, offset, len(buf))
        self._f.seek(start)
        data = self._f.read(len(buf))
        buf[: len(data)] = data

    def writeblocks(self, n, buf, offset=None):
        if offset is None:
            offset = 0
        start = self._check(n, offset, len(buf))
        self._f.seek(start)
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 1:  # init
            return 0
        if op == 2:  # deinit
            self._f.flush()
            return 0
        if op == 3:  # sync
            self._f.flush()
            os.fsync(self._f.fileno())
            return 0
        if op == 4:  # block count
            return self.block_count
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase block arg
            self._check(arg, 0, self.block_size)
            self._f.seek(arg * self.block_size)
            self._f.write(b"\xff" * self.block_size)
            return 0
        return None

    def close(self):
        self._f.close()
