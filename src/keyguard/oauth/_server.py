"""The token endpoint (RFC 6749 §4.4) as one flow, and the documents published beside it.

:func:`token_flow` decides one token request without doing any I/O itself:
it yields typed steps (read the form body, look the client up, count a
failure or an issuance against the limiter) that the ASGI and WSGI shells
(:mod:`keyguard.oauth.asgi`, :mod:`keyguard.oauth.wsgi`) perform, and ends in
an :class:`OAuthResponse`. The order of the checks::

    method (POST, else 405) -> TLS -> no OAuth parameters in the query string
    -> an address blocked by its failure budget (429) -> form body
    (application/x-www-form-urlencoded, no repeated parameter) -> grant_type
    -> client authentication (exactly one of client_secret_basic and
    client_secret_post) -> the client's state and environment -> scope
    -> resource -> the client's issuance limit (429) -> a signed access token

Client authentication is the key check: the secret is parsed in the key
format (with the client-secret prefix), its client looked up once, and the
secret verified by the manager's hasher; an unknown client costs the same
hash as a wrong secret and gets the byte-identical answer. Each failed
authentication spends the client address's failure budget, exactly as a
wrong API key does at the middleware (one ``RateLimits``, one limiter). A
secret that verified against the very record the store hands out again is not
parsed or hashed again (:class:`VerifiedClients`, the rules of the API keys'
token memo).
"""

from __future__ import annotations

import binascii
import json
import logging
import re
import secrets
from collections.abc import Collection, Iterable, Sequence
from datetime import timedelta
from typing import Any, Final
from urllib.parse import unquote_plus, urlsplit

from .._denials import Denial, DenialReason
from .._drive import Flow
from .._errors import MalformedKeyError, SecretTooLongError, StorageError
from .._hashing import warn_unreadable_hash
from .._keys import parse_key
from .._limits import RateLimits, failure_flow, headers_of
from .._memo import BoundedMemo
from .._options import DEFAULT_FAILURE_LIMIT, MiddlewareOptions
from .._pipeline import _SECURE_SCHEMES, _is_local
from .._records import CLIENT_HASH_MARK, KeyChanges, KeyRecord
from .._steps import Backends, GetKey, HitLimit, ReadForm, UpdateKey
from .._verify import _CheckSlowHash, store_unavailable, token_digest
from ..ratelimit import retry_after_seconds
from ..ratelimit._policy import Policy
from ._signing import KeySet

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "DEFAULT_TOKEN_RATE_LIMIT",
    "MAX_BODY",
    "AuthorizationServer",
    "OAuthResponse",
    "TokenRequest",
    "VerifiedClients",
    "token_flow",
]

logger: Final = logging.getLogger("keyguard")
access_logger: Final = logging.getLogger("keyguard.access")

#: How long an access token is valid unless configured otherwise.
DEFAULT_TOKEN_LIFETIME: Final = timedelta(minutes=10)
#: Tokens one client may get, unless configured otherwise: far more than a client
#: that reuses its token until it nearly expires ever needs.
DEFAULT_TOKEN_RATE_LIMIT: Final = "60/minute"  # noqa: S105 (a rate, not a secret)
_MAX_LIFETIME: Final = timedelta(hours=24)
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
#: The largest token request body read.
MAX_BODY: Final = 8 * 1024
_MAX_PARAMS: Final = 32
#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_OAUTH_PARAMS: Final = frozenset(
    {"grant_type", "scope", "client_id", "client_secret", "resource", "client_assertion"}
)
_CREDENTIAL_PARAMS: Final = frozenset({"client_secret", "client_assertion"})
_CLIENT_AUTH_FAILED: Final = "client authentication failed"
_NO_STORE: Final = (("cache-control", "no-store"), ("pragma", "no-cache"))
_JSON: Final = "application/json"
_REALM_RE: Final = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}")
#: The header pairs most responses carry, encoded once.
_ENCODED: Final = {
    pair: (pair[0].encode("latin-1"), pair[1].encode("latin-1"))
    for pair in (("content-type", _JSON), *_NO_STORE)
}


class OAuthResponse:
    """A response of the authorization server. ``headers`` are lowercase string pairs."""

    __slots__ = ("body", "client_id", "error", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        error: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        #: The RFC 6749 error code of a refusal, for the log.
        self.error = error
        #: The client a token was issued to, for the log.
        self.client_id = client_id

    def __repr__(self) -> str:  # never the body: it may hold a token
        return f"OAuthResponse(status={self.status})"

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as ASGI wants them."""
        encoded = _ENCODED.get
        return [
            encoded(pair) or (pair[0].encode("latin-1"), pair[1].encode("latin-1"))
            for pair in self.headers
        ]


class TokenRequest:
    """What the token flow reads of one request, whichever server it came through.

    Header values are the latin-1 text the server received; duplicates of a
    header arrive joined by ``,``. The body is read by a :class:`ReadForm`
    step when the flow needs it.
    """

    __slots__ = ("authorization", "client", "content_type", "method", "query_string", "scheme")

    def __init__(
        self,
        method: str,
        scheme: str,
        client: str | None,
        authorization: str | None,
        content_type: str | None,
        query_string: str,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.client = client
        self.authorization = authorization
        self.content_type = content_type
        self.query_string = query_string

    def __repr__(self) -> str:  # never the credentials
        return f"TokenRequest({self.method!r}, client={self.client!r})"


class VerifiedClients(BoundedMemo[bytes, KeyRecord]):
    """Which client secret verified against which client record, so a repeat costs no parse
    or hash: the rules of the API keys' :class:`~keyguard.TokenMemo`.

    An entry maps the BLAKE2s digest of a secret (:func:`~keyguard._verify.token_digest`;
    never the secret) to the record object it verified against, and is trusted only
    while the store hands out that very object again: any change to the client (revoke,
    rotate, update, a new hash, a last-used write) replaces the record, so the next
    request is checked in full. A store that builds a new record per lookup (SQL without
    a cache) never hits. Only successes are remembered; the oldest entry goes first.
    """

    __slots__ = ()

    def remember(self, digest: bytes, record: KeyRecord) -> None:
        """Remember that the secret of ``digest`` verified against ``record``."""
        self.put(digest, record)


def _json(
    status: int, document: dict[str, Any], headers: Iterable[tuple[str, str]]
) -> OAuthResponse:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return OAuthResponse(
        status,
        [("content-type", _JSON), ("content-length", str(len(body))), *headers],
        body,
    )


class _Refusal:
    """An RFC 6749 §5.2 error on its way to becoming a response."""

    __slots__ = ("code", "description", "headers", "status")

    def __init__(
        self,
        code: str,
        description: str,
        status: int = 400,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.code = code
        self.description = description
        self.status = status
        self.headers = headers


def _invalid_request(description: str) -> _Refusal:
    return _Refusal("invalid_request", description)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _checked_issuer(issuer: str) -> str:
    if not isinstance(issuer, str):
        raise TypeError(f"issuer must be a string URL, not {type(issuer).__name__}")
    parts = urlsplit(issuer)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and host in _LOOPBACK_HOSTS):
        raise ValueError(
            f"issuer must be an https URL (http only for localhost), got {issuer!r} (RFC 8414 §2)"
        )
    if parts.query or parts.fragment or not host:
        raise ValueError(f"issuer must be a URL with a host and no query or fragment: {issuer!r}")
    return issuer.rstrip("/")


def _checked_path(name: str, path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "?" in path or "#" in path:
        raise ValueError(f"{name} must be a path starting with '/', got {path!r}")
    return path


def _checked_scopes(name: str, scopes: Collection[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise TypeError(f"{name} must be a collection of scopes, not the string {scopes!r}")
    result = tuple(scopes)
    for scope in result:
        if not isinstance(scope, str) or not _SCOPE_TOKEN_RE.fullmatch(scope):
            raise ValueError(f"{name}: {scope!r} is not an RFC 6749 scope token")
    return result


class AuthorizationServer:
    """A client-credentials authorization server over a key manager: configuration and flow.

    Serve it with :class:`keyguard.oauth.asgi.AuthorizationServerApp` (over an
    :class:`~keyguard.AsyncKeyManager`) or
    :class:`keyguard.oauth.wsgi.AuthorizationServerWSGIApp` (over a
    :class:`~keyguard.KeyManager`). It answers three paths: the token
    endpoint, the RFC 8414 metadata and the JWKS.

    Args:
        manager: The key manager whose store holds the clients
            (``create_client``); its hasher, clock and last-used recorder are used.
        keys: The signing keys; ``keys.signing`` signs every new token.
        issuer: This server's identifier, an ``https`` URL (``http`` only for
            localhost): the ``iss`` of every token and the base of the
            metadata's URLs.
        audiences: The resource indicators tokens may be issued for (RFC
            8707): a request's ``resource`` must name one of them, and a
            request without one gets the first.
        token_lifetime: How long a token is valid (default 10 minutes, at
            most 24 hours): the time a stolen token stays useful. A token
            never outlives its client's own expiry.
        limiter: The rate limiter for the failure budget and the issuance
            limit (sync for WSGI, async for ASGI); None turns both off.
        token_rate_limit: Tokens per client (default ``"60/minute"``); None
            turns the limit off. Answered with 429 and ``Retry-After``.
        failure_limit: Failed client authentications per client address, as
            the middleware's option of that name (and the same budget when
            the limiter is shared).
        require_https: Refuse token requests over plain HTTP from other
            machines, as the middleware's option of that name (same proxy
            handling: make the server trust the proxy's forwarded headers).
        realm: The realm of the ``WWW-Authenticate: Basic`` challenge.
        environment: Issue tokens only to clients of this environment
            (``unauthorized_client`` for others); default: the manager's.
        token_path: The token endpoint's path.
        jwks_path: The JWKS document's path.
        scopes_supported: Listed in the metadata when given.
        jwks_max_age: Seconds verifiers may cache the JWKS and metadata.

    Raises:
        ValueError: An option is invalid.
        TypeError: An option has the wrong type.
    """

    def __init__(
        self,
        manager: Any,
        keys: KeySet,
        *,
        issuer: str,
        audiences: str | Sequence[str],
        token_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
        limiter: object = None,
        token_rate_limit: Policy | str | None = DEFAULT_TOKEN_RATE_LIMIT,
        failure_limit: Policy | str | None = DEFAULT_FAILURE_LIMIT,
        require_https: bool = True,
        realm: str = "oauth",
        environment: str | None = None,
        token_path: str = "/oauth/token",  # noqa: S107 (a path, not a secret)
        jwks_path: str = "/oauth/jwks.json",
        scopes_supported: Collection[str] | None = None,
        jwks_max_age: int = 300,
    ) -> None:
        if not isinstance(keys, KeySet):
            raise TypeError(f"keys must be a KeySet, not {type(keys).__name__}")
        self.manager = manager
        self.keys = keys
        self.issuer = _checked_issuer(issuer)
        self._issuer_json = json.dumps(self.issuer)
        if isinstance(audiences, str):
            audiences = (audiences,)
        self.audiences = tuple(audiences)
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("audiences must name at least one resource (an absolute URI)")
        if not isinstance(token_lifetime, timedelta) or not (
            timedelta(seconds=1) <= token_lifetime <= _MAX_LIFETIME
        ):
            raise ValueError("token_lifetime must be a timedelta from 1 second to 24 hours")
        self.token_lifetime = token_lifetime
        self._lifetime_seconds = int(token_lifetime.total_seconds())
        if not isinstance(realm, str) or not _REALM_RE.fullmatch(realm):
            raise ValueError(f"realm must be printable ASCII without '\"' or '\\': {realm!r}")
        self.realm = realm
        self._challenge = (("www-authenticate", f"Basic realm={_quoted(realm)}"),)
        self.require_https = require_https
        self.limiter = limiter
        options = MiddlewareOptions(failure_limit=failure_limit)
        clock = manager.clock
        self.limits = None if limiter is None else RateLimits(options, clock.monotonic)
        if token_rate_limit is None or isinstance(token_rate_limit, Policy):
            self.token_policy = token_rate_limit
        else:
            self.token_policy = Policy.parse(token_rate_limit, name="oauth-token")
        self.environment = environment if environment is not None else manager.environment
        self.token_path = _checked_path("token_path", token_path)
        self.jwks_path = _checked_path("jwks_path", jwks_path)
        self.scopes_supported = (
            None
            if scopes_supported is None
            else _checked_scopes("scopes_supported", scopes_supported)
        )
        self.jwks_max_age = int(jwks_max_age)
        issuer_path = urlsplit(self.issuer).path.rstrip("/")
        origin = self.issuer[: len(self.issuer) - len(issuer_path)] if issuer_path else self.issuer
        #: RFC 8414 §3.1: the well-known suffix goes between the host and the issuer's path.
        self.metadata_path = "/.well-known/oauth-authorization-server" + issuer_path
        self.token_endpoint = origin + self.token_path
        self.jwks_uri = origin + self.jwks_path
        self.hasher = manager.hasher
        self.client_format = manager.client_secret_format
        self.backends = Backends(manager.store, limiter)
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(24))
        memo = manager.token_memo
        #: Client secrets verified before (off when the manager's ``token_memo`` is).
        self.verified_clients = None if memo is None else VerifiedClients(memo.max_size)
        self._metadata = self._metadata_document()

    def __repr__(self) -> str:
        return f"AuthorizationServer(issuer={self.issuer!r}, audiences={self.audiences!r})"

    # -- documents -------------------------------------------------------------------

    def _metadata_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.jwks_uri,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            # No authorization endpoint, so no response type (RFC 8414 §2 needs the member).
            "response_types_supported": [],
        }
        if self.scopes_supported is not None:
            document["scopes_supported"] = list(self.scopes_supported)
        return document

    def _cacheable(self) -> tuple[tuple[str, str], ...]:
        return (("cache-control", f"public, max-age={self.jwks_max_age}"),)

    def metadata_response(self) -> OAuthResponse:
        """The RFC 8414 authorization server metadata."""
        return _json(200, self._metadata, self._cacheable())

    def jwks_response(self) -> OAuthResponse:
        """The JWKS document: the public keys only."""
        return _json(200, self.keys.jwks(), self._cacheable())

    def route(self, method: str, path: str) -> OAuthResponse | None:
        """The answer to a request for a document (or a 405), None for the token endpoint or
        a path this server does not serve (the shell tells which by :attr:`token_path`)."""
        if path in (self.metadata_path, self.jwks_path):
            if method not in ("GET", "HEAD"):
                return _json(
                    405,
                    {"error": "invalid_request", "error_description": "use GET"},
                    (("allow", "GET, HEAD"),),
                )
            return self.metadata_response() if path == self.metadata_path else self.jwks_response()
        return None

    # -- errors ----------------------------------------------------------------------

    def render(self, refusal: _Refusal) -> OAuthResponse:
        """An RFC 6749 §5.2 error response."""
        response = _json(
            refusal.status,
            {"error": refusal.code, "error_description": refusal.description},
            (*_NO_STORE, *refusal.headers),
        )
        response.error = refusal.code
        return response

    def _invalid_client(self, description: str = _CLIENT_AUTH_FAILED) -> _Refusal:
        return _Refusal("invalid_client", description, 401, self._challenge)


def _unavailable(description: str) -> _Refusal:
    return _Refusal("temporarily_unavailable", description, 503, (("retry-after", "1"),))


def _form(body: bytes) -> dict[str, str] | _Refusal:
    """The parameters of a form body: decoded, none repeated, empty values dropped."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return _invalid_request("the form body must be ASCII, with other characters %-encoded")
    params: dict[str, str] = {}
    seen: set[str] = set()
    parts = [part for part in text.split("&") if part]
    if len(parts) > _MAX_PARAMS:
        return _invalid_request("too many parameters")
    for part in parts:
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:  # else decoding changes nothing
            try:
                name = unquote_plus(name, encoding="utf-8", errors="strict")
                value = unquote_plus(value, encoding="utf-8", errors="strict")
            except UnicodeDecodeError:
                return _invalid_request("a form parameter is not valid UTF-8 once %-decoded")
        if name in seen:
            # RFC 6749 §3.2: parameters MUST NOT be included more than once.
            return _invalid_request(f"the parameter {name[:40]!r} is repeated")
        seen.add(name)
        if value:  # RFC 6749 §3.1: a parameter without a value is as if omitted
            params[name] = value
    return params


def _basic_credentials(value: str) -> tuple[str, str] | None:
    """client_id and secret of an ``Authorization: Basic`` value (RFC 6749 §2.3.1), or None."""
    scheme, _, encoded = value.strip(" \t").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        # base64.b64decode(..., validate=True) is this call behind a Python wrapper.
        decoded = binascii.a2b_base64(encoded.strip(" \t"), strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    if "%" not in decoded and "+" not in decoded:  # decoding would change nothing
        return client_id, secret
    try:
        # The id and the secret were form-urlencoded before Base64 (RFC 6749 §2.3.1).
        return (
            unquote_plus(client_id, encoding="utf-8", errors="strict"),
            unquote_plus(secret, encoding="utf-8", errors="strict"),
        )
    except UnicodeDecodeError:
        return None


def _content_type_is_form(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip(" \t").lower() == _FORM_TYPE


def token_flow(server: AuthorizationServer, request: TokenRequest) -> Flow[OAuthResponse]:
    """Decide one request to the token endpoint (see the module docstring), and log the
    decision on ``keyguard.access`` (never a secret or a token)."""
    outcome = yield from _token_flow(server, request)
    response = server.render(outcome) if isinstance(outcome, _Refusal) else outcome
    if access_logger.isEnabledFor(logging.INFO):
        client = None if request.client is None else request.client[:100]
        outcome_text = response.error or "issued"
        access_logger.info(
            "token request %s: %s client_id=%s client=%s",
            response.status,
            outcome_text,
            response.client_id,
            client,
            extra={
                "outcome": outcome_text,
                "status": response.status,
                "key_id": response.client_id,
                "client": client,
            },
        )
    return response


def _precheck(server: AuthorizationServer, request: TokenRequest) -> _Refusal | None:
    """The refusals decided before the body is read: method, TLS, the query string, the
    Authorization header's count, a blocked address, the content type."""
    if request.method != "POST":
        return _Refusal(
            "invalid_request", "the token endpoint takes POST", 405, (("allow", "POST"),)
        )
    if (
        server.require_https
        and request.scheme not in _SECURE_SCHEMES
        and not _is_local(request.client)
    ):
        return _invalid_request(
            "the token endpoint is served over HTTPS only, and this request came over plain "
            "HTTP; treat the client secret as exposed if it crossed an untrusted network"
        )
    if request.query_string:
        for part in request.query_string.split("&"):
            name = unquote_plus(part.partition("=")[0], encoding="latin-1").lower()
            if name in _CREDENTIAL_PARAMS:
                return _invalid_request(
                    "send the client secret in the Authorization header or the form body, never "
                    "in the URL (URLs end up in logs): treat this secret as exposed and rotate it"
                )
            if name in _OAUTH_PARAMS:
                return _invalid_request(f"send {name!r} in the form body, not in the query string")
    if request.authorization is not None and "," in request.authorization:
        return _invalid_request("send exactly one Authorization header")
    limits = server.limits
    if limits is not None and limits._blocked:
        wait = limits.blocked_for("unknown" if request.client is None else request.client)
        if wait:
            return _rate_limited(
                f"too many failed authentications from this address; retry after "
                f"{retry_after_seconds(wait)} s",
                wait,
                (),
            )
    if not _content_type_is_form(request.content_type):
        return _invalid_request(
            "send the token request as application/x-www-form-urlencoded (RFC 6749 §4.4.2)"
        )
    return None


def _credentials(
    server: AuthorizationServer, authorization: str | None, params: dict[str, str]
) -> tuple[str, str] | _Refusal:
    """client_id and secret, from exactly one authentication method (RFC 6749 §2.3)."""
    body_id, body_secret = params.get("client_id"), params.get("client_secret")
    if authorization is not None:
        if body_secret is not None:
            return _invalid_request(
                "use one client authentication method: the Authorization header or "
                "client_secret in the body, not both"
            )
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return server._invalid_client(
                "send the client credentials as Authorization: Basic base64(client_id:secret), "
                "each form-urlencoded first (RFC 6749 §2.3.1)"
            )
        if body_id is not None and body_id != credentials[0]:
            return _invalid_request("client_id in the body differs from the Authorization header")
        return credentials
    if body_secret is not None and body_id is not None:
        return body_id, body_secret
    return server._invalid_client(
        "authenticate the client: Authorization: Basic (client_secret_basic) or "
        "client_id and client_secret in the body (client_secret_post)"
    )


def _token_flow(
    server: AuthorizationServer, request: TokenRequest
) -> Flow[OAuthResponse | _Refusal]:
    refusal = _precheck(server, request)
    if refusal is not None:
        return refusal
    try:
        body = yield from ReadForm(MAX_BODY)
    except StorageError:
        body = None
    if body is None:
        return _invalid_request(f"the form body is missing, unreadable or over {MAX_BODY} bytes")
    params = _form(body)
    if isinstance(params, _Refusal):
        return params
    grant_type = params.get("grant_type")
    if grant_type is None:
        return _invalid_request("grant_type is missing; send grant_type=client_credentials")
    if grant_type != "client_credentials":
        return _Refusal("unsupported_grant_type", "only grant_type=client_credentials is supported")
    credentials = _credentials(server, request.authorization, params)
    if isinstance(credentials, _Refusal):
        return credentials
    limits = server.limits
    address = "unknown" if request.client is None else request.client
    record = yield from _authenticate(server, credentials[0], credentials[1])
    if isinstance(record, Denial):
        if record.reason is DenialReason.STORE_UNAVAILABLE:
            return _unavailable(record.detail)
        if limits is not None:
            counted = yield from failure_flow(limits, address, record)
            if counted.reason is DenialReason.RATE_LIMITED:
                return _rate_limited(counted.detail, counted.retry_after or 1, counted.headers)
        return server._invalid_client(record.detail)
    now = server.manager.clock.now()
    status = record.status(now)
    if status != "active":
        return server._invalid_client(
            f"the client has {'expired' if status == 'expired' else 'been revoked'}"
        )
    if server.environment is not None and record.environment != server.environment:
        return _Refusal(
            "unauthorized_client",
            f"this server issues tokens to {server.environment!r} clients only",
        )
    granted = _granted_scopes(params.get("scope"), record.scopes)
    if isinstance(granted, _Refusal):
        return granted
    resource = params.get("resource")
    if resource is None:
        audience = server.audiences[0]
    elif resource in server.audiences:
        audience = resource
    else:
        return _Refusal("invalid_target", "the resource is not one this server issues tokens for")
    policy = server.token_policy
    if policy is not None and server.limiter is not None:
        try:
            decision = yield from HitLimit("oauth-token:" + record.key_id, (policy,))
        except StorageError:
            return _unavailable("the rate limiter is unavailable; try again shortly")
        if not decision.allowed:
            headers = tuple(headers_of(decision, legacy=False))
            if decision.degraded == "closed":
                return _unavailable("the rate limiter is unavailable; try again shortly")
            return _rate_limited(
                f"too many token requests for this client; retry after "
                f"{retry_after_seconds(decision.retry_after)} s",
                decision.retry_after,
                headers,
            )
    last_used = server.manager.last_used
    if last_used is not None:  # written behind, by the manager's writer
        last_used.note(record.key_id, server.manager.clock.now)
    return _issue(server, record, granted, audience, now.timestamp())


def _rate_limited(description: str, wait: float, headers: Iterable[tuple[str, str]]) -> _Refusal:
    extra = [(name.lower(), value) for name, value in headers]
    if not any(name == "retry-after" for name, _ in extra):
        extra.insert(0, ("retry-after", str(retry_after_seconds(wait))))
    return _Refusal("rate_limited", description, 429, extra)


def _granted_scopes(requested: str | None, allowed: frozenset[str]) -> frozenset[str] | _Refusal:
    if requested is None:
        return allowed
    wanted = frozenset(part for part in requested.split(" ") if part)
    if not wanted:
        return allowed
    for scope in wanted:
        if not _SCOPE_TOKEN_RE.fullmatch(scope):
            return _Refusal("invalid_scope", "a scope is not a valid scope token (RFC 6749 §3.3)")
    extra = wanted - allowed
    if extra:
        shown = " ".join(sorted(extra))[:200]
        return _Refusal("invalid_scope", f"the client may not have the scope {shown}")
    return wanted


def _authenticate(
    server: AuthorizationServer, client_id: str, secret: str
) -> Flow[KeyRecord | Denial]:
    """The client's record, or why not: unknown, wrong secret and the rest cost one hash each
    and read alike (the Denial's reason is for the failure budget and the log).

    A secret that verified against the very record the store hands out again is neither
    parsed nor hashed again (:class:`VerifiedClients`); anything else is checked in full,
    with the record already fetched.
    """
    memo = server.verified_clients
    if memo is None:
        return (yield from _check_secret(server, client_id, secret))
    digest = token_digest(secret)
    remembered = memo.get(digest)
    if remembered is None or remembered.key_id != client_id:
        result = yield from _check_secret(server, client_id, secret)
    else:
        try:
            record = yield from GetKey(client_id)
        except StorageError as exc:
            return store_unavailable(client_id, exc)
        if record is remembered:
            return record
        result = yield from _check_secret(server, client_id, secret, record, fetched=True)
    if not isinstance(result, Denial):
        memo.remember(digest, result)
    return result


def _check_secret(
    server: AuthorizationServer,
    client_id: str,
    secret: str,
    record: KeyRecord | None = None,
    *,
    fetched: bool = False,
) -> Flow[KeyRecord | Denial]:
    """The full check of a client secret: its format and checksum, the client's record
    (looked up unless ``fetched``), the hash."""
    hasher = server.hasher
    try:
        parsed = parse_key(secret, server.client_format)
    except MalformedKeyError:
        parsed = None
    if parsed is None or parsed.key_id != client_id:
        hasher.verify(secret[:200], server._dummy_hash)
        return Denial(DenialReason.WRONG_SECRET, _CLIENT_AUTH_FAILED)
    if not fetched:
        try:
            record = yield from GetKey(parsed.key_id)
        except StorageError as exc:
            return store_unavailable(parsed.key_id, exc)
    stored = record.secret_hash if record is not None else ""
    if record is None or not stored.startswith(CLIENT_HASH_MARK):
        hasher.verify(parsed.secret, server._dummy_hash)
        return Denial(DenialReason.UNKNOWN_KEY, _CLIENT_AUTH_FAILED, key_id=parsed.key_id)
    stored = stored[len(CLIENT_HASH_MARK) :]
    if hasher.slow:
        try:
            ok = yield from _CheckSlowHash(
                server.manager.slow_hashes, hasher, parsed.secret, stored
            )
        except SecretTooLongError:
            ok = False
        except StorageError:
            return Denial(
                DenialReason.STORE_UNAVAILABLE, "too many verifications at once; try again shortly"
            )
    else:
        ok = hasher.verify(parsed.secret, stored)
    if not ok:
        warn_unreadable_hash(record.key_id, stored, (hasher,))  # a pepper the app lacks
        return Denial(DenialReason.WRONG_SECRET, _CLIENT_AUTH_FAILED, key_id=record.key_id)
    if hasher.needs_rehash(stored):
        changes = KeyChanges(secret_hash=CLIENT_HASH_MARK + hasher.hash(parsed.secret))
        try:
            upgraded = yield from UpdateKey(record.key_id, changes)
        except StorageError:
            logger.warning("could not upgrade the stored hash of client %s", record.key_id)
        else:
            record = record if upgraded is None else upgraded
    return record


def _issue(
    server: AuthorizationServer,
    record: KeyRecord,
    scopes: frozenset[str],
    audience: str,
    now: float,
) -> OAuthResponse:
    issued_at = int(now)
    expires = issued_at + server._lifetime_seconds
    if record.expires_at is not None:
        expires = min(expires, int(record.expires_at.timestamp()))
    scope = json.dumps(" ".join(sorted(scopes)))
    key_id = json.dumps(record.key_id)
    # The claims and the response are written out rather than through a JSONEncoder made
    # with options (as json.dumps(..., separators=...) makes one per call), which cost a
    # fifth of the endpoint's own work (31,600 instructions). Every string is escaped by
    # json.dumps (the plain call, whose encoder is made once); the numbers are ints; the
    # jti and the token need no escaping (base64url and dots), and escaping the token,
    # character by character, would cost as much as the rest of this function.
    payload = (
        f'{{"iss":{server._issuer_json},"sub":{key_id},"client_id":{key_id},'
        f'"aud":{json.dumps(audience)},"iat":{issued_at},"exp":{expires},'
        f'"jti":"{secrets.token_urlsafe(16)}","scope":{scope},"owner":{json.dumps(record.owner)}}}'
    )
    token = server.keys.signing._sign_payload(payload.encode("ascii"), "at+jwt")
    body = (
        f'{{"access_token":"{token}","token_type":"Bearer",'
        f'"expires_in":{max(expires - issued_at, 0)},"scope":{scope}}}'
    ).encode("ascii")
    return OAuthResponse(
        200,
        [("content-type", _JSON), ("content-length", str(len(body))), *_NO_STORE],
        body,
        client_id=record.key_id,
    )
