# Helpers for firmware test scripts that run under MicroPython and CPython.
import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"


class SkipTest(Exception):
    pass


def skip(reason):
    # the runner reports SkipTest by name, whichever module defined it
    raise sys.modules["__main__"].SkipTest(reason) if hasattr(sys.modules.get("__main__"), "SkipTest") else SkipTest(reason)


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
    No *args: building an argument tuple would itself allocate. On CPython there is no heap lock;
    the call still runs (the MicroPython item is the proof)."""
    if IS_MICROPYTHON:
        import micropython

        micropython.heap_lock()
    try:
        if c is not None:
            return fn(a, b, c)
        if b is not None:
            return fn(a, b)
        return fn(a)
    finally:
        if IS_MICROPYTHON:
            micropython.heap_unlock()
