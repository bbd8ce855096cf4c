# Tiny compatibility shim so the same firmware runs on MicroPython and CPython.
# Only this module may look at which runtime it is on.
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const  # noqa: F401
except ImportError:  # CPython

    def const(x):
        return x


try:
    import micropython as _mp

    heap_lock = _mp.heap_lock
    heap_unlock = _mp.heap_unlock
except (ImportError, AttributeError):  # CPython: no GC heap to lock

    def heap_lock():
        return 0

    def heap_unlock():
        return 0


def path_exists(path):
    """os.path.exists for both runtimes (MicroPython's os has no os.path)."""
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


import time as _time

if hasattr(_time, "ticks_ms"):
    ticks_ms = _time.ticks_ms
    ticks_diff = _time.ticks_diff
    ticks_add = _time.ticks_add
    sleep_ms = _time.sleep_ms
else:
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = _TICKS_PERIOD >> 1

    def ticks_ms():
        return int(_time.monotonic() * 1000) & (_TICKS_PERIOD - 1)  # type: ignore[attr-defined]  # CPython only

    def ticks_add(t, delta):
        return (t + delta) & (_TICKS_PERIOD - 1)

    def ticks_diff(a, b):
        # signed difference a - b in the wrapped tick space (ms)
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


class VirtualClock:
    """Clock for replay: time advances only when told. Units: ms since trace start."""

    def __init__(self, start_ms=0):
        self.now = start_ms

    def ticks_ms(self):
        return self.now


class SystemClock:
    """Box time for the firmware: ms since boot that never wraps (the board's ticks_ms wraps, every
    ~12 days on most ports); call ticks_ms() at least once per wrap period (the main loop does)."""

    def __init__(self):
        self._last = ticks_ms()
        self.now = 0

    def ticks_ms(self):
        t = ticks_ms()
        self.now += ticks_diff(t, self._last)
        self._last = t
        return self.now


_ITEM_BYTES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "f": 4, "d": 8}


def zeros(typecode, n):
    """array(typecode) of n zeros, for the firmware's big buffers. array(t, bytes(k)) holds a k-byte
    zero buffer and the array at once, so it needs two free blocks of k bytes; this grows the array
    512 bytes at a time instead (MicroPython's gc_realloc extends a block into free heap after it in
    place), so a 6 KB buffer needs one 6 KB hole, not two, in a fragmented heap."""
    from array import array

    a = array(typecode)
    grow = a.extend if IS_MICROPYTHON else a.frombytes  # MicroPython: extend(buffer) copies its bytes
    left = n * _ITEM_BYTES[typecode]
    z = bytes(512 if left > 512 else left)
    while left >= 512:
        grow(z)
        left -= 512
    if left:
        grow(bytes(left))
    return a


def byte_view(a, nbytes):
    """The first nbytes bytes of array a's memory as a writable memoryview of bytes (no copy; every
    supported MCU and host is little-endian)."""
    if IS_MICROPYTHON:
        import uctypes

        return memoryview(uctypes.bytearray_at(uctypes.addressof(a), nbytes))
    return memoryview(a).cast("B")[:nbytes]


def bytes_of(a, nbytes):
    """A bytearray of the first nbytes bytes of array a. MicroPython: over the array's own memory
    (no copy: it changes with the array); CPython cannot alias an array with a bytearray: a copy."""
    if IS_MICROPYTHON:
        import uctypes

        return uctypes.bytearray_at(uctypes.addressof(a), nbytes)
    return bytearray(memoryview(a).cast("B")[:nbytes])


def int16_array(n):
    """(array('h') of n zeros, writable byte view of the same memory): a bus reads little-endian
    16-bit registers straight into the bytes and the firmware reads them as signed ints (every
    supported MCU and host is little-endian)."""
    from array import array

    a = array("h", bytes(2 * n))
    if IS_MICROPYTHON:
        import uctypes

        return a, uctypes.bytearray_at(uctypes.addressof(a), 2 * n)
    if sys.byteorder != "little":  # pragma: no cover
        raise OSError("int16_array: big-endian host")
    return a, memoryview(a).cast("B")
