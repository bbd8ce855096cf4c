# Emulated NOR flash block device for littlefs (vfs.VfsLfs2) with a power-cut injector.
# Runs under the MicroPython VM and CPython (the CPython side has no VfsLfs2: used for unit checks).
#
# Extended block protocol: readblocks(n, buf, off), writeblocks(n, buf, off), ioctl(op, arg) with
# 4 = block count, 5 = block size, 6 = erase block arg. NOR semantics: erase sets a 4 KiB block to 0xFF,
# programming can only clear bits (new = old & data).
#
# Power cut: cut_after = number of bytes that may still be programmed. The write that crosses it is
# torn: only the bytes before the limit reach the flash (the last of them possibly half-programmed,
# i.e. only some of its bits cleared), then PowerCut is raised. Erases count as programming
# ERASE_COST bytes; an erase interrupted by the cut leaves the block partly erased (first part 0xFF).
# After the cut every access raises PowerCut until revive().

BLOCK = 4096
ERASE_COST = 16
_IOCTL_COUNT = 4
_IOCTL_SIZE = 5
_IOCTL_ERASE = 6


class PowerCut(Exception):
    pass


class FlashSim:
    def __init__(self, nblocks=256, block_size=BLOCK, image=None, buffer=None):
        if nblocks < 2 or block_size < 128 or block_size & (block_size - 1):
            raise ValueError("flashsim: nblocks >= 2 and a power-of-two block_size >= 128 expected")
        self.nblocks = nblocks
        self.bs = block_size
        self._ff = b"\xff" * block_size
        if buffer is not None:
            # share an existing flash content (power_cycle): no copy
            if len(buffer) != nblocks * block_size:
                raise ValueError("flashsim: buffer size %d != %d" % (len(buffer), nblocks * block_size))
            self.data = buffer
        elif image is not None:
            if len(image) != nblocks * block_size:
                raise ValueError("flashsim: image size %d != %d" % (len(image), nblocks * block_size))
            self.data = bytearray(image)
        else:
            self.data = bytearray(nblocks * block_size)
            for i in range(nblocks):
                self.data[i * block_size:(i + 1) * block_size] = self._ff
        self.erases = [0] * nblocks  # erase count per block
        self.programmed = 0  # bytes programmed since creation
        self.writes = 0  # writeblocks calls
        self.cut_after = -1  # -1: no cut armed
        self.dead = False
        self.partial_seed = 1
        self._dead_exc = PowerCut("flash: no power")  # raised without allocating (GC finalisers)

    def load(self, image):
        """Power-on with the given flash content (no allocation: reuses the buffer)."""
        if len(image) != len(self.data):
            raise ValueError("flashsim: image size %d != %d" % (len(image), len(self.data)))
        self.data[:] = image
        for i in range(self.nblocks):
            self.erases[i] = 0
        self.programmed = 0
        self.writes = 0
        self.cut_after = -1
        self.dead = False

    def snapshot(self):
        return bytes(self.data)

    def arm(self, nbytes):
        """Cut power after nbytes more programmed bytes (erases count ERASE_COST)."""
        self.cut_after = nbytes
        self.dead = False

    def power_cycle(self):
        """Power comes back: returns a new device on the same flash content. This object stays dead
        for good, so file objects of a filesystem mounted before the cut can never touch the flash
        again (their finalisers fail instead of writing)."""
        new = FlashSim(self.nblocks, self.bs, buffer=self.data)
        new.erases = self.erases
        new.programmed = self.programmed
        new.writes = self.writes
        self.cut_after = 0
        self.dead = True
        return new

    def revive(self):
        self.cut_after = -1
        self.dead = False

    def _check(self):
        if self.dead:
            raise self._dead_exc

    def readblocks(self, n, buf, off=0):
        self._check()
        a = n * self.bs + off
        ln = len(buf)
        if n < 0 or a + ln > len(self.data):
            raise OSError(5)
        buf[:] = self.data[a:a + ln]

    def writeblocks(self, n, buf, off=None):
        self._check()
        if off is None:
            # simple protocol: erase the blocks first
            nb = (len(buf) + self.bs - 1) // self.bs
            for i in range(nb):
                self.ioctl(_IOCTL_ERASE, n + i)
            off = 0
        a = n * self.bs + off
        ln = len(buf)
        if n < 0 or a + ln > len(self.data):
            raise OSError(5)
        d = self.data
        allow = ln
        torn = False
        if self.cut_after >= 0 and self.cut_after < ln:
            allow = self.cut_after
            torn = True
        if allow == ln and d[a:a + ln] == self._ff[:ln] if ln <= self.bs else False:
            d[a:a + ln] = buf  # programming erased flash: the common case, done in C
        else:
            for i in range(allow):
                d[a + i] &= buf[i]
        self.programmed += allow
        self.writes += 1
        if torn:
            if allow < ln:
                # the byte being programmed when the power went: some of its bits cleared
                self.partial_seed = (self.partial_seed * 1103515245 + 12345) & 0x7FFFFFFF
                mask = (self.partial_seed >> 8) & 0xFF
                d[a + allow] &= buf[allow] | mask
            self.cut_after = 0
            self.dead = True
            raise PowerCut("flash: power cut during write of block %d off %d (%d of %d bytes)"
                           % (n, off, allow, ln))
        if self.cut_after >= 0:
            self.cut_after -= ln

    def ioctl(self, op, arg):
        if op == _IOCTL_COUNT:
            return self.nblocks
        if op == _IOCTL_SIZE:
            return self.bs
        if op == _IOCTL_ERASE:
            self._check()
            if arg < 0 or arg >= self.nblocks:
                return -5
            a = arg * self.bs
            if self.cut_after >= 0 and self.cut_after < ERASE_COST:
                # interrupted erase: part of the block erased
                part = self.bs * self.cut_after // ERASE_COST
                for i in range(a, a + part):
                    self.data[i] = 0xFF
                self.erases[arg] += 1
                self.cut_after = 0
                self.dead = True
                raise PowerCut("flash: power cut during erase of block %d" % arg)
            self.data[a:a + self.bs] = self._ff
            self.erases[arg] += 1
            if self.cut_after >= 0:
                self.cut_after -= ERASE_COST
            return 0
        return 0  # 1 init, 2 deinit, 3 sync: nothing to do

    def total_erases(self):
        t = 0
        for e in self.erases:
            t += e
        return t
