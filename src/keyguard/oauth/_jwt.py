"""Verifying JWT access tokens (RFC 9068 §4, RFC 8725) for the middlewares: :class:`JWTVerifier`.

The verifier is a :class:`~keyguard._pipeline.ShapedVerifier`: the pipeline
gives it every bearer token shaped like a JWT (three dot-separated parts) and
the key verifier everything else. What it proves ends, like a key, in a
:class:`~keyguard.Principal` (``auth_method="oauth"``, ``key_id`` = the
client_id), so scopes, rate limits, the failure budget and the error
responses are the same for both.

The checks, in order (every failure is 401 ``invalid_token`` with a detail
saying which, never an exception)::

    size and shape -> header: alg on the allow-list (never "none", never an
    HMAC), typ "at+jwt" (or "application/at+jwt"), no "crit" -> the key named
    by kid, of that very algorithm -> the signature (PyJWT) -> iss exact, aud
    holding ours, exp / nbf / iat within the leeway, sub, client_id and jti
    present -> for tokens this library issued: the client's record, through
    the key store (revoked, expired, or gone: refused)

A token that verified is remembered until it expires (:class:`_VerifiedTokens`:
by a digest of its signature, beside the header and claims it signed), so its
repeats cost no signature check; for
tokens of local clients the record is still looked up on every request (free
when warm with a memory store or a :class:`~keyguard.stores.CachedKeyStore`),
so a revocation reaches the token within the store's own revocation bound.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Collection
from typing import Any, Final

from .._clock import SYSTEM_CLOCK, Clock
from .._denials import Denial, DenialReason
from .._drive import Flow
from .._errors import StorageError
from .._memo import BoundedMemo
from .._records import CLIENT_HASH_MARK, KeyRecord, Principal
from .._steps import GetKey
from .._verify import Verified, store_unavailable
from ._remote import RemoteJWKS
from ._signing import ALGORITHMS, KeySet, PublicKey

__all__ = ["DEFAULT_LEEWAY", "JWTVerifier"]

logger: Final = logging.getLogger("keyguard")

#: Seconds of clock skew tolerated on exp, nbf and iat.
DEFAULT_LEEWAY: Final = 30.0
_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
_MAX_TOKEN: Final = 8 * 1024


def _digest(signature: str) -> bytes:
    """The memo key of a token: the BLAKE2b digest of its signature part.

    The memo keeps the digest, never the signature, so it never holds a token;
    it keeps the signed header and claims beside it (no token without the
    signature), and a repeat must bring those very parts. Hashing the signature
    alone (86 characters for ES256) costs a fraction of hashing a whole token
    of several hundred; ``hashlib.sha256`` would cost more than either, as each
    call goes through OpenSSL's digest set-up.
    """
    return hashlib.blake2b(signature.encode("utf-8", "surrogatepass")).digest()


def _invalid(detail: str, key_id: str | None = None) -> Denial:
    return Denial(DenialReason.INVALID_TOKEN, f"the access token is not valid: {detail}", key_id)


def _b64(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): anything else is a ValueError.

    ``b64decode`` maps the alternative characters onto ``+`` and ``/`` before it
    checks, so those (and padding) are refused first, and the last character's
    unused bits must be zero: otherwise one token would have several spellings.
    """
    if len(segment) % 4 == 1 or "+" in segment or "/" in segment or "=" in segment:
        raise ValueError("not base64url")
    decoded = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
    # The last character may carry unused bits: only the canonical spelling is the token.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("not canonical base64url")
    return decoded


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """An attacker's header value, made short enough for a detail."""
    return repr(value)[:40]


class _VerifiedTokens(BoundedMemo[bytes, tuple[str, Verified, float, frozenset[str]]]):
    """Tokens that verified, by the digest of their signature, until they expire.

    An entry is (the signed header and claims, what was proven, the monotonic
    deadline, the token's scopes).
    """

    __slots__ = ()

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size, argument="memo_size")

    def remember(
        self,
        digest: bytes,
        signed: str,
        verified: Verified,
        deadline: float,
        scopes: frozenset[str],
    ) -> None:
        self.put(digest, (signed, verified, deadline, scopes))


class JWTVerifier:
    """Verifies RFC 9068 JWT access tokens, for :class:`~keyguard.KeyguardMiddleware` and
    :class:`~keyguard.KeyguardWSGIMiddleware` (``jwt_verifier=``).

    Args:
        issuer: The ``iss`` tokens must carry, compared exactly.
        audience: The resource indicator (``aud``) tokens must be for.
        keys: Where verifying keys come from: the local :class:`KeySet` of
            this library's :class:`AuthorizationServer`, or a
            :class:`RemoteJWKS` of an external authorization server.
        algorithms: The algorithms accepted (default ES256, RS256, EdDSA);
            ``none`` and the HMAC algorithms are never accepted.
        leeway: Seconds of clock skew tolerated on ``exp``, ``nbf``, ``iat``.
        clock: Source of time (``keyguard.testing.FakeClock`` in tests).
        check_clients: Look each token's client up in the key store and
            refuse the tokens of revoked, expired or deleted clients. Default:
            on for a local ``KeySet`` (tokens this library issued), off for a
            ``RemoteJWKS`` (the external server's clients are not in the store).
        owner_claim: The claim that names the principal's owner; tokens
            without it get their ``sub``. Ignored when ``check_clients`` is
            on: the owner is then the client's.
        memo_size: Tokens remembered after a successful check.

    Raises:
        ValueError: An option is invalid.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySet | RemoteJWKS,
        algorithms: Collection[str] = ALGORITHMS,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock = SYSTEM_CLOCK,
        check_clients: bool | None = None,
        owner_claim: str = "owner",
        memo_size: int = 10_000,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be a non-empty string")
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be a non-empty string")
        if not isinstance(keys, KeySet | RemoteJWKS):
            raise TypeError(f"keys must be a KeySet or a RemoteJWKS, not {type(keys).__name__}")
        allowed = frozenset(algorithms)
        if isinstance(algorithms, str) or not allowed or not allowed <= set(ALGORITHMS):
            raise ValueError(
                f"algorithms must be some of {ALGORITHMS} (never 'none' or an HMAC), "
                f"got {algorithms!r}"
            )
        if not _number(leeway) or not 0 <= leeway <= 300:
            raise ValueError("leeway must be from 0 to 300 seconds")
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.algorithms = allowed
        self.leeway = float(leeway)
        self.clock = clock
        self.check_clients = isinstance(keys, KeySet) if check_clients is None else check_clients
        self.owner_claim = owner_claim
        self.memo = _VerifiedTokens(memo_size)
        self._monotonic = clock.monotonic

    def __repr__(self) -> str:
        return (
            f"JWTVerifier(issuer={self.issuer!r}, audience={self.audience!r}, keys={self.keys!r})"
        )

    @property
    def may_block(self) -> bool:
        """True for a remote key set, whose fetches are I/O; local keys never wait."""
        return not isinstance(self.keys, KeySet)

    def claims(self, token: str) -> bool:
        """Whether ``token`` is shaped like a JWT, not a key: it has a dot (no key has one,
        and a JWT is dot-separated parts; :meth:`verify` refuses any other number than
        three). No I/O, and no scan past the first dot.
        """
        return "." in token

    def verify(self, token: str) -> Flow[Verified | Denial]:
        """Verify ``token``: from the memo when it verified before, else in full."""
        signed, _, signature = token.rpartition(".")
        digest = _digest(signature)
        entry = self.memo.get(digest)
        # The same signature over other header or claims is another token: verified in full.
        if entry is not None and entry[0] == signed:
            _, verified, deadline, scopes = entry
            if self._monotonic() < deadline:
                if not self.check_clients:
                    return verified
                # The client's record on every request: a revocation reaches the token.
                client_id = verified.principal.key_id
                try:
                    record = yield from GetKey(client_id)
                except StorageError as exc:
                    return store_unavailable(client_id, exc)
                if record is verified.record:
                    return verified
                result = _client_principal(client_id, scopes, record, self.clock)
                if isinstance(result, Verified):
                    self.memo.remember(digest, signed, result, deadline, scopes)
                return result
            self.memo.forget(digest)
        return (yield from self._verify(token, digest, signed))

    def _verify(self, token: str, digest: bytes, signed: str) -> Flow[Verified | Denial]:
        if len(token) > _MAX_TOKEN:
            return _invalid(f"it is longer than {_MAX_TOKEN} characters")
        parts = token.split(".")
        if len(parts) != 3 or not token.isascii():
            return _invalid("it is not a compact JWS (three base64url parts)")
        head, body, signature = parts
        try:
            header = json.loads(_b64(head))
        except (ValueError, binascii.Error):
            return _invalid("its header is not base64url-encoded JSON")
        if not isinstance(header, dict):
            return _invalid("its header is not a JSON object")
        alg = header.get("alg")
        if alg not in self.algorithms:
            return _invalid(f"the algorithm {_shown(alg)} is not accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _TYPES:
            return _invalid("it is not an access token (its typ must be at+jwt, RFC 9068)")
        if "crit" in header:
            return _invalid("it has critical header parameters this server does not understand")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return _invalid("its kid is not a string")
        key = yield from self._key(kid)
        if isinstance(key, Denial):
            return key
        if key.algorithm != alg:
            return _invalid("its algorithm is not the one of its key")
        try:
            authentic = key.verify(signed.encode("ascii"), _b64(signature))
        except (ValueError, binascii.Error):
            authentic = False
        if not authentic:
            return _invalid("its signature does not verify")
        try:
            claims = json.loads(_b64(body))
        except (ValueError, binascii.Error):
            return _invalid("its payload is not base64url-encoded JSON")
        if not isinstance(claims, dict):
            return _invalid("its payload is not a JSON object")
        checked = self._check_claims(claims)
        if isinstance(checked, Denial):
            return checked
        client_id, scopes, expires = checked
        now = self.clock.now().timestamp()
        deadline = self.clock.monotonic() + (expires + self.leeway - now)
        if self.check_clients:
            result = yield from self._with_client(client_id, scopes)
        else:
            owner = claims.get(self.owner_claim)
            principal = Principal(
                key_id=client_id,
                owner=owner if isinstance(owner, str) and owner else claims["sub"],
                scopes=scopes,
                auth_method="oauth",
            )
            result = Verified(principal, None)
        if isinstance(result, Verified):
            self.memo.remember(digest, signed, result, deadline, scopes)
        return result

    def _key(self, kid: str | None) -> Flow[PublicKey | Denial]:
        keys = self.keys
        if isinstance(keys, KeySet):
            key = keys.get(kid) if kid is not None else _only(keys.keys)
        else:
            found = yield from keys.lookup(kid)
            if found == "unavailable":
                return Denial(
                    DenialReason.STORE_UNAVAILABLE,
                    "the token signing keys are unavailable; try again shortly",
                    retry_after=1,
                )
            key = found if isinstance(found, PublicKey) else None
        if key is None:
            return _invalid("it is signed by an unknown key (kid)")
        return key

    def _check_claims(self, claims: dict[str, Any]) -> tuple[str, frozenset[str], float] | Denial:
        now = self.clock.now().timestamp()
        leeway = self.leeway
        if claims.get("iss") != self.issuer:
            return _invalid("it was issued by another issuer")
        aud = claims.get("aud")
        if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
            return _invalid("it is for another audience")
        for name in ("exp", "iat"):
            if not _number(claims.get(name)):
                return _invalid(f"its {name} claim is missing or not a number")
        exp, iat, nbf = claims["exp"], claims["iat"], claims.get("nbf")
        sub, client_id, jti = claims.get("sub"), claims.get("client_id"), claims.get("jti")
        for name, value in (("sub", sub), ("client_id", client_id), ("jti", jti)):
            if not isinstance(value, str) or not value:
                return _invalid(f"its {name} claim is missing or not a string")
        if now >= exp + leeway:
            return Denial(
                DenialReason.EXPIRED, "the access token has expired; get a new one", client_id
            )
        if nbf is not None and (not _number(nbf) or nbf > now + leeway):
            return _invalid("it is not valid yet (nbf)", client_id)
        if iat > now + leeway:
            return _invalid("it was issued in the future (iat)", client_id)
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            return _invalid("its scope claim is not a string", client_id)
        return str(client_id), frozenset(part for part in scope.split(" ") if part), float(exp)

    def _with_client(self, client_id: str, scopes: frozenset[str]) -> Flow[Verified | Denial]:
        """The principal of a token of a local client, from the client's current record."""
        try:
            record = yield from GetKey(client_id)
        except StorageError as exc:
            return store_unavailable(client_id, exc)
        return _client_principal(client_id, scopes, record, self.clock)


def _only(keys: Any) -> PublicKey | None:
    """The key of a token without a kid: only when there is exactly one."""
    return keys[0] if len(keys) == 1 else None


def _client_principal(
    client_id: str, scopes: frozenset[str], record: KeyRecord | None, clock: Clock
) -> Verified | Denial:
    if record is None:
        return Denial(
            DenialReason.REVOKED,
            "the OAuth client of this access token no longer exists",
            client_id,
        )
    if not record.secret_hash.startswith(CLIENT_HASH_MARK):
        return _invalid("its subject is not an OAuth client", client_id)
    status = record.status(clock.now)  # reads the clock only for a client with an expiry
    if status != "active":
        reason = DenialReason.REVOKED if status == "revoked" else DenialReason.EXPIRED
        state = "been revoked" if status == "revoked" else "expired"
        return Denial(reason, f"the OAuth client of this access token has {state}", client_id)
    principal = Principal(
        key_id=client_id,
        owner=record.owner,
        # A scope taken from the client since the token was issued is gone at once.
        scopes=scopes & record.scopes,
        environment=record.environment,
        name=record.name,
        metadata=record.metadata,
        rate_limit=record.rate_limit,
        auth_method="oauth",
    )
    return Verified(principal, record)
