"""Real PostgreSQL server for tests (tools/pgserver.py: Debian's `postgresql`, installed by `make setup`;
never a mock).

Usage in a test file under tests/:

    from postgres_fixture import postgres_server, pg_url   # noqa: F401  (or dbt: each backend in turn)

    def test_x(pg_url):
        pg_url  # postgresql://paydbox@127.0.0.1:<port>/<fresh database for this test>

One server per test session (per xdist worker), as an unprivileged user, in a temporary directory, on a
free port. Each test gets its own empty database. A missing PostgreSQL is a setup failure (the test
errors), never a skip.
"""
import pytest

from tools.pgserver import PostgresServer


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
