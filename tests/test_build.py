"""Which build the suite runs against: ``make test`` runs it on both.

``make pytest`` imports the pure-Python source tree; ``make pytest-compiled``
imports the compiled wheel (``KEYGUARD_EXPECT_COMPILED=1``). This test makes
sure each run tests the build it claims to, so a broken compiled build can
never pass by quietly falling back to the source.
"""

from __future__ import annotations

import copy
import importlib
import os
import pickle
from typing import Any

import pytest

import keyguard

#: The modules the build hook in pyproject.toml compiles.
COMPILED_MODULES = (
    "keyguard._flow",
    "keyguard._request",
    "keyguard._limits",
    "keyguard.asgi",
    "keyguard.ratelimit.gcra",
    "keyguard.ratelimit._memory",
    "keyguard.stores.memory",
    "keyguard._last_used",
)


def _is_extension(name: str) -> bool:
    path = importlib.import_module(name).__file__
    assert path is not None
    return not path.endswith(".py")


def test_the_suite_imports_the_build_it_expects() -> None:
    expected = os.environ.get("KEYGUARD_EXPECT_COMPILED") == "1"
    assert keyguard.COMPILED is expected
    assert {name: _is_extension(name) for name in COMPILED_MODULES} == dict.fromkeys(
        COMPILED_MODULES, expected
    )


def test_only_the_request_path_is_compiled() -> None:
    # Everything else stays Python in both builds: managers, SQL and cached stores, the CLI.
    for name in (
        "keyguard._manager",
        "keyguard._records",
        "keyguard.ratelimit.memory",
        "keyguard.stores.sql",
        "keyguard.stores.cached",
        "keyguard.wsgi",
        "keyguard.cli",
    ):
        assert not _is_extension(name), name


def test_the_public_classes_of_the_compiled_modules_take_subclasses() -> None:
    # Compiled classes refuse Python subclasses unless allowed; these allow them.
    from keyguard import AsyncKeyManager, KeyguardMiddleware, LastUsedRecorder
    from keyguard._flow import TokenMemo
    from keyguard.stores import MemoryKeyStore

    class Middleware(KeyguardMiddleware):
        pass

    class Memo(TokenMemo):
        pass

    class Store(MemoryKeyStore):
        def get(self, key_id: str) -> None:
            return None

    class Recorder(LastUsedRecorder):
        pass

    assert Store().get("k1") is None
    assert len(Recorder(1.0)) == 0

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    assert isinstance(Middleware(app, AsyncKeyManager(MemoryKeyStore())), KeyguardMiddleware)
    assert len(Memo(3)) == 0


def _round_trips() -> list[Any]:
    def pickled(value: Any) -> Any:
        return pickle.loads(pickle.dumps(value))  # noqa: S301 (bytes this test made)

    return [copy.copy, copy.deepcopy, pickled]


@pytest.mark.parametrize("round_trip", _round_trips(), ids=["copy", "deepcopy", "pickle"])
def test_denials_and_anonymous_copy_and_pickle_in_both_builds(round_trip: Any) -> None:
    denial = keyguard.Denial(
        keyguard.DenialReason.INSUFFICIENT_SCOPE,
        "the API key lacks the scope billing:write",
        key_id="k1",
        missing_scopes=frozenset({"billing:write"}),
        retry_after=None,
        headers=(("x-a", "b"),),
    )
    assert round_trip(denial) == denial
    assert round_trip(keyguard.ANONYMOUS) is keyguard.ANONYMOUS


def test_servers_see_the_middleware_as_an_asgi3_app_in_both_builds() -> None:
    # uvicorn, for one, tells ASGI 3 from ASGI 2 by iscoroutinefunction(app.__call__).
    import inspect

    from keyguard import AsyncKeyManager, KeyguardMiddleware
    from keyguard.stores import MemoryKeyStore

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    middleware = KeyguardMiddleware(app, AsyncKeyManager(MemoryKeyStore()))
    assert inspect.iscoroutinefunction(middleware.__call__)


def test_a_bytecode_only_install_is_not_taken_for_the_compiled_build(tmp_path: Any) -> None:
    import compileall
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    package = tmp_path / "keyguard"
    shutil.copytree(Path(__file__).resolve().parents[1] / "src" / "keyguard", package)
    assert compileall.compile_dir(package, legacy=True, quiet=1)
    for source in package.rglob("*.py"):
        source.unlink()
    found = subprocess.run(
        [sys.executable, "-c", "import keyguard; print(keyguard.__file__, keyguard.COMPILED)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    ).stdout.split()
    assert found == [str(package / "__init__.pyc"), "False"]


@pytest.mark.parametrize(
    ("version", "refused"),
    [((3, 11, 7), False), ((3, 12, 1), True), ((3, 13, 0), True)],
)
def test_the_compiled_build_is_made_on_python_3_11_only(
    version: tuple[int, int, int], refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hatch_build.py, which runs before the mypyc hook (docs/performance.md says why)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "hatch_build.py"
    spec = importlib.util.spec_from_file_location("hatch_build", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    guard = object.__new__(module.CompiledBuildGuard)  # initialize() reads no settings
    monkeypatch.setattr(sys, "version_info", version)
    if refused:
        with pytest.raises(RuntimeError, match=r"Python 3\.11 only, not 3\.1[23]"):
            guard.initialize("standard", {})
    else:
        guard.initialize("standard", {})
