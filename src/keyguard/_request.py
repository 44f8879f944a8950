"""The request-level decisions of both middlewares, in one place and without I/O.

:func:`request_flow` reads a neutral view of a request (path, scheme, client
address, the credential headers, query string, content type) and decides:
where the credential is (``Authorization: Bearer`` or the optional API-key
header), whether the request is malformed (duplicate or comma-joined headers,
both headers at once, a key in the URL or in a form body), whether a key came
over plain HTTP, and finally what the key manager's verification flow says
(``yield from``). The ASGI and WSGI middlewares are thin shells that build the
view, drive this generator (``drive_async`` / ``drive_sync``) and turn the
outcome into HTTP. A form body is read only when it could hold the key, by a
``("body", "read_form", (limit,))`` call that each shell performs its own way.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import unquote_plus

from ._errors import StorageError
from ._flow import (
    Denial,
    DenialReason,
    Flow,
    VerifySettings,
    authenticate_flow,
)
from ._http import STATUS_BY_REASON, Responder
from ._limits import (
    HeaderRenderer,
    RateLimits,
    blocked_denial,
    failure_flow,
    limited_denial,
    limiter_unavailable,
)
from ._options import MiddlewareOptions, options_for
from ._records import Principal
from .ratelimit import RateLimitDecision

__all__ = [
    "ANONYMOUS",
    "MISSING_KEY",
    "Anonymous",
    "Gate",
    "Outcome",
    "log_decision",
    "param_name",
    "request_flow",
    "wire",
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
        scheme, _, token = authorization.partition(" ")
        # "Bearer <key>" exactly (one space, one key, nothing around it) needs no examining.
        if (
            scheme == "Bearer"
            and token
            and " " not in token
            and "," not in token
            and "\t" not in token
        ):
            return token
        return _bearer(authorization, prefix)
    if api_key is None:
        return None
    if "," in api_key:
        return _invalid(f"send exactly one {options.api_key_header} header with one key")
    token = api_key.strip(" \t")
    return token or _invalid(f"the {options.api_key_header} header is empty")


def _form_flow(options: MiddlewareOptions, content_type: str | None) -> Flow[Denial | None]:
    """Refuse a key in a form body; the body is read only if it is a form."""
    if (
        content_type is None
        or not options._param_names
        or content_type.partition(";")[0].strip(" \t").lower() != _FORM_TYPE
    ):
        return None
    try:
        body: bytes | None = yield ("body", "read_form", (options.max_form_bytes,))
    except StorageError:
        return None
    name = None if not body else _param_in(body.decode("latin-1"), options._param_names)
    return None if name is None else _invalid(_NOT_IN_BODY.format(name))


class Gate:
    """What one middleware decides requests with; built once, used by every request.

    Args:
        options: The middleware's options.
        settings: The key manager's verification settings.
        environment: The environment keys must be of, or None.
        limits: The rate limits, when the middleware has a limiter.
    """

    __slots__ = ("environment", "limits", "options", "prefix", "settings")

    def __init__(
        self,
        options: MiddlewareOptions,
        settings: VerifySettings,
        environment: str | None,
        limits: RateLimits | None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.environment = environment
        self.limits = limits
        self.prefix = settings.key_format.prefix

    def __repr__(self) -> str:
        return f"Gate(options={self.options!r}, limits={self.limits!r})"


def wire(
    manager: Any, options: MiddlewareOptions | None, limiter: object
) -> tuple[MiddlewareOptions, Gate, HeaderRenderer, Responder, dict[str, Any]]:
    """What either middleware builds once from its key manager, options and limiter:
    the options, the gate, the rate-limit header renderer, the responder, and the
    targets the request flow's calls go to."""
    options, environment = options_for(manager, options)
    limits = None if limiter is None else RateLimits(options, manager.clock.monotonic)
    return (
        options,
        Gate(options, manager._settings, environment, limits),
        HeaderRenderer(options.legacy_rate_limit_headers),
        Responder(options.realm),
        {"store": manager.store, "limiter": limiter},
    )


#: What a request flow ends in: the Principal (None: anonymous) or a Denial, and the
#: rate-limit decision whose headers the app's response gets (None: no headers).
Outcome = tuple[Principal | Denial | None, RateLimitDecision | None]


def request_flow(
    gate: Gate,
    method: str,
    path: str,
    scheme: str,
    client: str | None,
    authorization: str | None,
    api_key: str | None,
    query_string: str,
    content_type: str | None,
) -> Flow[Outcome]:
    """Decide one request to a protected path.

    Header values are the latin-1 text the server received; duplicates of a
    header arrive joined by ``,`` (as WSGI servers do). A form body, when it
    must be inspected, is read with the call ``("body", "read_form", (limit,))``,
    which returns its bytes or ``None`` (too large, unreadable). With a
    limiter, the call ``("limiter", "hit", ...)`` counts the request.
    """
    options = gate.options
    if query_string and options._param_names:
        name = _param_in(query_string, options._param_names)
        if name is not None:
            return _invalid(_NOT_IN_URL.format(name)), None
    token = _credential(options, gate.prefix, authorization, api_key)
    limits = gate.limits
    address = "unknown" if client is None else client
    principal: Principal | None = None
    if token is None:
        refusal = yield from _form_flow(options, content_type)
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
        if options.require_https and scheme not in _SECURE_SCHEMES and not _is_local(client):
            return _invalid(_NOT_HTTPS), None
        if limits is not None and limits._blocked:  # some address is blocked: is this one?
            wait = limits.blocked_for(address)
            if wait:
                return blocked_denial(wait), None
        result = yield from authenticate_flow(
            gate.settings,
            token,
            required_scopes=options.required_scopes,
            environment=gate.environment,
        )
        if limits is None:
            return result, None
        if isinstance(result, Denial):
            return (yield from failure_flow(limits, address, result)), None
        principal, counted, key_policy = result, result.key_id, result.rate_limit
    # The request is accepted: count it against every policy that applies, at once.
    policies = limits.policies(key_policy, method, path)
    if not policies:
        return principal, None
    key_id = None if principal is None else principal.key_id
    try:
        decision: RateLimitDecision = yield ("limiter", "hit", (counted, policies))
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
    formatters); path, method and client are escaped.
    """
    if isinstance(result, Denial):
        status = STATUS_BY_REASON[result.reason]
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
    method, path = _escape(method), _escape(path)
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
