"""Denials and the anonymous principal behave as values: copied and pickled intact."""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import pytest

import keyguard
from keyguard import AsyncKeyManager, KeyguardMiddleware
from keyguard.stores import MemoryKeyStore


def _pickled(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))  # noqa: S301 (bytes this test made)


@pytest.mark.parametrize(
    "round_trip", [copy.copy, copy.deepcopy, _pickled], ids=["copy", "deepcopy", "pickle"]
)
def test_denials_and_anonymous_copy_and_pickle(round_trip: Any) -> None:
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


def test_servers_see_the_middleware_as_an_asgi3_app() -> None:
    # uvicorn, for one, tells ASGI 3 from ASGI 2 by iscoroutinefunction(app.__call__).
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    middleware = KeyguardMiddleware(app, AsyncKeyManager(MemoryKeyStore()))
    assert inspect.iscoroutinefunction(middleware.__call__)
