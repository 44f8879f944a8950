"""Private Redis servers for tests that stop, pause or restart them, and a private Redis Cluster.

Never the shared Redis: only processes started here are stopped, paused or killed here.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("KEYGUARD_REQUIRE_SERVICES") == "1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary(name: str) -> str:
    """The path of ``redis-server`` or ``redis-cli``; skips (or fails, when services are
    required) when it is missing."""
    binary = shutil.which(name)
    if binary is None:
        message = (
            f"the {name} binary is not on PATH: these tests start their own Redis "
            "to stop it; with KEYGUARD_REQUIRE_SERVICES=1 this is a failure, not a skip"
        )
        if REQUIRE_SERVICES:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


class RedisServer:
    """A private redis-server on its own port, for tests that stop, pause or restart Redis.

    The port is picked free, but another process may take it before the server binds it.
    The first :meth:`start` then moves to another port; a restart keeps its port (clients
    hold the URL), and a server answers ready only when it is this process.
    """

    #: Ports tried by a first start whose port was taken meanwhile.
    ATTEMPTS = 5

    def __init__(self, tmp_path: Path) -> None:
        self.binary = redis_binary("redis-server")
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(1 if self._started else self.ATTEMPTS):
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._ready(self.process):
                self._started = True
                return
            self.process.kill()
            self.process.wait(timeout=10)
            if not self._started:
                self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether ``process`` serves the port, polled until it does, exits or 10 s pass."""
        expected = f"process_id:{process.pid}\r\n".encode()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"INFO server\r\n")
                    # A reply of another server (the port was taken) is never this process's.
                    if expected in sock.recv(65536):
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # readiness poll of a server we just started
        return False

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and never answered."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


#: Redis Cluster's bus listens on the client port + 10000, which must be a valid port too.
_BUS_OFFSET = 10000
_PORTS = range(20000, 45000)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """``count`` client ports whose bus ports are free as well (all well below 55535)."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.choice(_PORTS)
        if port not in ports and _bindable(port) and _bindable(port + _BUS_OFFSET):
            ports.append(port)
    return ports


def _ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"CLUSTER INFO\r\n")
        return sock.recv(4096)


class RedisClusterServers:
    """Three private redis-server processes with ``--cluster-enabled yes``, slots spread by
    ``redis-cli --cluster create`` (no replicas). :meth:`stop` ends only these processes."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.dir = directory
        self.ports = _cluster_ports(nodes)
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        server = redis_binary("redis-server")
        cli = redis_binary("redis-cli")
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", "2000",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", str(node_dir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 10
        for port in self.ports:
            while True:
                try:
                    _ping(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node on port {port} did not start") from None
                    time.sleep(0.02)  # readiness poll of a server we just started
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while not all(b"cluster_state:ok" in _ping(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)  # the nodes agree on the layout through the cluster bus

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []
