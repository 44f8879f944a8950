from __future__ import annotations

import keyguard
import keyguard.ratelimit
import keyguard.stores


def _isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


def test_all_is_sorted_and_complete() -> None:
    for module in (keyguard, keyguard.stores, keyguard.ratelimit):
        names = module.__all__
        assert names == sorted(names, key=_isort_style), f"{module.__name__}.__all__ unsorted"
        assert len(set(names)) == len(names)
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name} is missing"
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, type(keyguard))
            and getattr(value, "__module__", module.__name__).startswith("keyguard")
        }
        assert public <= set(names) | {"annotations"}, public - set(names)


def test_version() -> None:
    from importlib.metadata import version

    assert keyguard.__version__ == version("keyguard-auth")


def test_the_core_imports_without_any_extra() -> None:
    """`pip install keyguard-auth` alone: no optional dependency is needed to import and use it."""
    import subprocess
    import sys

    script = """
import sys
BLOCKED = ("sqlalchemy", "psycopg", "aiosqlite", "redis", "fastapi", "starlette", "flask",
           "werkzeug", "passlib", "bcrypt", "argon2", "httpx", "uvicorn", "pydantic")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked optional dependency: " + name)
        return None
sys.meta_path.insert(0, Block())
import keyguard, keyguard.asgi, keyguard.wsgi, keyguard.cli, keyguard.ratelimit, keyguard.stores
from keyguard.stores import MemoryKeyStore
keys = keyguard.KeyManager(MemoryKeyStore())
token = keys.create("acme").token
assert isinstance(keys.authenticate(token), keyguard.Principal)
assert keyguard.MemoryRateLimiter().hit("k", (keyguard.Policy("p", 1, 1),)).allowed
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_integrations_keyword_options_are_exactly_the_options_fields() -> None:
    import dataclasses
    from typing import get_type_hints

    from keyguard import MiddlewareOptions, MiddlewareOptionsFields

    fields = {f.name: f.type for f in dataclasses.fields(MiddlewareOptions) if f.init}
    hints = get_type_hints(MiddlewareOptionsFields)
    assert hints.keys() == fields.keys()
    options_hints = get_type_hints(MiddlewareOptions)
    assert {name: options_hints[name] for name in fields} == hints
