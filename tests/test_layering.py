"""The import direction of the rooms (docs/architecture.md): tools -> edge_agent -> firmware -> hw.
firmware never imports tools or edge_agent; hw never imports firmware, edge_agent or tools; edge_agent never
imports tools; only tests and benchmarks import the test doubles of testbed/. Read from the source with ast,
every import statement anywhere in a module (functions too)."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = {"firmware": {"tools", "edge_agent", "testbed"},
             "hw": {"firmware", "edge_agent", "tools", "testbed"},
             "edge_agent": {"tools", "testbed"},
             "tools": {"testbed"}}  # testbed/: for tests and tools/bench/ only
NOT_PRODUCT = ("tests/", "testbed/", "tools/bench/")  # tests, test doubles and benchmarks


def imports_of(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(root=ROOT):
    out = []
    for room, banned in FORBIDDEN.items():
        for dirpath, _, files in os.walk(os.path.join(root, room)):
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(dirpath, f)
                    if os.path.relpath(p, root).replace(os.sep, "/").startswith(NOT_PRODUCT):
                        continue
                    for line, mod in imports_of(p):
                        if mod in banned:
                            out.append("%s:%d imports %s" % (os.path.relpath(p, root), line, mod))
    return out


def test_import_direction():
    assert violations() == []


def test_the_check_sees_a_violation(tmp_path):
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "x.py").write_text("def f():\n    from firmware import codec\n")
    assert violations(str(tmp_path)) == ["hw/x.py:2 imports firmware"]


def test_cli_tells_user_errors_from_bugs(capsys, monkeypatch, tmp_path):
    from tools import cli
    from tools.consumer import db as consumer_db

    db = str(tmp_path / "c.db")
    consumer_db.connect(db).close()
    assert cli.main(["trips", "--db", __file__]) == 2  # not a database: the user's mistake, one line
    err = capsys.readouterr().err
    assert (err.startswith("paydbox: error: --db ") and "not a consumer database" in err
            and err.count("\n") == 1)

    def boom_user(args):
        raise LookupError("trip 9: not in the database")

    def boom_bug(args):
        return {}["missing"]

    for fn, rc, start in ((boom_user, 2, "paydbox: error: trip 9"),
                          (boom_bug, 70, "paydbox: internal error: KeyError")):
        monkeypatch.setattr(consumer_db, "list_trips", lambda db, device=None, fn=fn: fn(None))
        got = cli.main(["trips", "--db", db])
        err = capsys.readouterr().err
        assert got == rc and err.startswith(start) and len(err.strip().splitlines()) == 1, err
    assert cli.is_user_error(consumer_db.sqlite3.Error("x")) is False  # not ours, not a ValueError: a bug
    # --debug: the traceback (the exception goes out), for a bug and for a user error alike
    for fn, exc in ((boom_user, LookupError), (boom_bug, KeyError)):
        monkeypatch.setattr(consumer_db, "list_trips", lambda db, device=None, fn=fn: fn(None))
        with pytest.raises(exc):
            cli.main(["--debug", "trips", "--db", db])


# ---------------------------------------------------------------------------------------------------
# Nothing in the shipped rooms exists only for the tests: every module under firmware/, hw/ and
# edge_agent/ is reached from a product entry point (the box's firmware/main.py, the installer's
# manifest, the console scripts of pyproject.toml, the CLI's subcommand table) through product code.
# Tests, benchmarks (tools/bench/) and test doubles (testbed/) do not count as users.
SHIPPED = ("firmware", "hw", "edge_agent")
# a module named in a string of product code (the CLI table, `python -m X`, code the VM runs, manifests)
_NAMED = re.compile(r"\b((?:firmware|hw|edge_agent|tools|testbed)(?:[./]\w+)+)")


def _modules(root):
    """{dotted name: relative path} of every .py file of the project (not .venv, not hidden dirs)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "__pycache__")]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                name = rel[:-3].replace("/", ".")
                out[name[:-9] if name.endswith(".__init__") else name] = rel
    return out


def _uses(path, mods):
    """Project modules a file imports (any nesting, `from pkg import mod` too) or names in a string."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)
            and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(node.module + "." + a.name for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            for m in _NAMED.findall(node.value):
                names.add(m[:-3].replace("/", ".") if m.endswith(".py") else m.replace("/", "."))
    out = set()
    for n in names:
        while n and n not in mods:  # firmware.codec.CodecError -> firmware.codec
            n = n.rpartition(".")[0]
        if n:
            out.add(n)
            while "." in n:  # importing a.b.c runs a/__init__ and a/b/__init__
                n = n.rpartition(".")[0]
                if n in mods:
                    out.add(n)
    return out


def unreached_shipped_modules(root=ROOT):
    """Modules under the shipped rooms that no product code reaches (only tests/benchmarks use them)."""
    mods = _modules(root)
    roots = {"firmware.main"}
    pyproject = open(os.path.join(root, "pyproject.toml"), encoding="utf-8").read()
    roots.update(re.findall(r'^\S+ = "([\w.]+):\w+"', pyproject, re.M))  # [project.scripts]
    product = {n for n, rel in mods.items() if not rel.startswith(NOT_PRODUCT)}
    reached, todo = set(), [r for r in roots if r in mods]
    while todo:
        n = todo.pop()
        if n in reached or n not in product:
            continue
        reached.add(n)
        todo.extend(_uses(os.path.join(root, mods[n]), mods))
    return sorted(mods[n] for n in mods if n.split(".")[0] in SHIPPED and n not in reached and "." in n)


def test_shipped_rooms_hold_no_test_only_code():
    assert unreached_shipped_modules() == []


def test_the_check_sees_test_only_code(tmp_path):
    files = {"pyproject.toml": '[project.scripts]\nx = "tools.cli:main"\n',
             "tools/__init__.py": "", "tools/cli.py": 'TABLE = {"run": "tools.run"}\n',
             "tools/run.py": "from hw import used\n", "tools/bench/b.py": "import hw.bench_only\n",
             "firmware/__init__.py": "", "firmware/main.py": "import hw.compat\n",
             "hw/__init__.py": "", "hw/compat.py": "", "hw/used.py": "", "hw/bench_only.py": "",
             "hw/test_only.py": "", "tests/test_x.py": "import hw.test_only\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert unreached_shipped_modules(str(tmp_path)) == ["hw/bench_only.py", "hw/test_only.py"]
