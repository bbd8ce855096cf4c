# paydbox box firmware (MicroPython; also runs on CPython).
VERSION = "0.1.0"


def unload(name):
    """Forget the module firmware.<name> (boot-only or on-demand code): its functions and tables go
    back to the heap once nothing else refers to them (its names, qstrs, stay). Safe if not loaded."""
    import sys

    sys.modules.pop("firmware." + name, None)
    globals().pop(name, None)


def call(name, fn, *args):
    """firmware.<name>.<fn>(*args) with the module loaded for this call only: it, and any firmware
    module the call loaded (firmware/pin.py for a PIN), are unloaded after, unless loaded before."""
    import sys

    before = [m for m in sys.modules if m.startswith("firmware.")]
    mod = __import__("firmware." + name, None, None, (fn,))
    try:
        return getattr(mod, fn)(*args)
    finally:
        mod = None
        for m in [m for m in sys.modules if m.startswith("firmware.") and m not in before]:
            unload(m[9:])
