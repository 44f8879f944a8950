"""The FastAPI example under uvicorn on a private Redis, under load and through Redis faults.

One key at 100 per hour, 400 concurrent requests on connections opened beforehand:
exactly 100 are admitted, with one worker and with eight, round after round. While
Redis hangs (SIGSTOP) every request is answered within the documented bound and
``/health`` keeps answering; after Redis comes back, and after a restart that follows
an outage, limits are shared and exact again within the documented time.

The servers start once for the module (eight workers on a small machine take a while
to import everything), each with its own private Redis, which only these tests pause
or restart.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keyguard import cli
from tests.redis_servers import RedisServer, free_port

redis = pytest.importorskip("redis")

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
QUOTA = 100
CONCURRENT = 400
ROUNDS = 5
#: docs/rate-limiting.md: a request waits at most pool_timeout (0.5 s) for a connection,
#: then connect_timeout + timeout (0.5 s) for its call; plus room for a loaded machine. A
#: fault may add this much to the slowest request of the same load on a healthy Redis
#: (which on a shared two-core machine is itself far from instant).
REQUEST_BOUND = 1.0 + 0.75
#: docs/rate-limiting.md: limits are shared again within max_backoff (2 s) of Redis's return.
RECOVERY = 2.0
#: Shorter than the issue's 40 s: by 4 s the backoff has reached its 2 s cap, and from then
#: on the limiter's state is the same however long the outage lasts.
OUTAGE = 5.0


@dataclass
class Server:
    """A uvicorn running the FastAPI example, its private Redis and its output."""

    name: str
    base: str
    port: int
    redis: RedisServer
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def failures_logged(self) -> int:
        return self.output().count("rate-limit backend failed")


def _make_keys(database_url: str, count: int) -> list[str]:
    assert cli.main(["db", "init", "--database-url", database_url], stdout=io.StringIO()) == 0
    tokens = []
    for _ in range(count):
        out = io.StringIO()
        args = ["keys", "create", "--owner", "acme", "--scope", "billing:read"]
        assert cli.main([*args, "--database-url", database_url], stdout=out) == 0
        tokens.append(out.getvalue().strip())
    return tokens


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """The key store's URL and fresh keys, made with the CLI (without a pepper, as the
    servers below run)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('keys') / 'keyguard.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("KEYGUARD_PEPPERS", raising=False)
        yield url, _make_keys(url, 2 * ROUNDS + 8)


@pytest.fixture(scope="module")
def servers(
    keys: tuple[str, list[str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """uvicorn with one worker and with eight, started side by side."""
    database_url, _ = keys
    started: dict[str, Server] = {}
    try:
        for name, workers in (("one", 1), ("eight", 8)):
            directory = tmp_path_factory.mktemp(f"uvicorn-{name}")
            store = RedisServer(directory)
            store.start()
            port = free_port()
            log = directory / "server.log"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")},
                "KEYGUARD_DATABASE_URL": database_url,
                "KEYGUARD_REDIS_URL": store.url,
                "KEYGUARD_RATE_LIMIT": f"{QUOTA}/hour",
                "PYTHONUNBUFFERED": "1",
            }
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
                        "--host", "127.0.0.1", "--port", str(port),
                        "--workers", str(workers), "--backlog", "2048",
                        "--log-level", "warning",
                    ],
                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            started[name] = Server(name, f"http://127.0.0.1:{port}", port, store, log, process)
        deadline = time.monotonic() + 90
        for server in started.values():
            while True:
                try:
                    if httpx.get(server.base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"uvicorn ({server.name}) did not start:\n{server.output()}")
                time.sleep(0.2)  # readiness poll of a server we just started
        yield started
    finally:
        for server in started.values():
            server.process.terminate()
        for server in started.values():
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                server.process.kill()
                server.process.wait()
            server.redis.stop()


@pytest.fixture(scope="module")
def tokens(keys: tuple[str, list[str]]) -> Iterator[str]:
    """Each test takes fresh keys from here, so that each starts from a full quota."""
    _, made = keys
    return iter(made)


async def _fire(port: int, token: str, count: int) -> list[tuple[int, float]]:
    """Open ``count`` connections, then send one request on each at once; (status, seconds)."""
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
    )
    request = (
        f"GET /invoices HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    for _, writer in connections:
        writer.write(request)

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, float]:
        data = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        return int(data.split(b" ", 2)[1]), time.monotonic() - started

    return await asyncio.gather(*(answer(r, w) for r, w in connections))


def _warm(server: Server, token: str) -> int:
    """A few requests one by one, so that every worker has the key in its cache and a
    connection to Redis; how many were admitted."""
    with httpx.Client(base_url=server.base, timeout=10) as client:
        statuses = [
            client.get("/invoices", headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(12)
        ]
    assert set(statuses) == {200}
    return len(statuses)


def _stored_in_redis(server: Server, token: str) -> bool:
    client = redis.Redis.from_url(server.redis.url)
    try:
        return bool(client.exists(f"kg:rl:{{{token.split('_')[2]}}}:default"))
    finally:
        client.close()


def _exact_burst(server: Server, token: str) -> Counter[int]:
    warmed = _warm(server, token)
    statuses = Counter(status for status, _ in asyncio.run(_fire(server.port, token, CONCURRENT)))
    assert statuses[200] == QUOTA - warmed, (server.name, statuses, server.output()[-3000:])
    assert statuses[429] == CONCURRENT - (QUOTA - warmed), (server.name, statuses)
    assert _stored_in_redis(server, token), "the limit was kept in Redis"
    return statuses


@pytest.mark.parametrize("name", ["one", "eight"])
def test_exactly_the_quota_under_load(
    servers: dict[str, Server], tokens: Iterator[str], name: str
) -> None:
    server = servers[name]
    failures = server.failures_logged()
    for _ in range(ROUNDS):
        _exact_burst(server, next(tokens))
    assert server.failures_logged() == failures, server.output()[-3000:]
    assert "Traceback" not in server.output()


async def _steady_load(port: int, token: str, seconds: float) -> list[tuple[int, float]]:
    """20 clients, each sending one request after another for ``seconds``."""
    stop_at = time.monotonic() + seconds
    results: list[tuple[int, float]] = []
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def one_client() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                reply = await client.get("/invoices", headers=headers, timeout=10)
                results.append((reply.status_code, time.monotonic() - started))

        await asyncio.gather(*(one_client() for _ in range(20)))
    return results


async def _health(port: int, seconds: float) -> list[tuple[int, float]]:
    stop_at = time.monotonic() + seconds
    results: list[tuple[int, float]] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            reply = await client.get("/health", timeout=10)
            results.append((reply.status_code, time.monotonic() - started))
            await asyncio.sleep(0.05)  # a load balancer's probe, not load
    return results


def test_redis_hung_under_load(servers: dict[str, Server], tokens: Iterator[str]) -> None:
    """SIGSTOP: every request is answered in time by the fallback, /health answers, and
    after SIGCONT the limits are shared again."""
    server = servers["one"]
    token = next(tokens)
    healthy = max(t for _, t in asyncio.run(_steady_load(server.port, token, 1.0)))

    async def scenario() -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        load = asyncio.ensure_future(_steady_load(server.port, token, 4.0))
        health = asyncio.ensure_future(_health(server.port, 4.0))
        await asyncio.sleep(0.5)  # under load, then Redis hangs
        server.redis.pause()
        try:
            await asyncio.sleep(2.5)
        finally:
            server.redis.resume()
        return await load, await health

    requests, probes = asyncio.run(scenario())
    assert {status for status, _ in requests} <= {200, 429}, Counter(s for s, _ in requests)
    slowest = max(seconds for _, seconds in requests)
    assert slowest < healthy + REQUEST_BOUND, f"{slowest:.2f} s, healthy {healthy:.2f} s"
    assert {status for status, _ in probes} == {200}
    assert max(seconds for _, seconds in probes) < healthy + REQUEST_BOUND
    assert server.failures_logged() >= 1, "the hang was noticed"
    time.sleep(RECOVERY)  # the backoff ends; the next requests go to Redis
    failures = server.failures_logged()
    _exact_burst(server, next(tokens))
    assert server.failures_logged() == failures


def test_a_restart_after_an_outage_shares_the_limits_again(
    servers: dict[str, Server], tokens: Iterator[str]
) -> None:
    server = servers["eight"]
    token = next(tokens)
    healthy = max(t for _, t in asyncio.run(_steady_load(server.port, token, 1.0)))
    server.redis.stop()
    try:
        requests = asyncio.run(_steady_load(server.port, token, OUTAGE))
    finally:
        server.redis.start()  # the same port, an empty Redis
    restarted = time.monotonic()
    # While Redis was down, each worker answered from its own memory, promptly.
    assert {status for status, _ in requests} <= {200, 429}
    slowest = max(seconds for _, seconds in requests)
    assert slowest < healthy + REQUEST_BOUND, f"{slowest:.2f} s, healthy {healthy:.2f} s"
    assert server.failures_logged() >= 1
    time.sleep(max(0.0, restarted + RECOVERY - time.monotonic()))
    failures = server.failures_logged()
    for _ in range(2):  # exact across all eight workers, and stays so
        _exact_burst(server, next(tokens))
    assert server.failures_logged() == failures, "no worker fell back again"
