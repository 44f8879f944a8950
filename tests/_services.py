"""Private servers for fault-injection tests: started on free ports, stopped (or frozen) at will.

The shared PostgreSQL of the test machine is never stopped or frozen; a test
that needs a hung database starts its own with :class:`PostgresServer`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("KEYGUARD_REQUIRE_SERVICES") == "1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(message: str) -> None:
    message += "; with KEYGUARD_REQUIRE_SERVICES=1 this is a failure, not a skip"
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A private PostgreSQL (initdb + pg_ctl) in a temporary directory, on a free port.

    initdb refuses to run as root, so as root the server runs as the
    ``postgres`` user (``runuser``); otherwise as the current user. Trust
    authentication on 127.0.0.1 only, no fsync: a throwaway database.
    :meth:`freeze` stops every process of the server with SIGSTOP (the server
    hangs: connections stay open, nothing answers), :meth:`thaw` continues them.
    """

    #: Ports tried when the one picked was taken before the server bound it.
    ATTEMPTS = 5

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            _missing(
                "initdb and pg_ctl (PostgreSQL's server binaries) are not installed: the fault "
                "tests start a private PostgreSQL to freeze it"
            )
        self._initdb, self._pg_ctl = str(initdb), str(pg_ctl)
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="keyguard-pg-"))
        self.data = self.dir / "data"
        self._frozen = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        argv = list(command)
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{done.stderr}")

    def start(self) -> None:
        """initdb, then start the server; a port taken meanwhile by another process (it was
        free when picked) is traded for another, up to :attr:`ATTEMPTS` times."""
        if self._user is not None:
            shutil.chown(self.dir, self._user)
        self._run(self._initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")
        log = self.dir / "log"
        for _ in range(self.ATTEMPTS):
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    self._pg_ctl, "-D", str(self.data), "-o", options, "-l", str(log),
                    "-w", "-t", "30", "start",
                )  # fmt: skip
            except RuntimeError:
                if "could not bind" not in log.read_text(errors="replace"):
                    raise
                log.unlink()
                self.port = free_port()
            else:
                return
        raise RuntimeError(f"no free port for PostgreSQL after {self.ATTEMPTS} attempts")

    def _pids(self) -> list[int]:
        """The postmaster and every process it started."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    pids.append(int(Path(stat).parent.name))
        return pids

    def _signal(self, signum: int) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def freeze(self) -> None:
        """SIGSTOP the server: it accepts TCP connections (the kernel does) and answers nothing."""
        self._signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT: the server carries on where it stopped."""
        self._signal(signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self._frozen:
                self.thaw()
            self._run(self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until_listening(port: int, timeout: float = 20.0) -> None:
    """Poll a server we just started until it accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # readiness poll of a server we just started
    raise RuntimeError(f"nothing listens on port {port}")
