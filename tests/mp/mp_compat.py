# Firmware tests for hw/compat.py, run under MicroPython and CPython.
from hw.compat import VirtualClock, const, ticks_add, ticks_diff
from mptest import assert_eq, heap_locked

_X = const(0x20)


def test_const():
    assert_eq(_X, 32, "const")


def test_ticks_wrap():
    a = ticks_add(0, -5)
    assert_eq(ticks_diff(ticks_add(a, 10), a), 10, "wrap diff")


def _spin(clock, n):
    for i in range(n):
        clock.now += 10
    return clock.now


def test_virtual_clock_heap_locked():
    c = VirtualClock(0)
    assert_eq(heap_locked(_spin, c, 100), 1000, "clock")


def test_system_clock_is_monotonic_ms_since_start():
    from hw.compat import SystemClock, sleep_ms

    c = SystemClock()
    a = c.ticks_ms()
    sleep_ms(20)
    b = c.ticks_ms()
    assert_eq(a >= 0 and 15 <= b - a < 1000, True, "elapsed %d" % (b - a))


def test_zeros_is_an_array_of_n_zeros():
    from array import array

    from hw.compat import zeros

    for tc, n in (("H", 3182), ("h", 1500), ("i", 1), ("i", 128), ("f", 441), ("B", 0)):
        a = zeros(tc, n)
        assert_eq(type(a), array, "type")
        assert_eq(len(a), n, "len %s %d" % (tc, n))
        assert_eq(sum(a), 0, "zeros %s %d" % (tc, n))
        if n:
            a[n - 1] = 7  # of its type: holds a small int
            assert_eq(a[n - 1], 7, "item")
