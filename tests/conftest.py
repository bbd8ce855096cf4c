"""pytest plugin: firmware test scripts tests/mp/mp_*.py run under the real MicroPython VM and
under CPython; each test_* function of a script is one pytest item per runtime, and a failure shows the
MicroPython traceback. test_*heap_locked* functions (allocation proofs under micropython.heap_lock())
run under MicroPython only: CPython has no heap lock to prove anything with."""
import os
import subprocess
import sys

import pytest

from tools.mpvm import micropython_binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPDIR = os.path.join(ROOT, "tests", "mp")
SHARED_NMEA = os.path.join(os.path.dirname(ROOT), "shared", "data", "nmea")


def run_mp_script(module, runtime, only=None, heapsize="2M", timeout=600):
    if runtime == "micropython":
        exe = micropython_binary()  # MicroPythonNotFound naming the install step
        cmd = [exe, "-X", "heapsize=" + heapsize, os.path.join(MPDIR, "_runner.py"), module]
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([MPDIR, ROOT, ".frozen"]))
    else:
        cmd = [sys.executable, os.path.join(MPDIR, "_runner.py"), module]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([MPDIR, ROOT]))
    if only:
        cmd.append(only)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    results = {}
    cur = None
    lines = []
    for line in p.stdout.splitlines():
        if line.startswith("@@TEST "):
            _, name, status = line.split()
            cur = (name, status)
            lines = []
        elif line == "@@END" and cur:
            results[cur[0]] = (cur[1], "\n".join(lines))
            cur = None
        elif cur:
            lines.append(line)
    return results, p


_cache = {}


def mp_results(path, runtime):
    key = (path, runtime)
    if key not in _cache:
        mod = os.path.splitext(os.path.basename(path))[0]
        _cache[key] = run_mp_script(mod, runtime)
    return _cache[key]


class MPItem(pytest.Item):
    def __init__(self, *, runtime, fname, **kw):
        super().__init__(**kw)
        self.runtime = runtime
        self.fname = fname

    def runtest(self):
        results, proc = mp_results(str(self.path), self.runtime)
        if self.fname not in results:
            raise MPFailure(
                "%s did not report %s (exit %s)\n%s\n%s"
                % (self.runtime, self.fname, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
            )
        status, text = results[self.fname]
        if status == "SKIP":
            pytest.skip(text.strip())
        if status != "PASS":
            raise MPFailure("%s traceback:\n%s" % (self.runtime, text))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, MPFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, "%s::%s[%s]" % (self.path.name, self.fname, self.runtime)


class MPFailure(Exception):
    pass


class MPFile(pytest.File):
    def collect(self):
        import ast

        tree = ast.parse(self.path.read_text())
        names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
        for runtime in ("cpython", "micropython"):
            for name in sorted(names):
                if runtime == "cpython" and "heap_locked" in name:
                    continue  # a heap_lock proof means something only on MicroPython (tests/mp/mptest.py)
                yield MPItem.from_parent(self, name="%s[%s]" % (name, runtime), runtime=runtime, fname=name)


def pytest_collect_file(parent, file_path):
    if str(file_path.parent) == MPDIR and file_path.name.startswith("mp_") and file_path.suffix == ".py":
        return MPFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def shared_nmea_dir():
    if not os.path.isdir(SHARED_NMEA):
        pytest.skip("../shared/data/nmea is absent: the real-receiver NMEA corpus is only beside the project "
                    "checkout")
    return SHARED_NMEA


class _NotAPythonModule(pytest.Module):
    def collect(self):
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    # tests/mp/*.py are MicroPython scripts run by MPFile, never imported by pytest itself
    if str(module_path.parent) == MPDIR:
        return _NotAPythonModule.from_parent(parent, path=module_path)
    return None
