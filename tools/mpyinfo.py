"""What an .mpy file (MicroPython's compiled module, version 6) holds that costs the box heap when it
loads from ROMFS: its qstrs, its constant objects (on the 64-bit VM a str or float constant is a
32-byte heap block plus its 8-byte slot, a qstr 16 bytes of the qstr pool) and each function's frame
size (MicroPython puts a call's frame on the heap when its state is over 11 words). Compiles with the
mpy-cross the image is built with (tools/installer/flash.py).

Format: py/persistentcode.c (load_raw_code, load_obj) and py/bc.h (the prelude's signature)."""
import os
import re
import subprocess
import tempfile

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OBJ_TYPES = {5: "str", 6: "bytes", 7: "int", 8: "float", 9: "complex"}


class MpyError(ValueError):
    """Not an .mpy this reader knows (offset in the message)."""


def _uint(b, i):
    v = 0
    while True:
        if i >= len(b):
            raise MpyError("truncated varint at byte %d" % i)
        c = b[i]
        i += 1
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            return v, i


def compile_py(path):
    """The .mpy bytes mpy-cross makes of path."""
    with tempfile.TemporaryDirectory() as t:
        out = os.path.join(t, "m.mpy")
        from tools.installer.flash import mpy_cross_exe

        subprocess.run(mpy_cross_exe() + ["-o", out, path], check=True, capture_output=True)
        with open(out, "rb") as f:
            return f.read()


def parse(b):
    """{"qstrs": [str], "objs": [(type, value)], "funcs": [(name, n_state, n_exc)]} of .mpy bytes: a
    static qstr (the VM's own, e.g. __init__) is None in qstrs and <qN> in a function's name."""
    if len(b) < 4 or b[0] != 0x4D or b[1] != 6:
        raise MpyError("byte 0: not an .mpy of version 6")
    i = 4
    nq, i = _uint(b, i)
    no, i = _uint(b, i)
    qstrs = []
    for _ in range(nq):
        n, i = _uint(b, i)
        if n & 1:  # a static qstr (index into the VM's own table)
            qstrs.append(None)
            continue
        n >>= 1
        qstrs.append(b[i:i + n].decode())
        i += n + 1

    def obj(i):
        t = b[i]
        i += 1
        if t <= 4:  # fun table, None, False, True, Ellipsis
            return i, ("const", t)
        if t == 10:
            n, i = _uint(b, i)
            items = []
            for _ in range(n):
                i, it = obj(i)
                items.append(it)
            return i, ("tuple", items)
        if t not in _OBJ_TYPES:
            raise MpyError("byte %d: unknown constant type %d" % (i - 1, t))
        n, i = _uint(b, i)
        d = b[i:i + n]
        i += n
        if t in (5, 6):
            i += 1  # the terminating NUL
        return i, (_OBJ_TYPES[t], d.decode() if t == 5 else d)

    objs = []
    for _ in range(no):
        i, o = obj(i)
        objs.append(o)
    funcs = []

    def raw(i, prefix, top):
        kl, i = _uint(b, i)
        kind, children, n = kl & 3, kl & 4, kl >> 3
        code = b[i:i + n]
        i += n
        name = ""
        if kind == 0:  # bytecode: the prelude's signature (xSSSSEAA, then xFSSKAEE bytes), then sizes
            j = 0
            z = code[j]
            j += 1
            s, e = (z >> 3) & 0xF, (z >> 2) & 1
            k = 0
            while z & 0x80:
                z = code[j]
                j += 1
                s |= (z & 0x30) << (2 * k)
                e |= (z & 0x02) << k
                k += 1
            while code[j] & 0x80:
                j += 1
            j += 1
            q, j = _uint(code, j)
            name = (qstrs[q] if q < len(qstrs) else None) or "<q%d>" % q
            funcs.append((prefix + name, s + 1, e))
        if children:
            nc, i = _uint(b, i)
            for _ in range(nc):
                i = raw(i, "" if top else prefix + name + ".", False)  # (the module's own: no prefix)
        return i

    raw(i, "", True)
    return {"qstrs": qstrs, "objs": objs, "funcs": funcs}


def str_constants(path):
    """The str constants path's module loads as heap objects (not qstrs)."""
    return [v for t, v in parse(compile_py(path))["objs"] if t == "str"]


def name_like(s):
    """True when s could be a qstr for the price of a name seen first (an identifier)."""
    import keyword

    return bool(_IDENT.match(s)) and not keyword.iskeyword(s)
