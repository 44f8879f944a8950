"""Key lifecycle and verification, run through both the sync and the async manager."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from keyguard import (
    AsyncKeyManager,
    Denial,
    DenialReason,
    DuplicateKeyError,
    HmacSecretHasher,
    KeyFormat,
    KeyManager,
    KeyNotFoundError,
    PasslibHasher,
    Policy,
    Principal,
)
from keyguard.stores import CachedKeyStore, MemoryKeyStore
from keyguard.testing import FakeClock
from tests._hashers import CountingHasher


class SyncFacade:
    """Runs an AsyncKeyManager's coroutines to completion, so one test serves both."""

    def __init__(self, manager: AsyncKeyManager) -> None:
        self._manager = manager

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._manager, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run(attr(*args, **kwargs))

        return call


@dataclass
class Env:
    manager: Any  # KeyManager, or SyncFacade over AsyncKeyManager
    store: MemoryKeyStore
    clock: FakeClock


class CountingStore(MemoryKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.fail: Exception | None = None

    def get(self, key_id: str) -> Any:
        self.gets += 1
        if self.fail is not None:
            raise self.fail
        return super().get(key_id)


Factory = Callable[..., Env]


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest) -> Factory:
    def factory(**options: Any) -> Env:
        # "is None", not "or": an empty store is falsy (it has a length).
        store = options.pop("store", None)
        store = CountingStore() if store is None else store
        clock = options.pop("clock", None) or FakeClock()
        if request.param == "sync":
            manager: Any = KeyManager(store, clock=clock, **options)
        else:
            manager = SyncFacade(AsyncKeyManager(store, clock=clock, **options))
        return Env(manager, store, clock)

    return factory


def test_create_returns_token_once_and_stores_only_a_hash(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme", "deploy", scopes=["billing:read"])
    assert issued.token.startswith("sk_live_")
    assert issued.token not in repr(issued)
    secret = issued.token[21:53]
    stored = env.store.get(issued.key_id)
    assert stored is not None
    assert stored == issued.record
    assert secret not in repr(stored)
    assert stored.secret_hash not in repr(stored)
    assert secret not in stored.secret_hash
    assert stored.owner == "acme"
    assert stored.scopes == {"billing:read"}
    assert stored.created_at == env.clock.now()


def test_authenticate_returns_principal(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme", "deploy", scopes=["a", "b"], metadata={"tier": "gold"})
    principal = env.manager.authenticate(issued.token, required_scopes=["a"])
    assert isinstance(principal, Principal)
    assert principal.key_id == issued.key_id
    assert principal.owner == "acme"
    assert principal.scopes == {"a", "b"}
    assert principal.metadata == {"tier": "gold"}
    assert principal.is_authenticated
    assert principal.display_name == "acme"
    assert principal.identity == issued.key_id


def test_a_token_that_is_not_a_str_is_a_type_error_that_does_not_show_it(make: Factory) -> None:
    # The same error in the pure and the compiled build (whose flow takes a str).
    env = make()
    issued = env.manager.create("acme")
    with pytest.raises(TypeError, match="the token must be a str, got bytes") as raised:
        env.manager.authenticate(issued.token.encode())
    assert issued.token not in str(raised.value)
    assert env.store.gets == 0


def test_unknown_key_and_wrong_secret_look_the_same_and_cost_the_same(make: Factory) -> None:
    hasher = CountingHasher()
    env = make(hasher=hasher)
    issued = env.manager.create("acme")
    other = make().manager.create("acme").token  # valid shape, unknown key_id
    wrong_secret = _with_secret(issued.token, "A" * 32)

    hasher.verifies = 0
    unknown = env.manager.authenticate(other)
    unknown_work = hasher.verifies
    hasher.verifies = 0
    wrong = env.manager.authenticate(wrong_secret)
    assert unknown_work == hasher.verifies == 1
    assert isinstance(unknown, Denial)
    assert isinstance(wrong, Denial)
    assert unknown.reason is DenialReason.UNKNOWN_KEY
    assert wrong.reason is DenialReason.WRONG_SECRET
    assert unknown.detail == wrong.detail


def _with_secret(token: str, secret: str) -> str:
    from keyguard import checksum

    body = token[:21] + secret
    return body + checksum(body)


def test_malformed_token_never_touches_the_store(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme")
    denial = env.manager.authenticate(issued.token[:-1] + ("0" if issued.token[-1] != "0" else "1"))
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.MALFORMED_KEY
    assert "checksum" in denial.detail
    assert issued.token not in denial.detail
    assert env.store.gets == 0


def test_revoke_is_immediate_and_idempotent(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme")
    record = env.manager.revoke(issued.key_id)
    assert record.revoked_at == env.clock.now()
    denial = env.manager.authenticate(issued.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.REVOKED
    env.clock.advance(10)
    again = env.manager.revoke(issued.key_id)
    assert again.revoked_at == record.revoked_at
    with pytest.raises(KeyNotFoundError):
        env.manager.revoke("AAAAAAAAAAAA")


def test_revoked_or_expired_is_only_reported_after_the_secret_verifies(make: Factory) -> None:
    env = make()
    revoked = env.manager.create("acme")
    expired = env.manager.create("acme", expires_in=timedelta(minutes=1))
    env.manager.revoke(revoked.key_id)
    env.clock.advance(61)
    for token in (revoked.token, expired.token):
        denial = env.manager.authenticate(_with_secret(token, "B" * 32))
        assert isinstance(denial, Denial)
        assert denial.reason is DenialReason.WRONG_SECRET
    denial = env.manager.authenticate(expired.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.EXPIRED


def test_expiry_boundary(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme", expires_in=timedelta(hours=1))
    env.clock.advance(3599)
    assert isinstance(env.manager.authenticate(issued.token), Principal)
    env.clock.advance(1)
    denial = env.manager.authenticate(issued.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.EXPIRED


def test_rotate_with_grace(make: Factory) -> None:
    env = make()
    old = env.manager.create("acme", "ci", scopes=["x"], metadata={"m": 1})
    new = env.manager.rotate(old.key_id, grace=timedelta(minutes=10))
    assert new.key_id != old.key_id
    assert (new.record.owner, new.record.name, new.record.scopes) == ("acme", "ci", {"x"})
    assert new.record.metadata == {"m": 1}
    assert env.manager.get(old.key_id).replaced_by == new.key_id
    assert isinstance(env.manager.authenticate(old.token), Principal)
    assert isinstance(env.manager.authenticate(new.token), Principal)
    env.clock.advance(600)
    denial = env.manager.authenticate(old.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.EXPIRED
    assert isinstance(env.manager.authenticate(new.token), Principal)


def test_rotate_without_grace_and_of_dead_keys(make: Factory) -> None:
    env = make()
    old = env.manager.create("acme")
    env.manager.rotate(old.key_id, grace=timedelta(0))
    denial = env.manager.authenticate(old.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.EXPIRED
    with pytest.raises(ValueError, match="expired"):
        env.manager.rotate(old.key_id)
    with pytest.raises(KeyNotFoundError):
        env.manager.rotate("AAAAAAAAAAAA")


def test_rotate_never_extends_an_earlier_expiry(make: Factory) -> None:
    env = make()
    old = env.manager.create("acme", expires_in=timedelta(minutes=5))
    env.manager.rotate(old.key_id, grace=timedelta(hours=1))
    assert env.manager.get(old.key_id).expires_at == env.clock.now() + timedelta(minutes=5)


def test_update_scopes_and_metadata(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme", scopes=["read"])
    denial = env.manager.authenticate(issued.token, required_scopes=["write"])
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.INSUFFICIENT_SCOPE
    assert denial.missing_scopes == {"write"}
    record = env.manager.update(issued.key_id, scopes=["read", "write"], metadata={"a": 1})
    assert record.scopes == {"read", "write"}
    assert record.metadata == {"a": 1}
    assert record.owner == "acme"
    assert isinstance(env.manager.authenticate(issued.token, required_scopes=["write"]), Principal)
    with pytest.raises(KeyNotFoundError):
        env.manager.update("AAAAAAAAAAAA", name="x")


def test_list_and_get(make: Factory) -> None:
    env = make()
    a = env.manager.create("alpha")
    env.manager.create("beta")
    assert [r.key_id for r in env.manager.list("alpha")] == [a.key_id]
    assert len(env.manager.list()) == 2
    assert env.manager.get(a.key_id) == a.record
    with pytest.raises(KeyNotFoundError):
        env.manager.get("nope")


def test_required_environment_refuses_before_lookup(make: Factory) -> None:
    env = make(environment="live")
    test_key = env.manager.create("acme", environment="test")
    live_key = env.manager.create("acme", environment="live")
    env.store.gets = 0
    denial = env.manager.authenticate(test_key.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.WRONG_ENVIRONMENT
    assert env.store.gets == 0
    assert isinstance(env.manager.authenticate(live_key.token), Principal)


def test_token_environment_must_match_the_record(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme", environment="test")
    forged = issued.token.replace("sk_test_", "sk_live_")
    body = forged[:-6]
    from keyguard import checksum

    denial = env.manager.authenticate(body + checksum(body))
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.WRONG_ENVIRONMENT


def test_store_failure_is_a_denial_not_an_exception(make: Factory) -> None:
    env = make()
    issued = env.manager.create("acme")
    assert isinstance(env.store, CountingStore)
    env.store.fail = ConnectionError("db down: password=hunter2")
    denial = env.manager.authenticate(issued.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.STORE_UNAVAILABLE
    assert denial.retry_after is not None
    assert "hunter2" not in denial.detail


def test_create_validation(make: Factory) -> None:
    env = make()
    with pytest.raises(ValueError, match="owner"):
        env.manager.create("")
    with pytest.raises(TypeError, match="scopes"):
        env.manager.create("acme", scopes="billing:read")
    with pytest.raises(ValueError, match="scope"):
        env.manager.create("acme", scopes=["has space"])
    with pytest.raises(ValueError, match="environment"):
        env.manager.create("acme", environment="prod")
    with pytest.raises(ValueError, match="not both"):
        env.manager.create("acme", expires_in=timedelta(1), expires_at=env.clock.now())
    with pytest.raises(ValueError, match="positive"):
        env.manager.create("acme", expires_in=timedelta(0))


_SHA = "sha256$" + "0" * 64


@pytest.mark.parametrize(
    ("operation", "error", "match"),
    [
        pytest.param(lambda m, k: m.create("acme", None), TypeError, "name", id="create-name"),
        pytest.param(
            lambda m, k: m.create("acme", metadata={"a": object()}),
            ValueError,
            "JSON",
            id="create-metadata-object",
        ),
        pytest.param(
            lambda m, k: m.create("acme", metadata={1: "x"}),
            ValueError,
            "keys must be strings",
            id="create-metadata-int-key",
        ),
        pytest.param(
            lambda m, k: m.create("acme", metadata={"x": float("nan")}),
            ValueError,
            "JSON",
            id="create-metadata-nan",
        ),
        pytest.param(
            lambda m, k: m.create("acme", metadata=["a"]),
            TypeError,
            "mapping",
            id="create-metadata-list",
        ),
        pytest.param(lambda m, k: m.update(k, name=3), TypeError, "name", id="update-name"),
        pytest.param(
            lambda m, k: m.update(k, metadata={"a": {1, 2}}),
            ValueError,
            "JSON",
            id="update-metadata-set",
        ),
        pytest.param(
            lambda m, k: m.import_key("legacy09", _SHA, owner="acme", name=None),
            TypeError,
            "name",
            id="import-name",
        ),
        pytest.param(
            lambda m, k: m.import_key("legacy09", _SHA, owner="acme", environment=""),
            ValueError,
            "environment",
            id="import-environment",
        ),
    ],
)
def test_names_and_metadata_every_store_can_keep(
    make: Factory, operation: Callable[[Any, str], object], error: type, match: str
) -> None:
    """Refused before any write, so that a store never sees (or quotes back) such a record."""
    env = make()
    issued = env.manager.create("acme", "ci", metadata={"team": "payments"})
    with pytest.raises(error, match=match):
        operation(env.manager, issued.key_id)
    assert [r.key_id for r in env.store.list_keys()] == [issued.key_id]
    assert env.store.get(issued.key_id) == issued.record


def test_per_key_rate_limit_is_carried_to_the_principal(make: Factory) -> None:
    env = make()
    policy = Policy("per-key", quota=5, window=1)
    issued = env.manager.create("acme", rate_limit=policy)
    principal = env.manager.authenticate(issued.token)
    assert isinstance(principal, Principal)
    assert principal.rate_limit == policy


@pytest.fixture(scope="module")
def fast_bcrypt() -> PasslibHasher:
    from passlib.context import CryptContext

    return PasslibHasher(CryptContext(schemes=["bcrypt"], bcrypt__rounds=4))


def test_import_bcrypt_key_is_upgraded_on_first_success(
    make: Factory, fast_bcrypt: PasslibHasher
) -> None:
    env = make(legacy_hashers=[fast_bcrypt], key_format=KeyFormat(accept_split_keys=True))
    secret = "0ldSyst3mSecretValue"
    record = env.manager.import_key(
        "legacy01", fast_bcrypt.hash(secret), owner="acme", scopes=["read"]
    )
    assert record.secret_hash.startswith("$2b$")
    denial = env.manager.authenticate("legacy01.wrong")
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.WRONG_SECRET
    assert env.manager.get("legacy01").secret_hash.startswith("$2b$")
    principal = env.manager.authenticate(f"legacy01.{secret}")
    assert isinstance(principal, Principal)
    assert principal.scopes == {"read"}
    upgraded = env.manager.get("legacy01").secret_hash
    assert upgraded.startswith("sha256$")
    assert isinstance(env.manager.authenticate(f"legacy01.{secret}"), Principal)
    with pytest.raises(DuplicateKeyError):
        env.manager.import_key("legacy01", upgraded, owner="acme")


def test_verified_cache_spares_the_slow_hash(make: Factory, fast_bcrypt: PasslibHasher) -> None:
    calls = []

    class Spy(PasslibHasher):
        def verify(self, secret: str, stored: str) -> bool:
            calls.append(stored)
            return super().verify(secret, stored)

    spy = Spy(fast_bcrypt._context)
    env = make(
        legacy_hashers=[spy],
        upgrade_hashes=False,
        key_format=KeyFormat(accept_split_keys=True),
    )
    env.manager.import_key("legacy02", spy.hash("s3cret"), owner="acme")
    for _ in range(3):
        assert isinstance(env.manager.authenticate("legacy02.s3cret"), Principal)
    assert len(calls) == 1
    assert isinstance(env.manager.authenticate("legacy02.wrong"), Denial)
    env.manager.revoke("legacy02")
    denial = env.manager.authenticate("legacy02.s3cret")
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.REVOKED
    assert len(calls) == 3, "revoke must drop the cached verification"


def test_without_cache_and_memo_every_request_pays_the_slow_hash(
    make: Factory, fast_bcrypt: PasslibHasher
) -> None:
    calls = []

    class Spy(PasslibHasher):
        def verify(self, secret: str, stored: str) -> bool:
            calls.append(stored)
            return super().verify(secret, stored)

    spy = Spy(fast_bcrypt._context)
    for token_memo, expected in ((False, 3), (True, 1)):
        calls.clear()
        env = make(
            legacy_hashers=[spy],
            upgrade_hashes=False,
            verified_cache=False,
            token_memo=token_memo,
            last_used=None,  # a last-used write gives a new record, which the memo re-checks
            key_format=KeyFormat(accept_split_keys=True),
        )
        env.manager.import_key("legacy04", spy.hash("s3cret"), owner="acme")
        for _ in range(3):
            assert isinstance(env.manager.authenticate("legacy04.s3cret"), Principal)
        assert len(calls) == expected, f"token_memo={token_memo}"


def test_import_validation(make: Factory) -> None:
    env = make()
    with pytest.raises(ValueError, match="hasher"):
        env.manager.import_key("legacy03", "$2b$12$" + "a" * 53, owner="acme")
    with pytest.raises(ValueError, match="key_id"):
        env.manager.import_key("bad id", "sha256$" + "0" * 64, owner="acme")


def test_unknown_stored_hash_format_is_a_wrong_secret(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    env = make()
    issued = env.manager.create("acme")
    env.store.update(issued.key_id, _changes(secret_hash="md5$abcdef"))
    denial = env.manager.authenticate(issued.token)
    assert isinstance(denial, Denial)
    assert denial.reason is DenialReason.WRONG_SECRET
    assert issued.key_id in caplog.text
    assert issued.token not in caplog.text


def _changes(**kwargs: Any) -> Any:
    from keyguard import KeyChanges

    return KeyChanges(**kwargs)


def test_peppered_hash_upgrade_on_verify(make: Factory) -> None:
    store = CountingStore()
    old = KeyManager(store, hasher=HmacSecretHasher({"v1": b"1" * 32}))
    issued = old.create("acme")
    env = make(
        store=store, hasher=HmacSecretHasher({"v1": b"1" * 32, "v2": b"2" * 32}, current="v2")
    )
    assert isinstance(env.manager.authenticate(issued.token), Principal)
    assert store.get(issued.key_id).secret_hash.startswith("hmac-sha256$v2$")


def test_reprs_show_no_secrets() -> None:
    manager = KeyManager(MemoryKeyStore())
    issued = manager.create("acme")
    assert manager.verifier.verifier._dummy_hash not in repr(manager.verifier)
    for obj in (manager, issued, issued.record, manager.store):
        assert issued.token not in repr(obj)
        assert issued.record.secret_hash not in repr(obj)


def test_record_status_reads_a_clock_only_for_keys_that_expire() -> None:
    from datetime import UTC, datetime

    from keyguard.testing import sample_record

    def no_clock() -> datetime:
        raise AssertionError("a key without an expiry needs no clock")

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert sample_record(expires_at=None).status(no_clock) == "active"
    assert sample_record(expires_at=None, revoked_at=t0).status(no_clock) == "revoked"
    expiring = sample_record(expires_at=t0)
    assert expiring.status(lambda: t0) == "expired"
    assert expiring.status(t0 - timedelta(seconds=1)) == "active"


def test_rotate_refuses_a_key_revoked_elsewhere_while_cached(make: Factory) -> None:
    backing = MemoryKeyStore()
    env = make(store=CachedKeyStore(backing, clock=FakeClock().monotonic))
    old = env.manager.create("acme")
    assert env.manager.get(old.key_id).revoked_at is None  # now cached as active
    backing.revoke(old.key_id, env.clock.now())  # another process, straight to the store
    with pytest.raises(ValueError, match="revoked"):
        env.manager.rotate(old.key_id)
    replacements = [r for r in backing.list_keys() if r.key_id != old.key_id]
    assert len(replacements) == 1
    assert replacements[0].revoked_at is not None


def test_a_repeated_wrong_secret_costs_one_slow_hash(
    make: Factory, fast_bcrypt: PasslibHasher
) -> None:
    calls = []

    class Spy(PasslibHasher):
        def verify(self, secret: str, stored: str) -> bool:
            calls.append(secret)
            return super().verify(secret, stored)

    spy = Spy(fast_bcrypt._context)
    env = make(legacy_hashers=[spy], key_format=KeyFormat(accept_split_keys=True))
    env.manager.import_key("legacy05", spy.hash("s3cret"), owner="acme")
    for _ in range(3):
        denial = env.manager.authenticate("legacy05.wrong")
        assert isinstance(denial, Denial)
        assert denial.reason is DenialReason.WRONG_SECRET
    assert calls == ["wrong"], "a wrong secret seen before is refused without a slow hash"
    denial = env.manager.authenticate("legacy05.other")
    assert isinstance(denial, Denial)
    assert calls == ["wrong", "other"], "a different wrong secret still costs one"
    assert isinstance(env.manager.authenticate("legacy05.s3cret"), Principal)


def test_slow_hashes_run_in_worker_threads_under_the_async_manager(
    fast_bcrypt: PasslibHasher,
) -> None:
    import threading

    threads = []

    class Spy(PasslibHasher):
        def verify(self, secret: str, stored: str) -> bool:
            threads.append(threading.current_thread().name)
            return super().verify(secret, stored)

    spy = Spy(fast_bcrypt._context)
    manager = AsyncKeyManager(
        MemoryKeyStore(), legacy_hashers=[spy], key_format=KeyFormat(accept_split_keys=True)
    )

    async def use() -> Any:
        await manager.import_key("legacy06", spy.hash("s3cret"), owner="acme")
        try:
            return await manager.authenticate("legacy06.s3cret")
        finally:
            await manager.aclose()

    assert isinstance(asyncio.run(use()), Principal)
    assert len(threads) == 1
    assert threads[0].startswith("keyguard-slow-hash")


def test_more_slow_hashes_than_workers_and_queue_get_503(fast_bcrypt: PasslibHasher) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from keyguard import SlowHashWorkers

    release = threading.Event()
    entered = threading.Semaphore(0)

    class Blocking(PasslibHasher):
        def verify(self, secret: str, stored: str) -> bool:
            entered.release()
            release.wait(10)
            return super().verify(secret, stored)

    blocking = Blocking(fast_bcrypt._context)
    workers = SlowHashWorkers(threads=1, waiting=1)
    manager = KeyManager(
        MemoryKeyStore(),
        legacy_hashers=[blocking],
        key_format=KeyFormat(accept_split_keys=True),
        slow_hashes=workers,
        verified_cache=False,
        token_memo=False,
    )
    manager.import_key("legacy07", blocking.hash("s3cret"), owner="acme")
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(manager.authenticate, "legacy07.s3cret")
        assert entered.acquire(timeout=10)
        queued = pool.submit(manager.authenticate, "legacy07.s3cret")
        for _ in range(1000):  # until the second one waits for its turn
            if workers.pending == 2:
                break
            release.wait(0.01)
        assert workers.pending == 2
        # One runs, one waits: the next finds no room and is refused at once.
        denial = manager.authenticate("legacy07.s3cret")
        assert isinstance(denial, Denial)
        assert denial.reason is DenialReason.STORE_UNAVAILABLE
        assert denial.retry_after == 1
        release.set()
        assert isinstance(running.result(10), Principal)
        assert isinstance(queued.result(10), Principal)
