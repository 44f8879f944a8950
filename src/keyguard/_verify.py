"""Verifying a credential, and admitting what it proves.

A *verifier* turns a bearer credential into a :class:`Verified` (the
principal and the stored record behind it) or a :class:`~keyguard.Denial`;
the pipeline picks one by the credential's shape. :class:`KeyVerifier` checks
keyguard API keys, and :class:`MemoizedKeyVerifier` wraps it with a
:class:`TokenMemo`, so a token seen again against the very same record costs
no parse and no hash. Whatever verified it, :func:`admit` then decides
the same way: the record's state, the scopes, the use to record.

The order of :meth:`KeyVerifier.verify` is part of keyguard's security:
parse and checksum (no I/O) -> environment of the token (no I/O) -> one
store lookup -> the secret (an unknown key_id costs the same hashing as a
wrong secret) -> environment of the record. The state (revoked, expired) is
reported only once the secret verified, by :func:`admit`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from hashlib import blake2s
from typing import Final

from ._denials import Denial, DenialReason
from ._drive import Flow, Step
from ._errors import CircuitOpenError, MalformedKeyError, SecretTooLongError, StorageError
from ._hashing import SecretHasher, VerifiedSecretCache, warn_unreadable_hash
from ._keys import KeyFormat, ParsedKey, parse_key
from ._last_used import LastUsedRecorder
from ._logsafe import failures
from ._memo import BoundedMemo
from ._records import CLIENT_HASH_MARK, KeyChanges, KeyRecord, Principal
from ._steps import GetKey, UpdateKey

__all__ = [
    "DEFAULT_SLOW_HASH_THREADS",
    "KeyVerifier",
    "MemoizedKeyVerifier",
    "SlowHashWorkers",
    "TokenMemo",
    "Verified",
    "admit",
    "scope_denial",
    "store_unavailable",
    "token_digest",
]

logger: Final = logging.getLogger("keyguard")

_INVALID_KEY_DETAIL: Final = "the API key is not valid"
_CLIENT_SECRET_DETAIL: Final = (
    "this is an OAuth client secret, not an API key or an access token: exchange it for an "  # noqa: S105 (a message)
    "access token at the token endpoint (grant_type=client_credentials) and send that token"
)
#: Slow hashes (bcrypt, argon2) verified at once per process, in worker threads.
DEFAULT_SLOW_HASH_THREADS: Final = 2


class Verified:
    """What a verifier proved: who the caller is, and the stored record behind it.

    ``record`` is None for a credential that no record backs (a JWT from an
    external issuer); then there is no state to check.
    """

    __slots__ = ("principal", "record")

    def __init__(self, principal: Principal, record: KeyRecord | None) -> None:
        self.principal = principal
        self.record = record

    def __repr__(self) -> str:
        return f"Verified(key_id={self.principal.key_id!r})"


def store_unavailable(key_id: str | None, error: StorageError | None = None) -> Denial:
    """The 503 of a lookup that failed: authentication fails closed.

    ``error`` is logged with its traceback when the store failed, once per kind
    of failure and minute (then counted). A call that an open circuit refused
    is not logged (the breaker logs that it opened and closed); its wait until
    the next probe becomes ``Retry-After``.
    """
    retry_after: float = 1
    if isinstance(error, CircuitOpenError):
        # Every request is refused while the circuit is open, and the breaker logs that it
        # opened and closed: each refusal has its access-log line, and nothing more.
        retry_after = error.retry_after
    elif error is not None:  # one traceback per kind of failure and minute, then a count
        failures.failed("key store lookup failed", key_id, error)
    return Denial(
        DenialReason.STORE_UNAVAILABLE,
        "the key store is unavailable; try again shortly",
        key_id=key_id,
        retry_after=retry_after,
    )


class SlowHashWorkers:
    """Where slow hashes (bcrypt, argon2) are verified: never on an event-loop thread.

    A slow hash takes a few hundred milliseconds of CPU. Under ASGI it runs in
    one of ``threads`` worker threads while the loop serves other requests;
    under WSGI it runs on the request's own thread, and at most ``threads``
    run at once in either case. A request finding ``threads`` hashes running
    and ``waiting`` more queued gets 503 (``store_unavailable``) at once
    instead of a place in an unbounded queue.

    Args:
        threads: Slow hashes verified at once (default 2).
        waiting: Further requests that may wait for a turn (default 64).

    Raises:
        ValueError: A bound is not a positive whole number.
    """

    def __init__(self, threads: int = DEFAULT_SLOW_HASH_THREADS, waiting: int = 64) -> None:
        for name, value in (("threads", threads), ("waiting", waiting)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        self.threads = threads
        self.waiting = waiting
        self._pending = 0
        self._running = threading.BoundedSemaphore(threads)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SlowHashWorkers(threads={self.threads}, waiting={self.waiting})"

    @property
    def pending(self) -> int:
        """Verifications running or waiting for a turn now."""
        return self._pending

    def _admit(self) -> None:
        with self._lock:
            if self._pending >= self.threads + self.waiting:
                raise StorageError(
                    f"too many slow-hash verifications at once ({self.threads} running, "
                    f"{self.waiting} waiting)"
                )
            self._pending += 1

    def _leave(self) -> None:
        with self._lock:
            self._pending -= 1

    def verify(self, hasher: SecretHasher, secret: str, stored: str) -> bool:
        """``hasher.verify`` on this thread, within the bound."""
        self._admit()
        try:
            with self._running:
                return hasher.verify(secret, stored)
        finally:
            self._leave()

    async def averify(self, hasher: SecretHasher, secret: str, stored: str) -> bool:
        """``hasher.verify`` in a worker thread, within the bound."""
        self._admit()
        try:
            with self._lock:
                if self._executor is None:  # started lazily: most apps never see a slow hash
                    self._executor = ThreadPoolExecutor(
                        self.threads, thread_name_prefix="keyguard-slow-hash"
                    )
                executor = self._executor
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, hasher.verify, secret, stored)
        finally:
            self._leave()

    def close(self) -> None:
        """Stop the worker threads (after the hashes they run)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class _CheckSlowHash(Step[bool]):
    """Verify a secret against a slow stored hash, off the event loop."""

    __slots__ = ("hasher", "secret", "stored", "workers")

    def __init__(
        self, workers: SlowHashWorkers, hasher: SecretHasher, secret: str, stored: str
    ) -> None:
        self.workers = workers
        self.hasher = hasher
        self.secret = secret
        self.stored = stored

    def __repr__(self) -> str:
        return f"_CheckSlowHash({self.hasher!r})"

    def run(self, io: object) -> bool:
        return self.workers.verify(self.hasher, self.secret, self.stored)

    async def arun(self, io: object) -> bool:
        return await self.workers.averify(self.hasher, self.secret, self.stored)


class KeyVerifier:
    """Verifies keyguard API keys: parse, one lookup, the secret, the environment.

    Built once by a key manager (and by a middleware for another environment);
    every request runs :meth:`verify`.

    Args:
        key_format: The token format.
        hasher: Hashes new secrets and verifies current ones.
        legacy_hashers: Also understood for stored hashes (imported keys).
        verified_cache: Remembers slow-hash verifications and failures, or None.
        upgrade_hashes: Re-hash a legacy or outdated stored hash after a success.
        environment: The environment keys must be of, or None for any.
        slow_hashes: Where slow hashes run.
        dummy_hash: A hash of a random secret, checked for an unknown key_id.
        client_secret_prefix: The prefix of OAuth client secrets, refused
            with a detail that says to exchange them at the token endpoint.
    """

    __slots__ = (
        "_dummy_hash",
        "client_secret_prefix",
        "environment",
        "hasher",
        "key_format",
        "legacy_hashers",
        "slow_hashes",
        "upgrade_hashes",
        "verified_cache",
    )

    def __init__(
        self,
        *,
        key_format: KeyFormat,
        hasher: SecretHasher,
        legacy_hashers: tuple[SecretHasher, ...],
        verified_cache: VerifiedSecretCache | None,
        upgrade_hashes: bool,
        environment: str | None,
        slow_hashes: SlowHashWorkers,
        dummy_hash: str,
        client_secret_prefix: str | None = None,
    ) -> None:
        self.key_format = key_format
        self.client_secret_prefix = (
            None if client_secret_prefix is None else client_secret_prefix + "_"
        )
        self.hasher = hasher
        self.legacy_hashers = legacy_hashers
        self.verified_cache = verified_cache
        self.upgrade_hashes = upgrade_hashes
        self.environment = environment
        self.slow_hashes = slow_hashes
        self._dummy_hash = dummy_hash

    def __repr__(self) -> str:
        return f"KeyVerifier(key_format={self.key_format!r}, environment={self.environment!r})"

    @property
    def may_block(self) -> bool:
        """True when a slow hasher is configured: its steps must run off the event loop."""
        return any(h.slow for h in (self.hasher, *self.legacy_hashers))

    def for_environment(self, environment: str | None) -> KeyVerifier:
        """This verifier, for keys of ``environment`` (None: any)."""
        if environment == self.environment:
            return self
        return KeyVerifier(
            key_format=self.key_format,
            hasher=self.hasher,
            legacy_hashers=self.legacy_hashers,
            verified_cache=self.verified_cache,
            upgrade_hashes=self.upgrade_hashes,
            environment=environment,
            slow_hashes=self.slow_hashes,
            dummy_hash=self._dummy_hash,
            client_secret_prefix=self.client_secret_prefix and self.client_secret_prefix[:-1],
        )

    def parse(self, token: str) -> ParsedKey | Denial:
        """The parsed token, or the denial of a malformed one or one of another environment.
        No I/O."""
        try:
            parsed = parse_key(token, self.key_format)
        except MalformedKeyError as exc:
            if self.client_secret_prefix is not None and token.startswith(
                self.client_secret_prefix
            ):
                return Denial(DenialReason.CLIENT_SECRET_AS_BEARER, _CLIENT_SECRET_DETAIL)
            return Denial(DenialReason.MALFORMED_KEY, f"the API key is malformed: {exc}")
        environment = self.environment
        if environment is not None and parsed.environment not in (None, environment):
            return Denial(
                DenialReason.WRONG_ENVIRONMENT,
                f"this API accepts only {environment!r} keys",
                key_id=parsed.key_id,
            )
        return parsed

    def verify(self, token: str) -> Flow[Verified | Denial]:
        """Verify ``token``: parse, look its key_id up, check the secret and the environment."""
        parsed = self.parse(token)
        if isinstance(parsed, Denial):
            return parsed
        try:
            record = yield from GetKey(parsed.key_id)
        except StorageError as exc:
            return store_unavailable(parsed.key_id, exc)
        return (yield from self.verify_record(parsed, record))

    def verify_record(self, parsed: ParsedKey, record: KeyRecord | None) -> Flow[Verified | Denial]:
        """The checks after the lookup: the secret (the same work for an unknown key_id),
        a hash upgrade, the record's environment."""
        if record is None:
            self.hasher.verify(parsed.secret, self._dummy_hash)
            return Denial(DenialReason.UNKNOWN_KEY, _INVALID_KEY_DETAIL, key_id=parsed.key_id)
        stored = record.secret_hash
        hasher = self._hasher_for(stored)
        if stored.startswith(CLIENT_HASH_MARK):
            # An OAuth client's secret in the key format: it buys tokens, not API calls.
            # The same work and the same answer as a wrong secret.
            self.hasher.verify(parsed.secret, self._dummy_hash)
            ok = False
        elif hasher is None:
            warn_unreadable_hash(record.key_id, stored, (self.hasher, *self.legacy_hashers))
            self.hasher.verify(parsed.secret, self._dummy_hash)
            ok = False
        elif hasher.slow:
            checked = yield from self._check_slow(hasher, record, parsed.secret)
            if isinstance(checked, Denial):
                return checked
            ok = checked
        else:
            try:
                ok = hasher.verify(parsed.secret, stored)
            except SecretTooLongError:
                ok = False
        if not ok:
            return Denial(DenialReason.WRONG_SECRET, _INVALID_KEY_DETAIL, key_id=record.key_id)
        if self.upgrade_hashes and (hasher is not self.hasher or self.hasher.needs_rehash(stored)):
            record = yield from self._upgrade(record, parsed.secret)
        wanted = self.environment if self.environment is not None else parsed.environment
        if wanted is not None and record.environment != wanted:
            return Denial(
                DenialReason.WRONG_ENVIRONMENT,
                f"this API accepts only {wanted!r} keys",
                key_id=record.key_id,
            )
        return Verified(Principal.from_record(record), record)

    def _hasher_for(self, stored: str) -> SecretHasher | None:
        if self.hasher.identify(stored):
            return self.hasher
        for hasher in self.legacy_hashers:
            if hasher.identify(stored):
                return hasher
        return None

    def _check_slow(
        self, hasher: SecretHasher, record: KeyRecord, secret: str
    ) -> Flow[bool | Denial]:
        """A slow hash: from the cache of recent outcomes, or in a worker thread."""
        cache = self.verified_cache
        key_id, stored = record.key_id, record.secret_hash
        if cache is not None:
            known = cache.outcome(key_id, stored, secret)
            if known is not None:
                return known
        try:
            ok = yield from _CheckSlowHash(self.slow_hashes, hasher, secret, stored)
        except SecretTooLongError:
            return False
        except StorageError as exc:  # every worker busy, and the queue full: try again shortly
            failures.failed(
                "slow-hash verification refused: workers busy",
                key_id,
                exc,
                level=logging.WARNING,
                with_traceback=False,
            )
            return store_unavailable(key_id)
        if cache is not None:
            cache.remember(key_id, stored, secret, ok=ok)
        return ok

    def _upgrade(self, record: KeyRecord, secret: str) -> Flow[KeyRecord]:
        """Store ``secret`` under the current hasher; a failure is logged, never a denial."""
        changes = KeyChanges(secret_hash=self.hasher.hash(secret))
        try:
            upgraded = yield from UpdateKey(record.key_id, changes)
        except StorageError:
            logger.warning("could not upgrade the stored hash of key %s", record.key_id)
            return record
        if self.verified_cache is not None:
            self.verified_cache.discard(record.key_id)
        return record if upgraded is None else upgraded


class TokenMemo(BoundedMemo[bytes, tuple["KeyVerifier", Verified]]):
    """Remembers which token verified against which record, so a repeat costs no parse or hash.

    An entry maps the digest of a token (:func:`token_digest`; never the token)
    to the verifier that checked it and what it proved, including the exact
    record object. It is only trusted while the store hands out that very
    object again: any change to the key (revoke, rotate, update, a new hash,
    a last-used write) replaces the record, so the next request takes the
    full path. A store that builds a new record per lookup (SQL without a
    cache) simply never hits. Bounded: the oldest entry goes first, in O(1).

    Args:
        max_size: The most tokens remembered, at least 1.

    Raises:
        ValueError: ``max_size`` is not a whole number of at least 1.
    """

    __slots__ = ()

    def __init__(self, max_size: int = 10_000) -> None:
        super().__init__(max_size)

    def remember(self, digest: bytes, verifier: KeyVerifier, verified: Verified) -> None:
        """Remember that the token of ``digest`` proved ``verified`` to ``verifier``."""
        self.put(digest, (verifier, verified))


def token_digest(token: str) -> bytes:
    """The memo key of a token: its BLAKE2s digest, so the memo never holds a secret.

    BLAKE2s is a collision-resistant 256-bit hash, like SHA-256, and a third
    cheaper on a token-sized input.
    """
    return blake2s(token.encode("utf-8", "surrogatepass")).digest()


class MemoizedKeyVerifier:
    """A :class:`KeyVerifier` behind a :class:`TokenMemo`: the same answers, fewer hashes.

    A token the memo knows, from this very verifier, is looked up once and,
    when the store returns the record it verified against, proven again
    without parsing or hashing. Anything else takes the verifier's full path,
    with the record already fetched.
    """

    __slots__ = ("memo", "verifier")

    def __init__(self, verifier: KeyVerifier, memo: TokenMemo) -> None:
        self.verifier = verifier
        self.memo = memo

    def __repr__(self) -> str:
        return f"MemoizedKeyVerifier({self.verifier!r}, {self.memo!r})"

    @property
    def may_block(self) -> bool:
        """See :attr:`KeyVerifier.may_block`."""
        return self.verifier.may_block

    def for_environment(self, environment: str | None) -> MemoizedKeyVerifier:
        """This verifier, for keys of ``environment``; the memo is shared."""
        inner = self.verifier.for_environment(environment)
        return self if inner is self.verifier else MemoizedKeyVerifier(inner, self.memo)

    def verify(self, token: str) -> Flow[Verified | Denial]:
        """See :meth:`KeyVerifier.verify`."""
        verifier = self.verifier
        digest = token_digest(token)
        entry = self.memo.get(digest)
        if entry is None or entry[0] is not verifier:
            result = yield from verifier.verify(token)
        else:
            verified = entry[1]
            key_id = verified.principal.key_id
            try:
                record = yield from GetKey(key_id)
            except StorageError as exc:
                return store_unavailable(key_id, exc)
            if record is verified.record:
                return verified
            parsed = verifier.parse(token)  # it parsed when remembered, with these settings
            if isinstance(parsed, Denial):  # pragma: no cover - settings are immutable
                return parsed
            result = yield from verifier.verify_record(parsed, record)
        if not isinstance(result, Denial):
            self.memo.remember(digest, verifier, result)
        return result


def scope_denial(key_id: str, granted: frozenset[str], required: Collection[str]) -> Denial | None:
    """The 403 denial of a key granted ``granted`` for a request needing ``required``, or None.

    The one place a missing scope is decided: the admission step and the
    framework integrations' per-route scopes both ask here.
    """
    if granted.issuperset(required):  # the common case, without making a set
        return None
    missing = frozenset(required) - granted
    return Denial(
        DenialReason.INSUFFICIENT_SCOPE,
        "the API key lacks the scope " + " ".join(sorted(missing)),
        key_id=key_id,
        missing_scopes=missing,
    )


def _state_denial(record: KeyRecord, now: Callable[[], datetime]) -> Denial | None:
    """The denial of a revoked or expired key, or None when it is active."""
    status = record.status(now)
    if status == "revoked":
        return Denial(DenialReason.REVOKED, "the API key has been revoked", key_id=record.key_id)
    if status == "expired":
        return Denial(DenialReason.EXPIRED, "the API key has expired", key_id=record.key_id)
    return None


def admit(
    verified: Verified,
    required_scopes: Collection[str],
    now: Callable[[], datetime],
    last_used: LastUsedRecorder | None,
) -> Principal | Denial:
    """Admit what a verifier proved, whichever verifier it was: the record's state
    (revoked, expired), the scopes, and the use, noted in memory for the
    background ``last_used_at`` writer (no I/O here, so not a flow)."""
    record = verified.record
    # Neither revoked nor expiring: active, as status() says, without its call per request.
    if record is not None and (record.revoked_at is not None or record.expires_at is not None):
        refusal = _state_denial(record, now)
        if refusal is not None:
            return refusal
    principal = verified.principal
    if required_scopes:
        refusal = scope_denial(principal.key_id, principal.scopes, required_scopes)
        if refusal is not None:
            return refusal
    if last_used is not None and record is not None:
        last_used.note(record.key_id, now)
    return principal
