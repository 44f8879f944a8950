from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from keyguard.testing import FakeClock

from ._services import PostgresServer

REQUIRE_SERVICES = os.environ.get("KEYGUARD_REQUIRE_SERVICES") == "1"


def service_unavailable(what: str, url: str, exc: BaseException) -> None:
    """Skip (or, with KEYGUARD_REQUIRE_SERVICES=1, fail) a test whose server is not there."""
    message = (
        f"{what} is not reachable at {url} ({type(exc).__name__}: {exc}). "
        f"Start it, or point the tests elsewhere with the environment variable named in "
        f"tests/conftest.py; with KEYGUARD_REQUIRE_SERVICES=1 this is a failure, not a skip."
    )
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """KEYGUARD_TEST_REDIS_URL, default redis://127.0.0.1:6379/15 (a database tests may flush)."""
    url = os.environ.get("KEYGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", url, exc)
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """KEYGUARD_TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test."""
    url = os.environ.get(
        "KEYGUARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    import psycopg

    try:
        psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
        ).close()
    except psycopg.Error as exc:
        service_unavailable("PostgreSQL", url, exc)
    return url


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the tests' own, which fault tests may freeze (SIGSTOP); needs the
    server binaries (initdb, pg_ctl). Thawed and stopped at the end of the session."""
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        service_unavailable("a private PostgreSQL (initdb, pg_ctl)", server.url, exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private three-node Redis Cluster (no replicas) for the whole session, as a
    ``redis+cluster://`` URL; its processes are stopped at the end. Needs redis-server
    and redis-cli."""
    from tests.redis_servers import RedisClusterServers

    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.stop()
