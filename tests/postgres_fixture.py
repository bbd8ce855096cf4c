"""Real PostgreSQL server for tests (tools/pgserver.py: Debian's `postgresql`, installed by `make setup`;
never a mock).

Usage in a test file under tests/:

    from postgres_fixture import postgres_server, pg_url   # noqa: F401

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
