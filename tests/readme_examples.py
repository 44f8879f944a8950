"""Run the Python code blocks of a Markdown page as the programs they are.

Each block is saved to a file of its own directory and run as ``__main__``, exactly as a
reader who pastes it into a file and runs ``python app.py`` would, except that the server
start is replaced: ``uvicorn.run(app)`` and Flask's ``app.run()`` hand the app to a test
client instead. A served app is then called as the page tells its reader to call it, with
keys made by the installed ``keyguard`` command in the same directory:

- ``GET /health`` needs nothing: 200.
- ``GET /invoices`` without a key, or with a wrong one: 401 with a ``Bearer`` challenge.
- ``GET /invoices`` with a key that lacks the scope ``billing:read``: 403.
- ``GET /invoices`` with a key that has it: 200, and the 11th request of that key within a
  minute gets 429 with ``Retry-After`` (the examples allow ``10/minute``).

This file is both a module (``tests/test_readme.py`` and ``tests/test_docs.py`` import it)
and a script, which the wheel test runs with the Python of a fresh virtual environment
outside the repository: ``python readme_examples.py README.md``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import re
import runpy
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A fenced Python block: its info string (``python title="app.py"``) and its code.
_BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_TITLE = re.compile(r'title="([^"]+)"')
#: The requests per key the examples allow: ``rate_limit="10/minute"``.
EXAMPLE_LIMIT = 10


@dataclass
class Block:
    """One fenced Python block of a page."""

    code: str
    title: str | None
    line: int

    @property
    def name(self) -> str:
        return self.title or f"block_line_{self.line}.py"


@dataclass
class Outcome:
    """What running one block did."""

    block: Block
    served: list[Any] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


def python_blocks(markdown: str) -> list[Block]:
    """Every fenced ``python`` block of a Markdown text, in order."""
    blocks = []
    for match in _BLOCK.finditer(markdown):
        title = _TITLE.search(match.group(1))
        line = markdown.count("\n", 0, match.start()) + 1
        blocks.append(Block(match.group(2), title.group(1) if title else None, line))
    return blocks


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


@contextlib.contextmanager
def _clean_environment(workdir: Path) -> Iterator[None]:
    """Run in ``workdir`` with none of keyguard's variables set, as a fresh shell would."""
    saved_env = dict(os.environ)
    saved_cwd = Path.cwd()
    for name in list(os.environ):
        if name.startswith("KEYGUARD_"):
            del os.environ[name]
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@contextlib.contextmanager
def _servers_replaced(served: list[Any]) -> Iterator[None]:
    """``uvicorn.run`` and ``Flask.run`` record the app instead of serving it."""
    patches: list[tuple[Any, str, Any]] = []
    with contextlib.suppress(ImportError):
        import uvicorn

        def run_uvicorn(app: Any, *args: Any, **kwargs: Any) -> None:
            served.append(app)

        patches.append((uvicorn, "run", run_uvicorn))
    with contextlib.suppress(ImportError):
        import flask

        def run_flask(self: Any, *args: Any, **kwargs: Any) -> None:
            served.append(self)

        patches.append((flask.Flask, "run", run_flask))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _close_resources(namespace: dict[str, Any]) -> None:
    """Close the managers and limiters a program left open, as its exit would.

    The managers first: a manager stops its last-used writer before it closes its store.
    A store closed under a writer still running (a program's ``store`` comes before its
    ``manager``) would lose the connection that writer holds to the garbage collector,
    unclosed."""
    from keyguard import AsyncKeyManager, KeyManager

    managers = [v for v in namespace.values() if isinstance(v, KeyManager | AsyncKeyManager)]
    for manager in managers:
        if isinstance(manager, KeyManager):
            atexit.unregister(manager.close)
            manager.close()
        else:
            asyncio.run(manager.aclose())
    for value in namespace.values():
        if (
            not any(value is manager for manager in managers)
            and type(value).__module__.startswith("keyguard.")
            and callable(getattr(value, "close", None))
        ):
            atexit.unregister(value.close)
            value.close()


def keyguard_command() -> list[str]:
    """The installed ``keyguard`` command of this Python's environment."""
    script = Path(sys.executable).with_name("keyguard")
    _check(script.exists(), f"no keyguard command beside {sys.executable}")
    return [str(script)]


def make_key(workdir: Path, *scopes: str) -> str:
    """``keyguard keys create --owner acme --scope ...`` in ``workdir``; the printed token."""
    args = [*keyguard_command(), "keys", "create", "--owner", "acme", "--name", "readme"]
    for scope in scopes:
        args += ["--scope", scope]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGUARD_")}
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    _check(done.returncode == 0, f"{' '.join(args[1:])} failed: {done.stderr}")
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def _asgi_lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan around the block, as a server does."""
    import anyio

    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](2)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](2)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with to_app, app_inbox, app_outbox, from_app, anyio.create_task_group() as tasks:
        tasks.start_soon(app, scope, app_inbox.receive, app_outbox.send)
        await to_app.send({"type": "lifespan.startup"})
        started = await from_app.receive()
        _check(started["type"] == "lifespan.startup.complete", f"startup: {started}")
        yield
        await to_app.send({"type": "lifespan.shutdown"})
        stopped = await from_app.receive()
        _check(stopped["type"] == "lifespan.shutdown.complete", f"shutdown: {stopped}")


@contextlib.contextmanager
def _client(app: Any) -> Iterator[Callable[[str, dict[str, str]], Any]]:
    """A ``get(path, headers)`` for a Flask app, or for an ASGI app with its lifespan."""
    if hasattr(app, "test_client"):
        client = app.test_client()

        def get_flask(path: str, headers: dict[str, str]) -> Any:
            return client.get(path, headers=headers)

        yield get_flask
        return
    import anyio.from_thread
    import httpx

    transport = httpx.ASGITransport(app=app)  # the client is 127.0.0.1: plain HTTP is fine
    with anyio.from_thread.start_blocking_portal() as portal:
        asgi_client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")
        with (
            portal.wrap_async_context_manager(_asgi_lifespan(app)),
            portal.wrap_async_context_manager(asgi_client),
        ):

            def get_asgi(path: str, headers: dict[str, str]) -> Any:
                return portal.call(functools.partial(asgi_client.get, path, headers=headers))

            yield get_asgi


def _json(response: Any) -> Any:
    """The JSON body of an httpx response (a method) or a werkzeug one (a property)."""
    body = response.json
    return body() if callable(body) else body


def _status(response: Any) -> int:
    return int(getattr(response, "status_code", 0))


def exercise(app: Any, workdir: Path) -> dict[str, int]:
    """Call a served example as the page tells its reader to; return each request's status."""
    reader = make_key(workdir, "billing:read")
    other = make_key(workdir)
    statuses: dict[str, int] = {}
    with _client(app) as get:
        statuses["health"] = _status(get("/health", {}))
        no_key = get("/invoices", {})
        statuses["no key"] = _status(no_key)
        _check(
            no_key.headers.get("WWW-Authenticate", "").startswith("Bearer"),
            "a 401 must carry a Bearer challenge",
        )
        statuses["wrong key"] = _status(
            get("/invoices", {"Authorization": "Bearer sk_live_not_a_real_key"})
        )
        statuses["without the scope"] = _status(
            get("/invoices", {"Authorization": f"Bearer {other}"})
        )
        allowed = get("/invoices", {"Authorization": f"Bearer {reader}"})
        statuses["with the scope"] = _status(allowed)
        _check(_json(allowed)["owner"] == "acme", f"unexpected body {_json(allowed)!r}")
        _check("RateLimit" in allowed.headers, "a limited response carries RateLimit")
        for _ in range(EXAMPLE_LIMIT - 1):
            again = _status(get("/invoices", {"Authorization": f"Bearer {reader}"}))
            _check(again == 200, f"request {EXAMPLE_LIMIT} or earlier of a key got {again}")
        limited = get("/invoices", {"Authorization": f"Bearer {reader}"})
        statuses["over the limit"] = _status(limited)
        _check("Retry-After" in limited.headers, "a 429 carries Retry-After")
    expected = {
        "health": 200,
        "no key": 401,
        "wrong key": 401,
        "without the scope": 403,
        "with the scope": 200,
        "over the limit": 429,
    }
    _check(statuses == expected, f"expected {expected}, got {statuses}")
    return statuses


def _run_tests(path: Path) -> None:
    """A block that is a test module (``test_*.py``) runs under pytest, as its reader would."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    _check(done.returncode == 0, f"pytest {path.name} failed:\n{done.stdout}{done.stderr}")


def run_block(block: Block, workdir: Path) -> Outcome:
    """Run one block as ``__main__`` in ``workdir``; exercise the app it would serve.

    A block titled ``test_*.py`` is run with pytest instead, beside the files of the
    blocks before it (the module it tests)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / block.name
    path.write_text(block.code)
    outcome = Outcome(block)
    if block.name.startswith("test_"):
        with _clean_environment(workdir):
            _run_tests(path)
        return outcome
    namespace: dict[str, Any] = {}
    with _clean_environment(workdir):
        sys.path.insert(0, str(workdir))
        try:
            with _servers_replaced(outcome.served):
                namespace = runpy.run_path(str(path), run_name="__main__")
            for app in outcome.served:
                outcome.statuses.update(exercise(app, workdir))
        finally:
            sys.path.remove(str(workdir))
            _close_resources(namespace)
    return outcome


def run_page(page: Path, workdir: Path, *, titled_only: bool = False) -> list[Outcome]:
    """Run the Python blocks of ``page`` (only those with a ``title=``, if asked).

    Untitled blocks run each in a directory of its own; titled ones are files of one
    directory, run in order, so that a test module finds the module it tests."""
    outcomes = []
    for block in python_blocks(page.read_text()):
        if block.title is None:
            if not titled_only:
                outcomes.append(run_block(block, workdir / f"line{block.line}"))
        else:
            outcomes.append(run_block(block, workdir / "files"))
    return outcomes


def main(argv: list[str]) -> int:
    """``python readme_examples.py PAGE.md [WORKDIR]``: run the page's blocks, print what
    each did, and exit 1 on the first failure."""
    page = Path(argv[0]).resolve()
    workdir = Path(argv[1] if len(argv) > 1 else Path.cwd() / "blocks").resolve()
    import keyguard

    print(f"keyguard {keyguard.__version__} from {Path(keyguard.__file__).parent}")
    for outcome in run_page(page, workdir):
        served = f", served and called: {outcome.statuses}" if outcome.served else ""
        print(f"{page.name} line {outcome.block.line}: ran{served}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
