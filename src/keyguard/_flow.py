"""The verification flow and the key lifecycle, written once, driven sync or async.

Every operation here is a generator that makes decisions and *yields* the I/O
it needs as :data:`Call` triples (``("store", "get", (key_id,))``). A
sync driver performs a call with ``store.get(key_id)``, an async driver with
``await store.aget(key_id)``, and sends the result back in. So what is
malformed, which check comes first and what a denial says exist in exactly one
place, whichever kind of app runs them.

A failure of a backend reaches the generator as :class:`StorageError` (thrown
in at the ``yield``), so the flow also decides what a failure means: for
authentication it is a denial, "store unavailable" (fail closed).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Generator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from hashlib import blake2s
from typing import Any, Final, TypeVar

from ._errors import KeyguardError, MalformedKeyError, SecretTooLongError, StorageError
from ._hashing import SecretHasher, VerifiedSecretCache
from ._keys import KeyFormat, ParsedKey, parse_key
from ._last_used import LastUsedRecorder
from ._records import KeyChanges, KeyRecord, Principal

__all__ = [
    "Call",
    "Denial",
    "DenialReason",
    "Flow",
    "TokenMemo",
    "drive_async",
    "drive_sync",
    "scope_denial",
    "token_digest",
]

logger: Final = logging.getLogger("keyguard")

T = TypeVar("T")


#: One I/O step a flow needs, ``(target, method, args)``: the driver performs it as
#: ``targets[target].method(*args)`` (``a``-prefixed when async). A plain tuple, as a
#: request makes one or two of them and a named tuple costs several times as much to make.
Call = tuple[str, str, tuple[Any, ...]]

Flow = Generator[Call, Any, T]


def _wrap(exc: Exception, call: Call) -> KeyguardError:
    if isinstance(exc, KeyguardError):
        return exc
    wrapped = StorageError(f"{call[0]}.{call[1]} failed: {type(exc).__name__}")
    wrapped.__cause__ = exc
    return wrapped


def drive_sync(flow: Flow[T], targets: Mapping[str, Any]) -> T:
    """Run ``flow`` to completion, performing each call synchronously."""
    runner = flow
    send = runner.send
    try:
        call = send(None)
        while True:
            try:
                result = getattr(targets[call[0]], call[1])(*call[2])
            except Exception as exc:  # a backend failure is the flow's to judge
                call = runner.throw(_wrap(exc, call))
            else:
                call = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def drive_async(flow: Flow[T], targets: Mapping[str, Any]) -> T:
    """Run ``flow`` to completion, awaiting the ``a``-prefixed method for each call.

    A target whose ``nonblocking`` attribute is true (an in-memory backend,
    which never waits for I/O) has its sync method called instead.
    """
    runner = flow
    send = runner.send
    try:
        call = send(None)
        while True:
            try:
                target = targets[call[0]]
                if getattr(target, "nonblocking", False):
                    # An in-memory backend: its sync method cannot block the loop,
                    # and calling it directly spares a coroutine per call.
                    result = getattr(target, call[1])(*call[2])
                else:
                    result = await getattr(target, "a" + call[1])(*call[2])
            except Exception as exc:  # a backend failure is the flow's to judge
                call = runner.throw(_wrap(exc, call))
            else:
                call = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class DenialReason(enum.Enum):
    """Why a request was not authenticated. The value is safe to log."""

    MISSING_CREDENTIALS = "missing_credentials"
    INVALID_REQUEST = "invalid_request"
    MALFORMED_KEY = "malformed_key"
    UNKNOWN_KEY = "unknown_key"
    WRONG_SECRET = "wrong_secret"  # noqa: S105 (a reason code, not a password)
    WRONG_ENVIRONMENT = "wrong_environment"
    REVOKED = "revoked"
    EXPIRED = "expired"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    RATE_LIMITED = "rate_limited"
    STORE_UNAVAILABLE = "store_unavailable"


@dataclass(frozen=True, slots=True)
class Denial:
    """A request that is not let through, and why.

    ``detail`` is written for the client and never contains the token. For
    ``UNKNOWN_KEY`` and ``WRONG_SECRET`` the detail is the same text, so that
    a client cannot tell which key_ids exist; the reason itself is for logs.
    """

    reason: DenialReason
    detail: str
    key_id: str | None = None
    missing_scopes: frozenset[str] = frozenset()
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())

    def __bool__(self) -> bool:
        return False


_INVALID_KEY_DETAIL: Final = "the API key is not valid"


class TokenMemo:
    """Remembers which token verified against which record, so a repeat costs no parse or hash.

    An entry maps the digest of a token (:func:`token_digest`; never the token)
    to the key_id, the token's environment, the exact record object it
    verified against, and the principal made from that record. It
    is only trusted while the store hands out that very object again: any
    change to the key (revoke, rotate, update, a new hash, a last-used write)
    replaces the record, so the next request takes the full path. A store
    that builds a new record per lookup (SQL without a cache) simply never
    hits. Bounded: the oldest entry goes first.
    """

    __slots__ = ("_entries", "get", "max_size")

    def __init__(self, max_size: object = 10_000) -> None:
        # ``object``, checked here: the compiled build would convert a bool by an ``int``.
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a whole number of at least 1, got {max_size!r}")
        self.max_size: int = max_size
        self._entries: dict[bytes, tuple[str, str | None, KeyRecord, Principal]] = {}
        #: The key_id, token environment, record and principal remembered for a
        #: digest, or None: the dict's own ``get``, as it runs on every request.
        self.get = self._entries.get

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"TokenMemo(size={len(self)}, max_size={self.max_size})"

    def remember(
        self, digest: bytes, key_id: str, env: str | None, record: KeyRecord, principal: Principal
    ) -> None:
        entries = self._entries
        if len(entries) >= self.max_size and digest not in entries:
            # Another thread may empty or change the dict meanwhile: then nothing to drop.
            with suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]
        entries[digest] = (key_id, env, record, principal)

    def clear(self) -> None:
        self._entries.clear()


def token_digest(token: str) -> bytes:
    """The memo key of a token: its BLAKE2s digest, so the memo never holds a secret.

    BLAKE2s is a collision-resistant 256-bit hash, like SHA-256, and a third
    cheaper on a token-sized input.
    """
    return blake2s(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """What the verification flow needs to know; built once by a key manager."""

    key_format: KeyFormat
    hasher: SecretHasher
    legacy_hashers: tuple[SecretHasher, ...]
    verified_cache: VerifiedSecretCache | None
    upgrade_hashes: bool
    dummy_hash: str = field(repr=False)
    now: Callable[[], Any]
    last_used: LastUsedRecorder | None = None
    token_memo: TokenMemo | None = None


def _hasher_for(settings: VerifySettings, stored: str) -> SecretHasher | None:
    if settings.hasher.identify(stored):
        return settings.hasher
    for hasher in settings.legacy_hashers:
        if hasher.identify(stored):
            return hasher
    return None


def _verify_secret(
    settings: VerifySettings, record: KeyRecord, secret: str
) -> tuple[bool, SecretHasher | None]:
    stored = record.secret_hash
    hasher = _hasher_for(settings, stored)
    if hasher is None:
        logger.warning(
            "key %s has a stored hash no configured hasher understands; "
            "add its hasher to legacy_hashers",
            record.key_id,
        )
        settings.hasher.verify(secret, settings.dummy_hash)
        return False, None
    cache = settings.verified_cache if hasher.slow else None
    if cache is not None and cache.check(record.key_id, stored, secret):
        return True, hasher
    try:
        ok = hasher.verify(secret, stored)
    except SecretTooLongError:
        return False, hasher
    if ok and cache is not None:
        cache.remember(record.key_id, stored, secret)
    return ok, hasher


def scope_denial(key_id: str, granted: frozenset[str], required: Collection[str]) -> Denial | None:
    """The 403 denial of a key granted ``granted`` for a request needing ``required``, or None.

    The one place a missing scope is decided: the verification flow and the
    framework integrations' per-route scopes both ask here.
    """
    missing = frozenset(required) - granted
    if not missing:
        return None
    return Denial(
        DenialReason.INSUFFICIENT_SCOPE,
        "the API key lacks the scope " + " ".join(sorted(missing)),
        key_id=key_id,
        missing_scopes=missing,
    )


def _state_denial(settings: VerifySettings, record: KeyRecord) -> Denial | None:
    """The denial of a revoked or expired key, or None when it is active."""
    status = record.status(settings.now)
    if status == "revoked":
        return Denial(DenialReason.REVOKED, "the API key has been revoked", key_id=record.key_id)
    if status == "expired":
        return Denial(DenialReason.EXPIRED, "the API key has expired", key_id=record.key_id)
    return None


def authenticate_flow(
    settings: VerifySettings,
    token: str,
    *,
    required_scopes: Collection[str] = (),
    environment: str | None = None,
) -> Flow[Principal | Denial]:
    """Decide whether ``token`` is a valid key with ``required_scopes``.

    The order is fixed and is part of keyguard's security: parse and checksum
    (no I/O) -> environment of the token (no I/O) -> one store lookup ->
    secret verification (an unknown key_id costs the same hashing as a wrong
    secret) -> state (environment of the record, revoked, expired; reported
    only once the secret verified) -> scopes. A stored hash in an old form is
    upgraded after a successful verification, and the use is recorded for the
    batched ``last_used_at`` write (whose failure never denies the request).
    """
    memo = settings.token_memo
    principal: Principal  # from the memo, or made once the secret verified
    digest = remembered = None
    if memo is not None:
        digest = token_digest(token)
        entry = memo.get(digest)
        if entry is not None:
            key_id, token_env, remembered, principal = entry
    if remembered is None:
        try:
            parsed: ParsedKey = parse_key(token, settings.key_format)
        except MalformedKeyError as exc:
            return Denial(DenialReason.MALFORMED_KEY, f"the API key is malformed: {exc}")
        key_id, token_env = parsed.key_id, parsed.environment
    if environment is not None and token_env not in (None, environment):
        return Denial(
            DenialReason.WRONG_ENVIRONMENT,
            f"this API accepts only {environment!r} keys",
            key_id=key_id,
        )
    try:
        record: KeyRecord | None = yield ("store", "get", (key_id,))
    except StorageError:
        logger.exception("key store lookup failed for key %s", key_id)
        return Denial(
            DenialReason.STORE_UNAVAILABLE,
            "the key store is unavailable; try again shortly",
            key_id=key_id,
            retry_after=1,
        )
    hasher: SecretHasher | None = settings.hasher
    if record is None or record is not remembered:
        # The full check: this token has not verified against this very record before.
        if remembered is not None:
            parsed = parse_key(token, settings.key_format)  # it parsed when remembered
        if record is None:
            settings.hasher.verify(parsed.secret, settings.dummy_hash)
            return Denial(DenialReason.UNKNOWN_KEY, _INVALID_KEY_DETAIL, key_id=key_id)
        ok, hasher = _verify_secret(settings, record, parsed.secret)
        if not ok:
            return Denial(DenialReason.WRONG_SECRET, _INVALID_KEY_DETAIL, key_id=key_id)
        principal = Principal.from_record(record)
        if memo is not None and digest is not None:
            memo.remember(digest, key_id, token_env, record, principal)
    wanted_env = environment if environment is not None else token_env
    if wanted_env is not None and record.environment != wanted_env:
        return Denial(
            DenialReason.WRONG_ENVIRONMENT,
            f"this API accepts only {wanted_env!r} keys",
            key_id=record.key_id,
        )
    # Neither revoked nor expiring: active, as status() says, without its call per request.
    if record.revoked_at is not None or record.expires_at is not None:
        refusal = _state_denial(settings, record)
        if refusal is not None:
            return refusal
    if required_scopes:
        refusal = scope_denial(record.key_id, record.scopes, required_scopes)
        if refusal is not None:
            return refusal
    if (
        record is not remembered
        and settings.upgrade_hashes
        and (hasher is not settings.hasher or settings.hasher.needs_rehash(record.secret_hash))
    ):
        try:
            yield (
                "store",
                "update",
                (record.key_id, KeyChanges(secret_hash=settings.hasher.hash(parsed.secret))),
            )
        except StorageError:
            logger.warning("could not upgrade the stored hash of key %s", record.key_id)
        else:
            if settings.verified_cache is not None:
                settings.verified_cache.discard(record.key_id)
    if settings.last_used is not None:
        batch = settings.last_used.note(record.key_id, settings.now)
        if batch:
            yield from touch_flow(settings.last_used, batch)
    return principal


def touch_flow(recorder: LastUsedRecorder, batch: Mapping[str, Any]) -> Flow[None]:
    """Write a batch of last-used times; on failure keep it for the next batch, never raise."""
    try:
        yield ("store", "touch", (batch,))
    except StorageError:
        recorder.restore(batch)
        logger.warning("could not record the last use of %d keys; will retry", len(batch))
