"""Fixtures for the rate-limit tests: unique Redis key prefixes and private Redis servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_servers import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test run uses; its keys are deleted afterwards."""
    import redis

    prefix = f"kgtest-{uuid.uuid4().hex}:rl:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_server(redis_url: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A started private Redis; stopped at the end. Needs the redis-server binary."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
