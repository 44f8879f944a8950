"""The request pipeline both middlewares share, in one place and without I/O.

:func:`request_flow` reads a :class:`RequestView` (path, scheme, client
address, the credential headers, query string, content type) and runs the
pipeline::

    credential extraction -> a verifier chosen by the credential's shape
    -> one admission step (state, scopes, the use) -> rate limits
    -> Principal, or a Denial

Extraction decides where the credential is (``Authorization: Bearer`` or the
optional API-key header) and whether the request is malformed (duplicate or
comma-joined headers, both headers at once, a key in the URL or in a form
body, a key over plain HTTP). Each verifier turns a credential into a
:class:`~keyguard._verify.Verified` or a denial; whatever verified it, the
admission step, the limits, the failure budget and the error responses are
the same. The ASGI and WSGI middlewares are thin shells that build the view,
drive this flow (``drive_async`` / ``drive_sync``) and turn its verdict into
HTTP. A form body is read only when it could hold the key, by a
:class:`~keyguard._steps.ReadForm` step that each shell performs its own way.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol
from urllib.parse import unquote_plus

from ._clock import Clock
from ._denials import RULES, Denial, DenialReason
from ._drive import Flow, never_blocks
from ._errors import StorageError
from ._http import Responder
from ._keys import KeyFormat
from ._last_used import LastUsedRecorder
from ._limits import (
    RateLimits,
    blocked_denial,
    failure_flow,
    limited_denial,
    limiter_unavailable,
)
from ._logsafe import redact_key_shapes
from ._options import MiddlewareOptions, options_for
from ._records import Principal
from ._steps import Backends, HitLimit, ReadForm
from ._verify import Verified, admit
from .ratelimit import RateLimitDecision

__all__ = [
    "ANONYMOUS",
    "MISSING_KEY",
    "Anonymous",
    "Pipeline",
    "RequestView",
    "ShapedVerifier",
    "Verdict",
    "Verifier",
    "log_decision",
    "param_name",
    "pipeline_with",
    "request_flow",
]

access_logger: Final = logging.getLogger("keyguard.access")

_FORM_TYPE = "application/x-www-form-urlencoded"
_LOCAL_PREFIXES: Final = ("127.", "::ffff:127.")
# "testclient" is the address Starlette's TestClient reports; no socket ever has it.
_LOCAL_HOSTS: Final = frozenset({"::1", "localhost", "testclient"})
_SECURE_SCHEMES: Final = frozenset({"https", "wss"})
_MAX_LOGGED = 200


class Anonymous:
    """The ``scope["user"]`` / ``scope["auth"]`` of a request let through without a key.

    Quacks like Starlette's ``UnauthenticatedUser`` and ``AuthCredentials()``
    at once: not authenticated, no scopes, so ``requires()`` refuses it. It is
    falsy, like "no principal".
    """

    __slots__ = ()
    is_authenticated: Final = False
    display_name: Final = ""
    identity: Final = ""
    scopes: Final[frozenset[str]] = frozenset()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ANONYMOUS"

    def __reduce__(self) -> str:
        return "ANONYMOUS"  # copied and unpickled as the one instance


#: The one :class:`Anonymous` instance.
ANONYMOUS: Final = Anonymous()


def _invalid(detail: str) -> Denial:
    return Denial(DenialReason.INVALID_REQUEST, detail)


_BOTH_HEADERS = "send the API key in one header only, not in both Authorization and {}"
_NOT_IN_URL = (
    "send the API key in the Authorization header (Authorization: Bearer <key>), not in the "
    "URL: the query parameter {!r} is refused because URLs end up in logs; treat a key sent "
    "this way as exposed and rotate it"
)
_NOT_IN_BODY = (
    "send the API key in the Authorization header (Authorization: Bearer <key>), not in the "
    "request body (form field {!r})"
)
#: The refusal of a request to a protected path that carries no key at all.
MISSING_KEY: Final = Denial(
    DenialReason.MISSING_CREDENTIALS,
    "this API needs an API key: send it as Authorization: Bearer <key>",
)
_NOT_HTTPS = (
    "API keys are accepted over HTTPS only, and this request came over plain HTTP; treat the "
    "key as exposed if it crossed an untrusted network. Operators: if TLS ends at a proxy in "
    "front of this app, make the server trust the proxy's X-Forwarded-Proto header (uvicorn "
    "--proxy-headers --forwarded-allow-ips=<proxy>, gunicorn --forwarded-allow-ips, waitress "
    "--trusted-proxy, werkzeug ProxyFix); to accept plain HTTP anyway, set require_https=False"
)


def param_name(raw: str) -> str:
    """A query or form parameter's name as ``query_param_names`` are compared: decoded,
    lowercase."""
    if "%" in raw or "+" in raw:
        raw = unquote_plus(raw, encoding="latin-1")
    return raw.lower()


def _param_in(encoded: str, names: frozenset[str]) -> str | None:
    """The first parameter of ``a=1&b=2`` whose name is in ``names`` (lowercase), or None."""
    for part in encoded.split("&"):
        name = param_name(part.partition("=")[0])
        if name in names:
            return name
    return None


def _bearer(value: str, prefix: str) -> str | Denial:
    """The token of an ``Authorization`` value, or the denial for a malformed one.

    Spaces and tabs around and between scheme and key are tolerated; the
    scheme is compared case-insensitively (RFC 9110).
    """
    if "," in value:
        return _invalid(
            "send exactly one Authorization header with one credential; several were sent "
            "(or joined with ',')"
        )
    if "\t" in value:
        value = value.replace("\t", " ")
    scheme, _, token = value.strip(" ").partition(" ")
    if not scheme:
        return _invalid("the Authorization header is empty; send Authorization: Bearer <key>")
    if scheme.lower() != "bearer":
        if not token and scheme.startswith(prefix + "_"):
            return _invalid("put the scheme before the key: Authorization: Bearer <key>")
        return Denial(
            DenialReason.MISSING_CREDENTIALS,
            "only the Bearer scheme is accepted: send Authorization: Bearer <key>",
        )
    if " " in token:
        token = token.lstrip(" ")
        if " " in token:
            return _invalid("send exactly one key after Bearer")
    if not token:
        return _invalid("no key after Bearer; send Authorization: Bearer <key>")
    return token


def _is_local(client: str | None) -> bool:
    return client is None or client in _LOCAL_HOSTS or client.startswith(_LOCAL_PREFIXES)


def _credential(
    options: MiddlewareOptions, prefix: str, authorization: str | None, api_key: str | None
) -> str | Denial | None:
    """The token the request carries, the denial for a malformed credential, or None."""
    if authorization is not None:
        if api_key is not None:
            return _invalid(_BOTH_HEADERS.format(options.api_key_header))
        return _bearer(authorization, prefix)
    if api_key is None:
        return None
    if "," in api_key:
        return _invalid(f"send exactly one {options.api_key_header} header with one key")
    token = api_key.strip(" \t")
    return token or _invalid(f"the {options.api_key_header} header is empty")


def _is_form(content_type: str) -> bool:
    return content_type.partition(";")[0].strip(" \t").lower() == _FORM_TYPE


def _form_flow(options: MiddlewareOptions, content_type: str | None) -> Flow[Denial | None]:
    """Refuse a key in a form body; the body is read only if it is a form.

    Several ``Content-Type`` headers (joined by ``,``) of which one is a form
    are refused: frameworks disagree on which of them counts, and the key
    could reach the app through the one this check did not read.
    """
    if content_type is None or not options._param_names:
        return None
    if "," in content_type and any(_is_form(part) for part in content_type.split(",")):
        return _invalid("send one Content-Type header")
    if not _is_form(content_type):
        return None
    try:
        body = yield from ReadForm(options.max_form_bytes)
    except StorageError:
        return None
    name = None if not body else _param_in(body.decode("latin-1"), options._param_names)
    return None if name is None else _invalid(_NOT_IN_BODY.format(name))


class RequestView:
    """What the pipeline reads of one request, whichever server it came through.

    Header values are the latin-1 text the server received; duplicates of a
    header arrive joined by ``,`` (as WSGI servers join them).
    """

    __slots__ = (
        "api_key",
        "authorization",
        "client",
        "content_type",
        "method",
        "path",
        "query_string",
        "scheme",
    )

    def __init__(
        self,
        method: str,
        path: str,
        scheme: str,
        client: str | None,
        authorization: str | None,
        api_key: str | None,
        query_string: str,
        content_type: str | None,
    ) -> None:
        self.method = method
        self.path = path
        self.scheme = scheme
        self.client = client
        self.authorization = authorization
        self.api_key = api_key
        self.query_string = query_string
        self.content_type = content_type

    def __repr__(self) -> str:  # never the credentials
        return f"RequestView({self.method!r}, {self.path!r}, client={self.client!r})"


class Verifier(Protocol):
    """**Protocol**: turns a bearer credential into what it proves, or a denial.

    A verifier is chosen by the credential's shape; whatever it proves is then
    admitted the same way (state, scopes, limits, failure budget).
    """

    @property
    def may_block(self) -> bool:
        """Whether a step of :meth:`verify` can wait (a slow hash, a fetch): then an async
        shell must drive it asynchronously, even over in-memory backends."""
        ...

    def verify(self, token: str) -> Flow[Verified | Denial]:
        """Verify ``token``; never raise for anything the client sent."""
        ...


class ShapedVerifier(Verifier, Protocol):
    """**Protocol**: a verifier for credentials of one shape (a JWT, say)."""

    def claims(self, token: str) -> bool:
        """Whether ``token`` has this verifier's shape. No I/O."""
        ...


class _Manager(Protocol):
    """What a pipeline needs of a key manager."""

    @property
    def verifier(self) -> Any: ...
    @property
    def store(self) -> Any: ...
    @property
    def environment(self) -> str | None: ...
    @property
    def last_used(self) -> LastUsedRecorder | None: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def key_format(self) -> KeyFormat: ...


class Pipeline:
    """What one middleware decides requests with; built once, used by every request.

    Args:
        manager: The key manager: its verifier, store, clock and last-used recorder.
        options: The middleware's options (default: all defaults).
        limiter: The rate limiter, or None.
        verifiers: Verifiers for other credential shapes, asked in order before
            the key verifier, which takes every credential none of them claims.

    Raises:
        TypeError: ``options`` is not a ``MiddlewareOptions``.
        ValueError: The options name an environment the key format lacks.
    """

    __slots__ = (
        "backends",
        "key_prefix",
        "key_verifier",
        "last_used",
        "limits",
        "never_blocks",
        "now",
        "options",
        "responder",
        "shaped",
    )

    def __init__(
        self,
        manager: _Manager,
        options: MiddlewareOptions | None,
        limiter: object,
        verifiers: tuple[ShapedVerifier, ...] = (),
    ) -> None:
        self.options, environment = options_for(manager, options)
        self.key_verifier: Verifier = manager.verifier.for_environment(environment)
        self.shaped = verifiers
        self.limits = None if limiter is None else RateLimits(self.options, manager.clock.monotonic)
        self.responder = Responder(self.options.realm)
        self.backends = Backends(manager.store, limiter)
        #: True when no backend ever waits for I/O: an async shell may drive synchronously.
        self.never_blocks = never_blocks(manager.store, limiter) and not any(
            v.may_block for v in (self.key_verifier, *verifiers)
        )
        self.now = manager.clock.now
        self.last_used = manager.last_used
        self.key_prefix = manager.key_format.prefix

    def __repr__(self) -> str:
        return f"Pipeline(options={self.options!r}, limits={self.limits!r})"

    def verifier_for(self, token: str) -> Verifier:
        """The verifier of ``token``'s shape."""
        for verifier in self.shaped:
            if verifier.claims(token):
                return verifier
        return self.key_verifier


def pipeline_with(
    manager: _Manager,
    options: MiddlewareOptions | None,
    limiter: object,
    jwt_verifier: ShapedVerifier | None,
) -> Pipeline:
    """The pipeline of a middleware given a ``jwt_verifier=`` (or None).

    Raises:
        TypeError: ``jwt_verifier`` has no ``claims`` and ``verify``.
    """
    if jwt_verifier is None:
        return Pipeline(manager, options, limiter)
    if not callable(getattr(jwt_verifier, "claims", None)) or not callable(
        getattr(jwt_verifier, "verify", None)
    ):
        raise TypeError(
            f"jwt_verifier must be a keyguard.oauth.JWTVerifier, got {type(jwt_verifier).__name__}"
        )
    pipeline = Pipeline(manager, options, limiter, (jwt_verifier,))
    # A verifier that fetches keys (a remote JWKS) waits for I/O: the async shell awaits.
    pipeline.never_blocks = pipeline.never_blocks and never_blocks(jwt_verifier)
    return pipeline


#: What the request flow decides: the Principal (None: anonymous) or a Denial, and the
#: rate-limit decision whose headers the app's response gets (None: no headers).
Verdict = tuple[Principal | Denial | None, RateLimitDecision | None]


def request_flow(pipeline: Pipeline, view: RequestView) -> Flow[Verdict]:
    """Decide one request to a protected path."""
    options = pipeline.options
    if view.query_string and options._param_names:
        name = _param_in(view.query_string, options._param_names)
        if name is not None:
            return _invalid(_NOT_IN_URL.format(name)), None
    token = _credential(options, pipeline.key_prefix, view.authorization, view.api_key)
    limits = pipeline.limits
    client = view.client
    address = "unknown" if client is None else client
    principal: Principal | None = None
    if token is None:
        refusal = yield from _form_flow(options, view.content_type)
        if refusal is not None:
            return refusal, None
        if not options.optional:
            return MISSING_KEY, None
        if limits is None:
            return None, None
        counted, key_policy = "anonymous:" + address, None
    else:
        if isinstance(token, Denial):
            return token, None
        if options.require_https and view.scheme not in _SECURE_SCHEMES and not _is_local(client):
            return _invalid(_NOT_HTTPS), None
        if limits is not None and limits._blocked:  # some address is blocked: is this one?
            wait = limits.blocked_for(address)
            if wait:
                return blocked_denial(wait), None
        verified = yield from pipeline.verifier_for(token).verify(token)
        if isinstance(verified, Denial):
            result: Principal | Denial = verified
        else:
            result = admit(verified, options.required_scopes, pipeline.now, pipeline.last_used)
        if isinstance(result, Denial):
            if limits is not None:
                result = yield from failure_flow(limits, address, result)
            return result, None
        if limits is None:
            return result, None
        principal, counted, key_policy = result, result.key_id, result.rate_limit
    # The request is admitted: count it against every policy that applies, at once.
    policies = limits.policies(key_policy, view.method, view.path)
    if not policies:
        return principal, None
    key_id = None if principal is None else principal.key_id
    try:
        decision = yield from HitLimit(counted, policies)
    except StorageError:
        # keyguard's limiters answer with on_backend_error instead; another one may raise.
        return limiter_unavailable(key_id), None
    if decision.allowed:
        return principal, decision
    return limited_denial(decision, limits.legacy, key_id), None


def _escape(text: str) -> str:
    """Attacker-supplied text made safe for a log line: no control characters, bounded."""
    if len(text) > _MAX_LOGGED:
        text = text[:_MAX_LOGGED] + "..."
    if text.isprintable():
        return text
    return repr(text)[1:-1]


def log_decision(
    method: str, path: str, client: str | None, result: Principal | Denial | None
) -> None:
    """Log one event for one decision on logger ``keyguard.access``; never the token.

    The record carries ``outcome``, ``status``, ``key_id``, ``owner``,
    ``method``, ``path`` and ``client`` as attributes (for structured
    formatters); path, method and client are escaped, and the secret of
    anything key-shaped in the path is redacted (a client may send its key
    there: ``GET /invoices/sk_live_M65wXtYRmqlf_[redacted]``).
    """
    if isinstance(result, Denial):
        status = RULES[result.reason].status
        level = logging.ERROR if status == 503 else logging.INFO
    else:
        level = logging.DEBUG if result is None else logging.INFO
    if not access_logger.isEnabledFor(level):
        return
    if isinstance(result, Denial):
        outcome, key_id, owner, detail = result.reason.value, result.key_id, None, result.detail
    elif result is None:
        status, outcome, key_id, owner, detail = 0, "anonymous", None, None, ""
    else:
        status, outcome, detail = 0, "allowed", ""
        key_id, owner = result.key_id, _escape(result.owner)
    method, path = _escape(method), _escape(redact_key_shapes(path))
    client = None if client is None else _escape(client)
    access_logger.log(
        level,
        "%s %s %s: %s%s key_id=%s owner=%s client=%s",
        method,
        path,
        status or "-",
        outcome,
        f" ({detail})" if detail else "",
        key_id,
        owner,
        client,
        extra={
            "outcome": outcome,
            "status": status or None,
            "key_id": key_id,
            "owner": owner,
            "method": method,
            "path": path,
            "client": client,
        },
    )
