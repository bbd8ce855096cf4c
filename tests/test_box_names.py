"""The Box's instance dict is sized at the start of its __init__ (firmware/app.py): every name the Box
ever sets is assigned there first, so the dict grows through its smaller tables on an empty heap and
never again between the boot's buffers or in the loop (on a 96K heap the 47-slot table, 752 B, found no
hole when it grew late in the boot). MicroPython's map sizes: 47 slots, then 59 (a rehash that holds both
tables at once). Static check over the source: it fails when a method sets a name the list lacks, or
when the list grows past the 47-slot table."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SLOTS = 47   # MicroPython's map size for 47 names (py/map.c hash_allocation_sizes: ... 29, 37, 47, 59)


def _box_class():
    with open(os.path.join(ROOT, "firmware", "app.py")) as f:
        tree = ast.parse(f.read())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Box")


def _self_targets(node):
    for n in ast.walk(node):
        if isinstance(n, ast.Assign):
            targets = n.targets
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)):
            targets = [n.target]
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                yield t.attr


def _upfront_names(box):
    init = next(n for n in box.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = []
    for stmt in init.body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                and stmt.value.value is None and all(isinstance(t, ast.Attribute) for t in stmt.targets)):
            break   # the list ends at the first statement that is not `self.a = self.b = ... = None`
        names += [t.attr for t in stmt.targets]
    return names


def test_every_box_name_is_assigned_first_and_fits_the_table():
    box = _box_class()
    upfront = _upfront_names(box)
    assert upfront, "Box.__init__ does not start with its names"
    assert len(upfront) == len(set(upfront))
    assert len(upfront) <= _SLOTS, "%d names: the Box's dict grows to 59 slots" % len(upfront)
    late = sorted(set(_self_targets(box)) - set(upfront))
    assert not late, "Box names set but not assigned first in __init__: %s" % late
