"""Key lifecycle and verification for apps: :class:`KeyManager` and :class:`AsyncKeyManager`.

Both drive the same generator operations (see ``_drive``): the sync manager
over a :class:`~keyguard.stores.KeyStore`, the async one over an
:class:`~keyguard.stores.AsyncKeyStore`. Each starts one background writer
for ``last_used_at`` on its first successful authentication (a thread, or a
task on the event loop; see ``_last_used``), which ``close()`` / ``aclose()``
stops; slow hashes run in worker threads (``SlowHashWorkers``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ._clock import SYSTEM_CLOCK, Clock
from ._denials import Denial
from ._drive import Flow, drive_async, drive_sync, never_blocks
from ._errors import DuplicateKeyError, KeyNotFoundError
from ._hashing import HmacSecretHasher, SecretHasher, VerifiedSecretCache
from ._keys import DEFAULT_KEY_FORMAT, KeyFormat, generate_key, is_valid_key_id
from ._last_used import (
    DEFAULT_LAST_USED_INTERVAL,
    LastUsedRecorder,
    LastUsedTask,
    LastUsedThread,
    touch_flow,
)
from ._records import (
    CLIENT_HASH_MARK,
    UNSET,
    IssuedKey,
    KeyChanges,
    KeyKind,
    KeyRecord,
    Principal,
    _Unset,
)
from ._steps import AddKey, Backends, GetKey, ListKeys, RevokeKey, UpdateKey
from ._verify import (
    KeyVerifier,
    MemoizedKeyVerifier,
    SlowHashWorkers,
    TokenMemo,
    admit,
)
from .ratelimit._policy import Policy
from .stores._base import AsyncKeyStore, KeyStore

__all__ = ["AsyncKeyManager", "KeyManager"]

T = TypeVar("T")

#: The prefix of OAuth client secrets unless told otherwise.
DEFAULT_CLIENT_SECRET_PREFIX = "cs"  # noqa: S105 (a prefix, not a secret)
#: How long a rotated key keeps working unless told otherwise.
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
_CREATE_ATTEMPTS = 3


def _scopes(scopes: Iterable[str]) -> frozenset[str]:
    if isinstance(scopes, str):
        raise TypeError(f"scopes must be a collection of strings, not the string {scopes!r}")
    result = frozenset(scopes)
    for scope in result:
        if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
            raise ValueError(f"a scope must be a non-empty string without spaces, got {scope!r}")
    return result


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, not {type(value).__name__}")
    return value


def _metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``metadata``, refused unless every store can keep it exactly (as JSON)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    result = dict(metadata)
    if not all(isinstance(k, str) for k in result):
        raise ValueError("metadata keys must be strings (it is stored as a JSON object)")
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"metadata must be JSON-able (strings, numbers, booleans, None, lists and dicts): {exc}"
        ) from None
    return result


class _KeyOperations:
    """Configuration and the generator operations shared by both managers."""

    def __init__(
        self,
        *,
        key_format: KeyFormat,
        hasher: SecretHasher | None,
        legacy_hashers: Sequence[SecretHasher],
        verified_cache: VerifiedSecretCache | bool,
        upgrade_hashes: bool,
        environment: str | None,
        clock: Clock,
        last_used: float | LastUsedRecorder | None,
        token_memo: TokenMemo | bool,
        slow_hashes: SlowHashWorkers | None,
        client_secret_prefix: str,
    ) -> None:
        self.key_format = key_format
        if client_secret_prefix == key_format.prefix:
            raise ValueError(
                f"client_secret_prefix must differ from the key prefix {key_format.prefix!r}, "
                f"so that a client secret is never taken for an API key"
            )
        #: The format of OAuth client secrets: the key format with their own prefix.
        self.client_secret_format = KeyFormat(
            prefix=client_secret_prefix, environments=key_format.environments
        )
        self.hasher = hasher if hasher is not None else HmacSecretHasher()
        self.legacy_hashers = tuple(legacy_hashers)
        #: A slow hasher (bcrypt, argon2) is configured: its checks run in worker threads that
        #: an async caller awaits, so it never drives a flow synchronously then.
        slow = any(h.slow for h in (self.hasher, *self.legacy_hashers))
        if verified_cache is True:
            verified_cache = VerifiedSecretCache(clock=clock.monotonic) if slow else False
        self.verified_cache = (
            verified_cache if isinstance(verified_cache, VerifiedSecretCache) else None
        )
        if environment is not None and environment not in key_format.environments:
            raise ValueError(
                f"environment {environment!r} is not one of {key_format.environments!r}"
            )
        self.environment = environment
        self.clock = clock
        if isinstance(last_used, int | float) and not isinstance(last_used, bool):
            last_used = LastUsedRecorder(float(last_used), clock=clock.monotonic)
        if last_used is not None and not isinstance(last_used, LastUsedRecorder):
            raise TypeError("last_used must be seconds, a LastUsedRecorder, or None (off)")
        self.last_used = last_used
        self.slow_hashes = SlowHashWorkers() if slow_hashes is None else slow_hashes
        verifier = KeyVerifier(
            key_format=key_format,
            hasher=self.hasher,
            legacy_hashers=self.legacy_hashers,
            verified_cache=self.verified_cache,
            upgrade_hashes=upgrade_hashes,
            environment=environment,
            slow_hashes=self.slow_hashes,
            dummy_hash=self.hasher.hash(secrets.token_urlsafe(24)),
            client_secret_prefix=client_secret_prefix,
        )
        memo = (
            token_memo if isinstance(token_memo, TokenMemo) else TokenMemo() if token_memo else None
        )
        #: Verifies API keys for :meth:`authenticate` and the middlewares.
        self.verifier: KeyVerifier | MemoizedKeyVerifier = (
            verifier if memo is None else MemoizedKeyVerifier(verifier, memo)
        )

    @property
    def token_memo(self) -> TokenMemo | None:
        """The memo of verified tokens, or None when it is off."""
        verifier = self.verifier
        return verifier.memo if isinstance(verifier, MemoizedKeyVerifier) else None

    def _forget(self, key_id: str) -> None:
        if self.verified_cache is not None:
            self.verified_cache.discard(key_id)

    def _authenticate(
        self, token: str, required_scopes: Collection[str]
    ) -> Flow[Principal | Denial]:
        if not isinstance(token, str):  # a caller's mistake, not a client's: say so
            raise TypeError(f"the token must be a str, got {type(token).__name__}")
        return self._authenticate_flow(token, required_scopes)

    def _authenticate_flow(
        self, token: str, required_scopes: Collection[str]
    ) -> Flow[Principal | Denial]:
        verified = yield from self.verifier.verify(token)
        if isinstance(verified, Denial):
            return verified
        return admit(verified, required_scopes, self.clock.now, self.last_used)

    def _create(
        self,
        owner: str,
        name: str,
        environment: str | None,
        scopes: Iterable[str],
        expires_at: datetime | None,
        expires_in: timedelta | None,
        metadata: Mapping[str, Any] | None,
        rate_limit: Policy | None,
        kind: KeyKind = "api_key",
    ) -> Flow[IssuedKey]:
        if not isinstance(owner, str) or not owner:
            raise ValueError("owner must be a non-empty string")
        _text("name", name)
        if expires_at is not None and expires_in is not None:
            raise ValueError("give expires_at or expires_in, not both")
        now = self.clock.now()
        if expires_in is not None:
            if expires_in <= timedelta(0):
                raise ValueError("expires_in must be positive")
            expires_at = now + expires_in
        if expires_at is not None and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware (use datetime.UTC)")
        granted = _scopes(scopes)
        extra = _metadata(metadata)
        client = kind == "oauth_client"
        key_format = self.client_secret_format if client else self.key_format
        for attempt in range(_CREATE_ATTEMPTS):
            key = generate_key(key_format, environment)
            secret_hash = self.hasher.hash(key.secret)
            record = KeyRecord(
                key_id=key.key_id,
                owner=owner,
                name=name,
                environment=key.environment,
                secret_hash=CLIENT_HASH_MARK + secret_hash if client else secret_hash,
                scopes=granted,
                created_at=now,
                expires_at=expires_at,
                metadata=extra,
                rate_limit=rate_limit,
            )
            try:
                yield from AddKey(record)
            except DuplicateKeyError:
                # 62**12 ids make this practically impossible; retrying keeps it harmless.
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                continue
            return IssuedKey(token=key.token, record=record)
        raise AssertionError("unreachable")  # pragma: no cover

    def _flush_last_used(self) -> Flow[None]:
        if self.last_used is not None:
            batch = self.last_used.flush()
            if batch:
                yield from touch_flow(self.last_used, batch)

    def _get(self, key_id: str) -> Flow[KeyRecord]:
        record = yield from GetKey(key_id)
        if record is None:
            raise KeyNotFoundError(f"no key with key_id {key_id!r}")
        return record

    def _list(self, owner: str | None) -> Flow[Sequence[KeyRecord]]:
        return (yield from ListKeys(owner))

    def _revoke(self, key_id: str) -> Flow[KeyRecord]:
        record = yield from RevokeKey(key_id, self.clock.now())
        self._forget(key_id)
        if record is None:
            raise KeyNotFoundError(f"no key with key_id {key_id!r}")
        return record

    def _update(self, key_id: str, changes: KeyChanges) -> Flow[KeyRecord]:
        record = yield from UpdateKey(key_id, changes)
        self._forget(key_id)
        if record is None:
            raise KeyNotFoundError(f"no key with key_id {key_id!r}")
        return record

    def _update_fields(
        self,
        key_id: str,
        name: str | _Unset,
        scopes: Iterable[str] | _Unset,
        expires_at: datetime | _Unset | None,
        metadata: Mapping[str, Any] | _Unset,
        rate_limit: Policy | _Unset | None,
    ) -> Flow[KeyRecord]:
        if isinstance(expires_at, datetime) and expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware (use datetime.UTC)")
        changes = KeyChanges(
            name=name if isinstance(name, _Unset) else _text("name", name),
            scopes=scopes if isinstance(scopes, _Unset) else _scopes(scopes),
            expires_at=expires_at,
            metadata=metadata if isinstance(metadata, _Unset) else _metadata(metadata),
            rate_limit=rate_limit,
        )
        return (yield from self._update(key_id, changes))

    def _rotate(self, key_id: str, grace: timedelta) -> Flow[IssuedKey]:
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        old = yield from self._get(key_id)
        now = self.clock.now()
        if old.status(now) != "active":
            raise ValueError(f"key {key_id!r} is {old.status(now)}; only an active key rotates")
        issued = yield from self._create(
            old.owner,
            old.name,
            old.environment if old.environment in self.key_format.environments else None,
            old.scopes,
            old.expires_at,
            None,
            old.metadata,
            old.rate_limit,
            old.kind,
        )
        ends = now + grace
        if old.expires_at is not None:
            ends = min(ends, old.expires_at)
        stored = yield from self._update(
            key_id, KeyChanges(expires_at=ends, replaced_by=issued.record.key_id)
        )
        if stored.revoked_at is not None:
            # Revoked meanwhile, or elsewhere while a lookup cache still held it as active
            # (a write returns the record as stored): its replacement must not outlive it.
            yield from self._revoke(issued.record.key_id)
            raise ValueError(f"key {key_id!r} is revoked; only an active key rotates")
        return issued

    def _import(
        self,
        key_id: str,
        secret_hash: str,
        owner: str,
        name: str,
        environment: str,
        scopes: Iterable[str],
        created_at: datetime | None,
        expires_at: datetime | None,
        metadata: Mapping[str, Any] | None,
        rate_limit: Policy | None,
    ) -> Flow[KeyRecord]:
        if not any(h.identify(secret_hash) for h in (self.hasher, *self.legacy_hashers)):
            raise ValueError(
                f"no configured hasher understands the stored hash of key {key_id!r}; "
                f"pass legacy_hashers=[PasslibHasher()] for bcrypt or argon2 hashes"
            )
        if not is_valid_key_id(key_id):
            raise ValueError(
                "key_id must be a keyguard key id or a split-key identifier: 1 to 64 "
                "characters of A-Z, a-z, 0-9, '_' and '-'"
            )
        if not isinstance(owner, str) or not owner:
            raise ValueError("owner must be a non-empty string")
        _text("name", name)
        if not isinstance(environment, str) or not environment:
            raise ValueError("environment must be a non-empty string, such as 'live'")
        record = KeyRecord(
            key_id=key_id,
            owner=owner,
            name=name,
            environment=environment,
            secret_hash=secret_hash,
            scopes=_scopes(scopes),
            created_at=created_at or self.clock.now(),
            expires_at=expires_at,
            metadata=_metadata(metadata),
            rate_limit=rate_limit,
        )
        yield from AddKey(record)
        return record


class KeyManager(_KeyOperations):
    """Create, verify, rotate and revoke API keys over a synchronous store.

    Args:
        store: Where records live.
        key_format: Token prefix and environments.
        hasher: Hashes new secrets; default :class:`HmacSecretHasher` (SHA-256,
            or HMAC-SHA256 when you give it a pepper).
        legacy_hashers: Also accepted for stored hashes of imported keys,
            such as :class:`PasslibHasher` for bcrypt.
        verified_cache: Remembers slow-hash verifications. ``True`` (default)
            makes one when a slow hasher is configured; ``False`` turns it off;
            or pass your own. With it off *and* ``token_memo=False`` every
            request pays the slow hash; the token memo alone still spares a
            repeated token while the store returns the same record.
        upgrade_hashes: Re-hash a key with ``hasher`` after its first
            successful verification with a legacy or outdated hash.
        environment: When set, :meth:`authenticate` refuses keys of any other
            environment before looking them up.
        clock: Source of time (``keyguard.testing.FakeClock`` in tests).
        last_used: How ``last_used_at`` is kept: seconds between batched
            writes (default 60; each key written at most once per interval),
            a :class:`LastUsedRecorder` of this manager's own, or ``None`` to
            not keep it. The writes are made by a daemon thread
            (``keyguard-last-used``), started by the first successful
            authentication and stopped by :meth:`close`: no request waits
            for one.
        token_memo: Remember (by a BLAKE2s digest, never the token itself) which token
            verified against which record object, so that a repeat of the same
            token costs no parse and no hash while the store returns the same
            record (the memory store, or a :class:`CachedKeyStore`). Any change
            to the key gives a new record and so a full check. ``False`` turns
            it off, and with it the authorization server's memo of client
            secrets, which keeps the same rules.
        slow_hashes: Where slow hashes (the bcrypt or argon2 hashes of
            imported keys) are verified: at most two at once by default, and
            under :class:`AsyncKeyManager` in worker threads, so the event
            loop never waits for one (see :class:`SlowHashWorkers`).
        client_secret_prefix: The prefix of OAuth client secrets (default
            ``"cs"``): the key format's grammar and checksum with their own
            prefix, so that secret scanners can tell a leaked client secret
            from a leaked key. It must differ from the key prefix.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        key_format: KeyFormat = DEFAULT_KEY_FORMAT,
        hasher: SecretHasher | None = None,
        legacy_hashers: Sequence[SecretHasher] = (),
        verified_cache: VerifiedSecretCache | bool = True,
        upgrade_hashes: bool = True,
        environment: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        last_used: float | LastUsedRecorder | None = DEFAULT_LAST_USED_INTERVAL,
        token_memo: TokenMemo | bool = True,
        slow_hashes: SlowHashWorkers | None = None,
        client_secret_prefix: str = DEFAULT_CLIENT_SECRET_PREFIX,
    ) -> None:
        super().__init__(
            key_format=key_format,
            hasher=hasher,
            legacy_hashers=legacy_hashers,
            verified_cache=verified_cache,
            upgrade_hashes=upgrade_hashes,
            environment=environment,
            clock=clock,
            last_used=last_used,
            token_memo=token_memo,
            slow_hashes=slow_hashes,
            client_secret_prefix=client_secret_prefix,
        )
        self.store = store
        self._io = Backends(store)
        self._last_used_writer: LastUsedThread | None = None
        if self.last_used is not None:
            self._last_used_writer = LastUsedThread(self.last_used, self._write_last_used)
            self.last_used.attach(self._last_used_writer.wake)

    def _write_last_used(self, batch: dict[str, datetime]) -> None:
        if self.last_used is not None:
            drive_sync(touch_flow(self.last_used, batch), self._io)

    def __repr__(self) -> str:
        return f"KeyManager(store={self.store!r}, key_format={self.key_format!r})"

    def authenticate(
        self, token: str, *, required_scopes: Collection[str] = ()
    ) -> Principal | Denial:
        """Verify ``token``; return the :class:`Principal` or a :class:`Denial` saying why not.

        Never raises for a bad token or a failing store: those are denials. A
        token that is not a ``str`` at all is a caller's mistake: ``TypeError``.
        """
        return drive_sync(self._authenticate(token, required_scopes), self._io)

    def create(
        self,
        owner: str,
        name: str = "",
        *,
        environment: str | None = None,
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: Policy | None = None,
    ) -> IssuedKey:
        """Create a key. The token in the result is the only copy: show it once.

        ``metadata`` is any JSON object (string keys; strings, numbers,
        booleans, ``None``, lists and dicts), so that every store keeps it exactly.

        Raises:
            ValueError: An argument is invalid.
            TypeError: ``name`` is not a string, or ``metadata`` not a mapping.
            StorageError: The store failed.
        """
        return drive_sync(
            self._create(
                owner, name, environment, scopes, expires_at, expires_in, metadata, rate_limit
            ),
            self._io,
        )

    def create_client(
        self,
        owner: str,
        name: str = "",
        *,
        environment: str | None = None,
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: Policy | None = None,
    ) -> IssuedKey:
        """Create an OAuth client; its secret (``issued.token``) is shown once.

        The client is a record like a key (``issued.key_id`` is its
        ``client_id``) and is listed, updated, rotated and revoked like one.
        Its secret is in the key format with the client-secret prefix
        (``cs_live_...``); it is exchanged for access tokens at the token
        endpoint (:mod:`keyguard.oauth`) and refused by the API itself.
        ``rate_limit`` applies to the client's API requests made with tokens.

        Raises:
            ValueError: An argument is invalid.
            StorageError: The store failed.
        """
        return drive_sync(
            self._create(
                owner,
                name,
                environment,
                scopes,
                expires_at,
                expires_in,
                metadata,
                rate_limit,
                "oauth_client",
            ),
            self._io,
        )

    def get(self, key_id: str) -> KeyRecord:
        """Return the record. Raises :class:`KeyNotFoundError`."""
        return drive_sync(self._get(key_id), self._io)

    def list(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """All keys, or those of ``owner``."""
        return drive_sync(self._list(owner), self._io)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke at once; revoking again changes nothing. Raises :class:`KeyNotFoundError`."""
        return drive_sync(self._revoke(key_id), self._io)

    def rotate(self, key_id: str, *, grace: timedelta = DEFAULT_ROTATION_GRACE) -> IssuedKey:
        """Issue a replacement; the old token keeps working for ``grace``, then expires."""
        return drive_sync(self._rotate(key_id, grace), self._io)

    def update(
        self,
        key_id: str,
        *,
        name: str | _Unset = UNSET,
        scopes: Iterable[str] | _Unset = UNSET,
        expires_at: datetime | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset = UNSET,
        rate_limit: Policy | _Unset | None = UNSET,
    ) -> KeyRecord:
        """Change the given fields in one write. Raises :class:`KeyNotFoundError`."""
        return drive_sync(
            self._update_fields(key_id, name, scopes, expires_at, metadata, rate_limit),
            self._io,
        )

    def import_key(
        self,
        key_id: str,
        secret_hash: str,
        *,
        owner: str,
        name: str = "",
        environment: str = "live",
        scopes: Iterable[str] = (),
        created_at: datetime | None = None,
        expires_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: Policy | None = None,
    ) -> KeyRecord:
        """Store a key made elsewhere, by its identifier and existing hash (bcrypt, ...).

        Raises:
            ValueError: No configured hasher understands ``secret_hash``, or the
                identifier is not valid.
            DuplicateKeyError: The key_id exists.
        """
        return drive_sync(
            self._import(
                key_id,
                secret_hash,
                owner,
                name,
                environment,
                scopes,
                created_at,
                expires_at,
                metadata,
                rate_limit,
            ),
            self._io,
        )

    def flush_last_used(self) -> None:
        """Write the pending last-used times now, on this thread (``close`` does it too)."""
        drive_sync(self._flush_last_used(), self._io)

    def close(self) -> None:
        """Stop the last-used writer, write what is still pending, then close the store.

        Call it on shutdown (an atexit handler in a WSGI app): the times noted
        since the last batch are lost otherwise.
        """
        if self._last_used_writer is not None:
            self._last_used_writer.close()
        self.flush_last_used()
        self.slow_hashes.close()
        self.store.close()


class AsyncKeyManager(_KeyOperations):
    """:class:`KeyManager` for async apps, over an :class:`~keyguard.stores.AsyncKeyStore`.

    Takes the same options and runs the very same operations. Its last-used
    times are written by a task (``keyguard-last-used``) on the event loop of
    the first successful authentication, in chunks between which the loop
    serves requests; :meth:`aclose` stops it. Used from several event loops
    one after the other, the task follows: when its loop ends, the next use
    starts it on the current one (see docs/stores.md).
    """

    def __init__(
        self,
        store: AsyncKeyStore,
        *,
        key_format: KeyFormat = DEFAULT_KEY_FORMAT,
        hasher: SecretHasher | None = None,
        legacy_hashers: Sequence[SecretHasher] = (),
        verified_cache: VerifiedSecretCache | bool = True,
        upgrade_hashes: bool = True,
        environment: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        last_used: float | LastUsedRecorder | None = DEFAULT_LAST_USED_INTERVAL,
        token_memo: TokenMemo | bool = True,
        slow_hashes: SlowHashWorkers | None = None,
        client_secret_prefix: str = DEFAULT_CLIENT_SECRET_PREFIX,
    ) -> None:
        super().__init__(
            key_format=key_format,
            hasher=hasher,
            legacy_hashers=legacy_hashers,
            verified_cache=verified_cache,
            upgrade_hashes=upgrade_hashes,
            environment=environment,
            clock=clock,
            last_used=last_used,
            token_memo=token_memo,
            slow_hashes=slow_hashes,
            client_secret_prefix=client_secret_prefix,
        )
        self.store = store
        self._io = Backends(store)
        #: An in-memory store and no slow hash: flows run synchronously, sparing a coroutine
        #: per step.
        self._never_blocks = never_blocks(store) and not self.verifier.may_block
        self._last_used_writer: LastUsedTask | None = None
        if self.last_used is not None:
            self._last_used_writer = LastUsedTask(self.last_used, self._write_last_used)
            self.last_used.attach(self._last_used_writer.wake)

    async def _write_last_used(self, batch: dict[str, datetime]) -> None:
        if self.last_used is not None:
            await self._run(touch_flow(self.last_used, batch))

    async def _run(self, flow: Flow[T]) -> T:
        if self._never_blocks:
            return drive_sync(flow, self._io)
        return await drive_async(flow, self._io)

    def __repr__(self) -> str:
        return f"AsyncKeyManager(store={self.store!r}, key_format={self.key_format!r})"

    async def authenticate(
        self, token: str, *, required_scopes: Collection[str] = ()
    ) -> Principal | Denial:
        """See :meth:`KeyManager.authenticate`."""
        return await self._run(self._authenticate(token, required_scopes))

    async def create(
        self,
        owner: str,
        name: str = "",
        *,
        environment: str | None = None,
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: Policy | None = None,
    ) -> IssuedKey:
        """See :meth:`KeyManager.create`."""
        return await self._run(
            self._create(
                owner, name, environment, scopes, expires_at, expires_in, metadata, rate_limit
            )
        )

    async def create_client(
        self,
        owner: str,
        name: str = "",
        *,
        environment: str | None = None,
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        expires_in: timedelta | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: Policy | None = None,
    ) -> IssuedKey:
        """See :meth:`KeyManager.create_client`."""
        return await self._run(
            self._create(
                owner,
                name,
                environment,
                scopes,
                expires_at,
                expires_in,
                metadata,
                rate_limit,
                "oauth_client",
            )
        )

    async def get(self, key_id: str) -> KeyRecord:
        """See :meth:`KeyManager.get`."""
        return await self._run(self._get(key_id))

    async def list(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """See :meth:`KeyManager.list`."""
        return await self._run(self._list(owner))

    async def revoke(self, key_id: str) -> KeyRecord:
        """See :meth:`KeyManager.revoke`."""
        return await self._run(self._revoke(key_id))

    async def rotate(self, key_id: str, *, grace: timedelta = DEFAULT_ROTATION_GRACE) -> IssuedKey:
        """See :meth:`KeyManager.rotate`."""
        return await self._run(self._rotate(key_id, grace))

    async def update(
        self,
        key_id: str,
        *,
        name: str | _Unset = UNSET,
        scopes: Iterable[str] | _Unset = UNSET,
        expires_at: datetime | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset = UNSET,
        rate_limit: Policy | _Unset | None = UNSET,
    ) -> KeyRecord:
        """See :meth:`KeyManager.update`."""
        return await self._run(
            self._update_fields(key_id, name, scopes, expires_at, metadata, rate_limit)
        )

    async def import_key(
        self,
        key_id: str,
        secret_hash: str,
        *,
        owner: str,
        name: str = "",
        environment: str = "live",
        scopes: Iterable[str] = (),
        created_at: datetime | None = None,
        expires_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
        rate_limit: Policy | None = None,
    ) -> KeyRecord:
        """See :meth:`KeyManager.import_key`."""
        return await self._run(
            self._import(
                key_id,
                secret_hash,
                owner,
                name,
                environment,
                scopes,
                created_at,
                expires_at,
                metadata,
                rate_limit,
            )
        )

    async def flush_last_used(self) -> None:
        """See :meth:`KeyManager.flush_last_used`."""
        await self._run(self._flush_last_used())

    async def aclose(self) -> None:
        """Stop the last-used task, write what is still pending, then close the store.

        Call it on shutdown (an ASGI app's lifespan): the times noted since
        the last batch are lost otherwise.
        """
        if self._last_used_writer is not None:
            await self._last_used_writer.aclose()
        await self.flush_last_used()
        self.slow_hashes.close()
        await self.store.aclose()
