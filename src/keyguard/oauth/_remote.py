"""The keys of an external authorization server, from its JWKS URL: :class:`RemoteJWKS`.

The JWKS is fetched with :mod:`urllib` (no extra dependency), with a timeout
and a size bound, as a typed step of the verification flow (:class:`FetchJWKS`):
the WSGI middleware fetches on the request's thread, the ASGI middleware in a
worker thread (``asyncio.to_thread``), so the event loop never waits for it.

When it fetches:

- first use: the verification that needs a key fetches; until one fetch has
  succeeded, tokens are refused with 503 (fail closed), and a failed first
  fetch is retried at most once a second;
- an unknown ``kid`` (the server rotated its keys): a refetch, at most once
  per ``refetch_interval`` however many tokens with made-up kids arrive;
- keys older than ``max_age``: a refetch on the next use (same bound). A
  failed refetch keeps the last keys that were fetched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.request
from collections.abc import Mapping
from typing import Final, Literal
from urllib.parse import urlsplit

from .._clock import SYSTEM_CLOCK, Clock
from .._drive import Flow, Step
from .._errors import StorageError
from ._signing import ALGORITHMS, PublicKey

__all__ = ["FetchJWKS", "RemoteJWKS"]

logger: Final = logging.getLogger("keyguard")

_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_COLD_RETRY: Final = 1.0

Lookup = PublicKey | Literal["unknown", "unavailable"]


class FetchJWKS(Step[None]):
    """Fetch and install a remote JWKS: blocking I/O, so the async driver runs it in a thread."""

    __slots__ = ("remote",)

    def __init__(self, remote: RemoteJWKS) -> None:
        self.remote = remote

    def __repr__(self) -> str:
        return f"FetchJWKS({self.remote.url!r})"

    def run(self, io: object) -> None:
        self.remote.fetch()

    async def arun(self, io: object) -> None:
        await asyncio.to_thread(self.remote.fetch)


class RemoteJWKS:
    """The verifying keys of another issuer, fetched from its JWKS URL and cached.

    Args:
        url: The JWKS URL (the ``jwks_uri`` of the issuer's metadata); ``https``,
            or ``http`` for localhost only.
        timeout: Seconds a fetch may take (connect and read).
        max_age: Seconds the keys are used before they are fetched again.
        refetch_interval: The least seconds between two fetches once keys
            were fetched: the bound on fetches that tokens with unknown kids
            can cause.
        max_bytes: The largest JWKS document read.
        clock: Source of monotonic time.

    Raises:
        ValueError: An option is invalid.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        max_age: float = 3600.0,
        refetch_interval: float = 30.0,
        max_bytes: int = 1024 * 1024,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
        ):
            raise ValueError(f"the JWKS URL must be https (http only for localhost): {url!r}")
        for name, value in (("timeout", timeout), ("max_age", max_age)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if not refetch_interval >= 0:
            raise ValueError("refetch_interval must not be negative")
        self.url = url
        self.timeout = float(timeout)
        self.max_age = float(max_age)
        self.refetch_interval = float(refetch_interval)
        self.max_bytes = int(max_bytes)
        self._monotonic = clock.monotonic
        self._keys: dict[str, PublicKey] | None = None
        self._fetched_at = 0.0
        self._next_fetch = float("-inf")
        self._lock = threading.Lock()
        #: Fetches attempted, successful or not (for tests and monitoring).
        self.fetches = 0

    def __repr__(self) -> str:
        count = None if self._keys is None else len(self._keys)
        return f"RemoteJWKS({self.url!r}, keys={count})"

    @property
    def keys(self) -> Mapping[str, PublicKey]:
        """The keys fetched last, by kid (empty before the first fetch)."""
        return dict(self._keys or {})

    def _may_fetch(self) -> bool:
        """Claim the next fetch, if one is allowed now (one caller at a time wins)."""
        now = self._monotonic()
        with self._lock:
            if now < self._next_fetch:
                return False
            wait = _COLD_RETRY if self._keys is None else self.refetch_interval
            self._next_fetch = now + wait
            return True

    def lookup(self, kid: str | None) -> Flow[Lookup]:
        """The key named ``kid`` (a token without a kid: the only key, if there is one),
        fetching the JWKS when it is due; ``"unknown"`` or ``"unavailable"`` otherwise."""
        keys = self._keys
        stale = keys is None or self._monotonic() >= self._fetched_at + self.max_age
        if (stale or _find(keys, kid) is None) and self._may_fetch():
            try:
                yield from FetchJWKS(self)
            except StorageError as exc:
                logger.warning("could not fetch the JWKS at %s: %s", self.url, exc.__cause__ or exc)
            keys = self._keys
        if keys is None:
            return "unavailable"
        key = _find(keys, kid)
        return "unknown" if key is None else key

    def fetch(self) -> None:
        """Fetch the JWKS now and use its keys.

        Raises:
            StorageError: The fetch failed or the document has no usable key;
                the keys fetched before are kept.
        """
        self.fetches += 1
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310 (the scheme is checked)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                data = response.read(self.max_bytes + 1)
        except (OSError, ValueError) as exc:
            raise StorageError(f"fetching the JWKS failed: {type(exc).__name__}") from exc
        if len(data) > self.max_bytes:
            raise StorageError(f"the JWKS is larger than {self.max_bytes} bytes")
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise StorageError("the JWKS is not JSON") from exc
        found = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(found, list):
            raise StorageError("the JWKS has no 'keys' list")
        keys: dict[str, PublicKey] = {}
        for jwk in found:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if "alg" in jwk and jwk["alg"] not in ALGORITHMS:
                continue
            try:
                key = PublicKey.from_jwk(jwk)
            except (ValueError, TypeError):
                continue  # a key of a type keyguard does not use: others may still be
            keys[key.kid] = key
        if not keys:
            raise StorageError("the JWKS has no usable key (ES256, RS256 or EdDSA)")
        with self._lock:
            self._keys = keys
            self._fetched_at = now = self._monotonic()
            # A kid missing from what was just fetched is not there: no refetch for it yet.
            self._next_fetch = max(self._next_fetch, now + self.refetch_interval)


def _find(keys: dict[str, PublicKey] | None, kid: str | None) -> PublicKey | None:
    if not keys:
        return None
    if kid is None:
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid)
