"""Load an example app against a fresh SQLite file, with keys made through the CLI."""

from __future__ import annotations

import asyncio
import atexit
import importlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from keyguard import KeyManager, cli

Load = Callable[[str], ModuleType]
MakeKey = Callable[..., str]
MakeClient = Callable[..., tuple[str, str]]


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'keyguard.db'}"
    monkeypatch.setenv("KEYGUARD_DATABASE_URL", url)
    for name in (
        "KEYGUARD_PEPPERS",
        "KEYGUARD_REDIS_URL",
        "KEYGUARD_RATE_LIMIT",
        "KEYGUARD_OAUTH_SIGNING_KEYS",
        "KEYGUARD_OAUTH_ISSUER",
    ):
        monkeypatch.delenv(name, raising=False)
    return url


@pytest.fixture
def load_example(database_url: str) -> Iterator[Load]:
    """Import ``examples.<name>`` afresh, so that it reads this test's environment."""
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        module_name = f"examples.{name}"
        sys.modules.pop(module_name, None)
        loaded.append(module_name)
        return importlib.import_module(module_name)

    yield load
    for name in loaded:
        module = sys.modules.pop(name, None)
        if module is not None:
            _close(module)


def _close(module: ModuleType) -> None:
    """Close what the example opened, as its shutdown would (the Flask one at exit)."""
    manager, limiter = module.manager, module.limiter
    if isinstance(manager, KeyManager):
        atexit.unregister(manager.close)
        atexit.unregister(limiter.close)
        manager.close()
        limiter.close()
    else:
        asyncio.run(manager.aclose())
        asyncio.run(limiter.aclose())


@pytest.fixture
def make_key(database_url: str) -> MakeKey:
    """``keyguard keys create`` with the given scopes (after ``keyguard db init``);
    returns the token it printed."""

    init_err = io.StringIO()
    assert cli.main(["db", "init"], stdout=io.StringIO(), stderr=init_err) == 0, init_err

    def make(*scopes: str, owner: str = "acme") -> str:
        out, err = io.StringIO(), io.StringIO()
        args = ["keys", "create", "--owner", owner]
        for scope in scopes:
            args += ["--scope", scope]
        assert cli.main(args, stdout=out, stderr=err) == 0, err.getvalue()
        return out.getvalue().strip()

    return make


@pytest.fixture
def make_client(make_key: MakeKey) -> MakeClient:
    """``keyguard clients create --json`` with the given scopes; returns the
    (client_id, client_secret) it printed."""

    def make(*scopes: str, owner: str = "acme") -> tuple[str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = ["clients", "create", "--owner", owner, "--json"]
        for scope in scopes:
            args += ["--scope", scope]
        assert cli.main(args, stdout=out, stderr=err) == 0, err.getvalue()
        created = json.loads(out.getvalue())
        return created["client_id"], created["client_secret"]

    return make
