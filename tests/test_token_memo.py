"""The verified-token memo: repeats skip parse and hash, any change to the key re-checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyguard import (
    AsyncKeyManager,
    Denial,
    DenialReason,
    KeyManager,
    Principal,
    TokenMemo,
)
from keyguard._verify import token_digest
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._hashers import CountingHasher


def _manager(**options: Any) -> tuple[KeyManager, CountingHasher, FakeClock]:
    hasher, clock = CountingHasher(), FakeClock()
    manager = KeyManager(MemoryKeyStore(), hasher=hasher, clock=clock, last_used=None, **options)
    return manager, hasher, clock


def test_a_repeated_token_is_verified_once() -> None:
    manager, hasher, _ = _manager()
    issued = manager.create("acme")
    for _ in range(5):
        assert isinstance(manager.authenticate(issued.token), Principal)
    assert hasher.verifies == 1


def test_the_memo_holds_no_token_or_secret() -> None:
    manager, _, _ = _manager()
    issued = manager.create("acme")
    manager.authenticate(issued.token)
    memo = manager.token_memo
    assert memo is not None
    assert len(memo) == 1
    ((digest, entry),) = memo._entries.items()
    assert digest == token_digest(issued.token)
    assert issued.token not in repr(entry)
    assert issued.token[21:53] not in repr(entry)
    assert issued.token not in repr(memo)


@pytest.mark.parametrize("change", ["revoke", "update", "rotate", "expire"])
def test_any_change_to_the_key_is_seen_at_once(change: str) -> None:
    from datetime import timedelta

    manager, _, clock = _manager()
    issued = manager.create("acme", scopes=["read"], expires_in=timedelta(hours=1))
    assert isinstance(manager.authenticate(issued.token, required_scopes=["read"]), Principal)
    expected = {
        "revoke": DenialReason.REVOKED,
        "update": DenialReason.INSUFFICIENT_SCOPE,
        "rotate": DenialReason.EXPIRED,
        "expire": DenialReason.EXPIRED,
    }[change]
    if change == "revoke":
        manager.revoke(issued.key_id)
    elif change == "update":
        manager.update(issued.key_id, scopes=["other"])
    elif change == "rotate":
        manager.rotate(issued.key_id, grace=timedelta(0))
    else:
        clock.advance(3600)
    denial = manager.authenticate(issued.token, required_scopes=["read"])
    assert isinstance(denial, Denial)
    assert denial.reason is expected


def test_a_wrong_secret_is_never_remembered() -> None:
    from keyguard import checksum

    manager, hasher, _ = _manager()
    issued = manager.create("acme")
    body = issued.token[:21] + "Z" * 32
    wrong = body + checksum(body)
    for _ in range(3):
        denial = manager.authenticate(wrong)
        assert isinstance(denial, Denial)
        assert denial.reason is DenialReason.WRONG_SECRET
    assert hasher.verifies == 3
    assert len(manager.token_memo or ()) == 0


def test_a_deleted_key_is_unknown_even_when_remembered() -> None:
    manager, hasher, _ = _manager()
    issued = manager.create("acme")
    manager.authenticate(issued.token)
    assert isinstance(manager.store, MemoryKeyStore)
    del manager.store._records[issued.key_id]
    denial = manager.authenticate(issued.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.UNKNOWN_KEY
    assert hasher.verifies == 2, "the unknown key still costs a hash, as always"


def test_required_environment_still_applies_to_remembered_tokens() -> None:
    store = MemoryKeyStore()
    memo = TokenMemo()
    lenient = KeyManager(store, token_memo=memo, last_used=None)
    strict = KeyManager(store, token_memo=memo, last_used=None, environment="live")
    issued = lenient.create("acme", environment="test")
    assert isinstance(lenient.authenticate(issued.token), Principal)
    denial = strict.authenticate(issued.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.WRONG_ENVIRONMENT


def test_memo_can_be_turned_off_and_is_bounded() -> None:
    manager, hasher, _ = _manager(token_memo=False)
    issued = manager.create("acme")
    for _ in range(3):
        manager.authenticate(issued.token)
    assert hasher.verifies == 3
    memo = TokenMemo(max_size=2)
    manager, _, _ = _manager(token_memo=memo)
    tokens = [manager.create("acme").token for _ in range(3)]
    for token in tokens:
        manager.authenticate(token)
    assert len(memo) == 2
    assert memo.get(token_digest(tokens[0])) is None
    for bad in (0, -1, 2.5, "10", True, None):
        with pytest.raises(ValueError, match="max_size must be a whole number"):
            TokenMemo(max_size=bad)


class NonBlockingStore(MemoryKeyStore):
    """A memory store whose async methods must never be awaited."""

    async def aget(self, key_id: str) -> Any:
        raise AssertionError("a NonBlocking store's sync method is called directly")

    async def aadd(self, record: Any) -> None:
        raise AssertionError("a NonBlocking store's sync method is called directly")


def test_an_async_manager_calls_a_nonblocking_store_directly() -> None:
    manager = AsyncKeyManager(NonBlockingStore(), last_used=None)

    async def use() -> Any:
        issued = await manager.create("acme")
        return await manager.authenticate(issued.token)

    assert isinstance(asyncio.run(use()), Principal)
