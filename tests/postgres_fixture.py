"""Real PostgreSQL server for tests (Debian's `postgresql` package, installed by `make setup`; never a mock).

Usage in a test file under tests/:

    from postgres_fixture import postgres_server, pg_url   # noqa: F401  (or dbt: each backend in turn)

    def test_x(pg_url):
        pg_url  # postgresql://paydbox@127.0.0.1:<port>/<fresh database for this test>

One server per test session (per xdist worker): initdb in a temporary directory, run as an unprivileged
user (`nobody` through runuser when the tests run as root; PostgreSQL refuses to run as root), listening on
127.0.0.1 on a free port. Each test gets its own empty database. A missing PostgreSQL is a setup failure
(the test errors), never a skip.
"""
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from mosquitto_fixture import free_port


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
            raise RuntimeError("PostgreSQL is not installed (run `make setup`: it installs Debian's postgresql)")
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="paydbox-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_user = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "nobody", "--"]
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "nobody", "nogroup")
        self._run("initdb", "-D", self.data, "-U", "paydbox", "--auth=trust", "-E", "UTF8", "--no-instructions")
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


@pytest.fixture(scope="session")
def postgres_server():
    srv = PostgresServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def pg_url(postgres_server):
    return postgres_server.new_database()



@pytest.fixture(params=["sqlite", "postgresql"])
def dbt(request, tmp_path):
    """--db target on each backend: dbt("x.db") is a SQLite path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return lambda name: str(tmp_path / name)
    srv = request.getfixturevalue("postgres_server")
    return lambda name: srv.new_database()
