# Runs one firmware test script under MicroPython (or CPython) and prints one result line per test.
# Protocol (stdout): "@@TEST <name> PASS|FAIL|SKIP" then, for FAIL/SKIP, the traceback/reason lines,
# then "@@END". Used by tests/conftest.py; each test_* function becomes a pytest item.
import sys

try:
    import io
except ImportError:
    import uio as io


def _tb(e):
    buf = io.StringIO()
    if hasattr(sys, "print_exception"):
        sys.print_exception(e, buf)
    else:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=buf)
    return buf.getvalue()


class SkipTest(Exception):
    pass


def main(modname):
    mod = __import__(modname)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for name in names:
        if only and name != only:
            continue
        fn = getattr(mod, name)
        try:
            fn()
            print("@@TEST", name, "PASS")
        except SkipTest as e:
            print("@@TEST", name, "SKIP")
            print(str(e))
        except BaseException as e:  # noqa: B036 - report everything to pytest
            print("@@TEST", name, "FAIL")
            print(_tb(e))
        print("@@END")


main(sys.argv[1])
