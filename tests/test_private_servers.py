"""The private servers of the fault tests start even when their port is taken meanwhile.

A free port is picked, then the server is started on it; between the two another
process may bind it. The first start then moves to another port, and a server is
taken as ready only when the process that answers is the one just started.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from tests._services import PostgresServer
from tests.redis_servers import RedisServer


@contextlib.contextmanager
def _taken(port: int) -> Iterator[None]:
    """Listen on ``port`` (as another process might) and answer every connection with a
    Redis-like ``+PONG``, as a foreign server would."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"+PONG\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_private_redis_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    taken = server.port
    with _taken(taken):
        server.start()
        try:
            assert server.port != taken
            assert server.url == f"redis://127.0.0.1:{server.port}/0"
            import redis

            client = redis.Redis.from_url(server.url)
            assert client.info("server")["process_id"] == server.process.pid  # type: ignore[union-attr]
            client.close()
        finally:
            server.stop()


def test_a_private_postgres_whose_port_was_taken_starts_on_another() -> None:
    server = PostgresServer()
    taken = server.port
    with _taken(taken):
        server.start()
        try:
            assert server.port != taken
            assert f":{server.port}/" in server.url
            import sqlalchemy

            engine = sqlalchemy.create_engine(server.url)
            with engine.connect() as connection:
                assert connection.execute(sqlalchemy.text("select 1")).scalar() == 1
            engine.dispose()
        finally:
            server.stop()
