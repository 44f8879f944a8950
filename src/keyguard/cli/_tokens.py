"""Keeping tokens out of what the command prints.

``keyguard keys revoke``, ``show`` and ``rotate`` take a key_id, and so does
``keys import --key-id``; ``keyguard clients show``, ``revoke`` and ``rotate``
take a client_id (an OAuth client's key_id). Pasting the whole token (or client
secret) there is an easy mistake, and a message that repeats the argument
(``no key with key_id 'sk_live_...'``) would put the secret on the screen, in
terminal scrollback, in CI logs and in the ticket the output is pasted into. So:

- An argument where a key_id belongs that carries a secret is refused before
  anything else is done with it, and the message names only its key_id, which
  is public. It carries a secret when it is a token of the configured format;
  anything of the token's shape from the key_id on, whatever its prefix,
  environment or case (``<prefix>_<environment>_<key_id>_<secret...>``, the
  checksum cut or characters added); a key_id followed by ``_`` and 16 or more
  base62 characters (a token without its prefix); or a split key
  ``identifier.secret``. Keys imported with identifiers of those shapes cannot
  be named on the command line; use :class:`keyguard.KeyManager` for them.
- No message repeats an argument that carries a secret or holds a run of
  base62 characters longer than a key_id (a piece of a token without its key_id
  is still secret): :func:`hide_secrets` puts ``[redacted]`` in its place. Such
  an argument still works where it is valid (a long imported key_id is looked
  up as given); only its echo is withheld.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .._errors import MalformedKeyError
from .._keys import KeyFormat, is_valid_key_id, parse_key
from .._redact import REDACTED
from ._command import CommandError

__all__ = [
    "NOT_A_CLIENT_ID",
    "NOT_A_KEY_ID",
    "SECRET_GIVEN",
    "TOKEN_GIVEN",
    "checked_key_id",
    "hide_secrets",
    "may_show",
]

TOKEN_GIVEN = "a token was given where a key_id belongs"  # noqa: S105 (a message)
NOT_A_KEY_ID = (
    "not a key_id: a key_id is 12 characters such as M65wXtYRmqlf, or 1 to 64 of A-Z, a-z, "
    "0-9, '_' and '-' for an imported key (keyguard keys list shows them)"
)
SECRET_GIVEN = "a client secret was given where a client_id belongs"  # noqa: S105 (a message)
NOT_A_CLIENT_ID = (
    "not a client_id: a client_id is 12 characters such as M65wXtYRmqlf "
    "(keyguard clients list shows them)"
)

# Group 1 is what may be shown (prefix, environment, key_id and the "_" after it),
# group 2 the key_id; what follows is secret.
_TOKEN_SHAPE = re.compile(
    r"(?<![0-9A-Za-z])((?i:[a-z][a-z0-9]{1,15}_[a-z][a-z0-9]{0,15})_([0-9A-Za-z]{12})_)"
    r"[0-9A-Za-z]+"
)
_BARE_SHAPE = re.compile(r"(?<![0-9A-Za-z])(([0-9A-Za-z]{12})_)[0-9A-Za-z]{16,}")
# Longer than a key_id: may be a piece of a secret.
_LONG_RUN = re.compile(r"[0-9A-Za-z]{13,}")


def _shaped_key_id(value: str) -> str | None:
    """The key_id of a token-shaped piece of ``value`` followed by secret characters."""
    for shape in (_TOKEN_SHAPE, _BARE_SHAPE):
        match = shape.search(value)
        if match is not None:
            return match[2]
    return None


def checked_key_id(value: str, key_format: KeyFormat, *, client: bool = False) -> str:
    """``value``, when it can be a key_id (with ``client``, an OAuth client's client_id,
    ``key_format`` then being the client secrets' format; the messages say so).

    Raises:
        CommandError: ``value`` carries a secret (the message names its key_id
            when it can be read) or cannot be a key_id. The message never
            repeats ``value``.
    """
    given, name, whose = (
        (SECRET_GIVEN, "client_id", "the") if client else (TOKEN_GIVEN, "key_id", "the key's")
    )
    try:
        key_id: str | None = parse_key(value.strip(), key_format).key_id
    except MalformedKeyError:
        key_id = _shaped_key_id(value)
    if key_id is None:
        identifier, dot, secret = value.strip().partition(".")
        if dot and secret:  # a split key: no key_id has a "."
            if not is_valid_key_id(identifier):
                raise CommandError(f"{given}; pass {whose} {name} alone")
            key_id = identifier
    if key_id is not None:
        raise CommandError(f"{given}; its {name} is {key_id}")
    if not is_valid_key_id(value):
        raise CommandError(NOT_A_CLIENT_ID if client else NOT_A_KEY_ID)
    return value


def may_show(argument: str) -> bool:
    """Whether a message may repeat ``argument``: nothing in it is token-shaped, and it holds
    no run of base62 characters longer than a key_id (a split key's secret is such a run)."""
    return _shaped_key_id(argument) is None and _LONG_RUN.search(argument) is None


def hide_secrets(text: str, arguments: Iterable[str] = ()) -> str:
    """``text`` without secrets.

    Each of ``arguments`` that :func:`may_show` refuses becomes ``[redacted]``,
    and anything token-shaped keeps its key_id and loses the rest. This is the
    last line of defence, for messages the command does not write itself:
    argparse's usage errors quote the arguments they refuse, and the key
    manager's errors the key_id they were given.
    """
    for argument in sorted(set(arguments), key=len, reverse=True):
        if argument and not may_show(argument):
            text = text.replace(argument, REDACTED)
    for shape in (_TOKEN_SHAPE, _BARE_SHAPE):
        text = shape.sub(rf"\1{REDACTED}", text)
    return text
