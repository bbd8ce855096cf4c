"""A real PostgreSQL server started for tests and benchmarks (Debian's `postgresql` package, installed by
`make setup`): initdb in a temporary directory, run as an unprivileged user (`nobody` through runuser when
started as root: PostgreSQL refuses to run as root), listening on 127.0.0.1 on a free port, trust auth for
the `paydbox` role. `new_database()` gives the URL of a fresh empty database."""
import glob
import os
import shutil
import subprocess
import tempfile

from tools.brokers import free_port


def _bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


class PostgresServer:
    def __init__(self):
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (run `make setup`: it installs Debian's "
                               "postgresql)")
        self.bindir = bindir
        self.version = os.path.basename(os.path.dirname(bindir))
        self.root = tempfile.mkdtemp(prefix="paydbox-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_user = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "nobody", "--"]
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "nobody", "nogroup")
        self._run("initdb", "-D", self.data, "-U", "paydbox", "--auth=trust", "-E", "UTF8",
                  "--no-instructions")
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "30", "-o",
                  "-p %d -k %s -c listen_addresses=127.0.0.1" % (self.port, self.root), "start")
        self.url_base = "postgresql://paydbox@127.0.0.1:%d" % self.port
        self.n = 0

    def _run(self, tool, *args):
        r = subprocess.run(self.as_user + [os.path.join(self.bindir, tool)] + list(args), cwd=self.root,
                           capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise RuntimeError("%s failed: %s%s" % (tool, r.stdout[-800:], r.stderr[-800:]))

    def new_database(self):
        import psycopg
        self.n += 1
        name = "t%d_%d" % (os.getpid(), self.n)
        with psycopg.connect(self.url_base + "/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE %s" % name)
        return "%s/%s" % (self.url_base, name)

    def stop(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
