"""The box's string constants that are names load as qstrs, not as heap objects.

mpy-cross makes a string constant of more than 10 characters a str object (a 32-byte heap block and
its 8-byte slot in the module's constant table, on the 64-bit VM) unless the same text was already
seen in the file as a name (py/parse.c: "check if this string is already interned"); a qstr costs 16
bytes of the qstr pool, and nothing when another module has the same name. Every box module names
its own in an `if 0:` block (compiled away) before it uses them: 195 of them (docs/heap.md,
"Strings and the calibration's floats": with the calibration's scratch, the bundled drive's live
peak fell from 95.6 to 90.0 KB). A record field, a config key or a counter added without its name
there fails here."""
import os

import pytest

from tools.installer.flash import BOX_MODULES, VBOX_MODULES
from tools.mpyinfo import compile_py, name_like, parse, str_constants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("rel", sorted(BOX_MODULES + VBOX_MODULES))
def test_name_like_strings_are_qstrs(rel):
    left = sorted({s for s in str_constants(os.path.join(ROOT, rel)) if name_like(s)})
    assert not left, "%s: string constants loaded as heap objects; add them to its `if 0:` names: %s" % (
        rel, ", ".join(left))


def test_the_reader_sees_a_str_constant_and_its_interning(tmp_path):
    # the rule itself, on mpy-cross: a long name-like string is a str object until a name spells it first
    a = tmp_path / "a.py"
    a.write_text("def f():\n    return 'speed_start_mmps'\n")
    assert str_constants(str(a)) == ["speed_start_mmps"]
    b = tmp_path / "b.py"
    b.write_text("if 0:\n    dict(speed_start_mmps=0)\n\n\ndef f():\n    return 'speed_start_mmps'\n")
    assert str_constants(str(b)) == []
    assert "speed_start_mmps" in parse(compile_py(str(b)))["qstrs"]
    # short strings are qstrs anyway, and a message (not a name) stays an object: nothing to intern
    assert not name_like("a message, with spaces") and name_like("motion_faults") and not name_like("class")


def test_the_reader_sees_a_frame_size(tmp_path):
    # py/bc.h's prelude: n_state = locals + the deepest stack; each try nesting one exception entry.
    # `return a` of f(a, b) holds two locals and one stack slot; a try in g adds one entry.
    c = tmp_path / "c.py"
    c.write_text("def f(a, b):\n    return a\n\n\n"
                 "def g(x):\n    try:\n        return x\n    except OSError:\n        return 0\n")
    funcs = {name: (n_state, n_exc) for name, n_state, n_exc in parse(compile_py(str(c)))["funcs"]}
    assert funcs["f"] == (3, 0)
    assert funcs["g"][1] == 1
