"""The import direction of the rooms (docs/architecture.md): tools -> edge_agent -> firmware -> hw.
firmware never imports tools or edge_agent; hw never imports firmware, edge_agent or tools; edge_agent never
imports tools. Read from the source with ast, every import statement anywhere in a module (functions too)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = {"firmware": {"tools", "edge_agent"}, "hw": {"firmware", "edge_agent", "tools"},
             "edge_agent": {"tools"}}


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
    assert err.startswith("paydbox: error: --db ") and "not a consumer database" in err and err.count("\n") == 1

    def boom_user(args):
        raise LookupError("trip 9: not in the database")

    def boom_bug(args):
        return {}["missing"]

    for fn, rc, start in ((boom_user, 2, "paydbox: error: trip 9"), (boom_bug, 70, "paydbox: internal error: KeyError")):
        monkeypatch.setattr(consumer_db, "list_trips", lambda db, device=None, fn=fn: fn(None))
        got = cli.main(["trips", "--db", db])
        err = capsys.readouterr().err
        assert got == rc and err.startswith(start) and len(err.strip().splitlines()) == 1, err
    assert cli.is_user_error(consumer_db.sqlite3.Error("x")) is False  # not ours, not a ValueError: a bug
