# paydbox box firmware (MicroPython; also runs on CPython).
VERSION = "0.1.0"


def unload(name):
    """Forget the module firmware.<name> (boot-only or on-demand code): its functions and tables go
    back to the heap once nothing else refers to them (its names, qstrs, stay). Safe if not loaded."""
    import sys

    sys.modules.pop("firmware." + name, None)
    globals().pop(name, None)
