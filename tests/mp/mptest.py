# Helpers for firmware test scripts that run under MicroPython and CPython.
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


class SkipTest(Exception):
    pass


def skip(reason):
    # the runner reports SkipTest by name, whichever module defined it
    raise (sys.modules["__main__"].SkipTest(reason) if hasattr(sys.modules.get("__main__"), "SkipTest")
           else SkipTest(reason))


def assert_eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: %r != %r" % (what, a, b))


def assert_raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r" % (exc, fn))


def heap_locked(fn, a=None, b=None, c=None):
    """Run fn(a[, b[, c]]) with the MicroPython heap locked: any allocation raises MemoryError.
    No *args: building an argument tuple would itself allocate. CPython has no heap lock, so a run
    there would prove nothing: tests that use this are named test_*heap_locked* and tests/conftest.py
    collects them for MicroPython only; a call under CPython is an error, never a silent pass."""
    if not IS_MICROPYTHON:
        raise AssertionError("heap_locked() under CPython proves nothing: name the test test_*heap_locked*")
    import micropython

    micropython.heap_lock()
    try:
        if c is not None:
            return fn(a, b, c)
        if b is not None:
            return fn(a, b)
        return fn(a)
    finally:
        micropython.heap_unlock()
