"""The key format: generating, parsing and checksumming tokens.

A token is ``prefix "_" environment "_" key_id "_" secret checksum``::

    sk_live_M65wXtYRmqlf_YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs2o7KnQ

The key_id (12 base62 characters) is public and is what the store is keyed on;
the secret (32 base62 characters, about 190 bits from :mod:`secrets`) is never
stored, only its hash. The checksum (6 base62 characters, CRC-32 of everything
before it) lets anyone reject typos and garbage without touching storage.

Parsing is strict: anything but the exact grammar is a :class:`MalformedKeyError`,
and input longer than :data:`MAX_TOKEN_LENGTH` is refused before any other work.
"""

from __future__ import annotations

import re
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ._errors import MalformedKeyError

__all__ = [
    "BASE62",
    "DEFAULT_KEY_FORMAT",
    "MAX_TOKEN_LENGTH",
    "GeneratedKey",
    "KeyFormat",
    "ParsedKey",
    "checksum",
    "generate_key",
    "parse_key",
]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
#: Longer input is refused before it is inspected in any other way.
MAX_TOKEN_LENGTH = 512

_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,15}")
_ENVIRONMENT_RE = re.compile(r"[a-z][a-z0-9]{0,15}")
_BASE62_SET = frozenset(BASE62)
_SPLIT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SPLIT_SECRET_RE = re.compile(r"[A-Za-z0-9_+/=~-]{1,256}")


def _is_base62(text: str) -> bool:
    return all(c in _BASE62_SET for c in text)


_PAIRS = tuple(a + b for a in BASE62 for b in BASE62)  # 62**2 two-digit strings


def checksum(body: str) -> str:
    """Return the 6-character base62 CRC-32 of ``body`` (the token up to the checksum)."""
    value = zlib.crc32(body.encode("ascii"))
    high, low = divmod(value, 3844)
    high, mid = divmod(high, 3844)
    return _PAIRS[high] + _PAIRS[mid] + _PAIRS[low]


@dataclass(frozen=True, slots=True)
class KeyFormat:
    """What tokens look like for one API.

    Args:
        prefix: Identifies the issuer to readers and secret scanners:
            ``[a-z][a-z0-9]{1,15}``, default ``"sk"``.
        environments: The allowed environment words, lowercase; the first is
            the default for new keys.
        accept_split_keys: Also accept the classic ``identifier.secret`` form of
            keys imported from another system. Such keys carry no checksum, so
            every well-formed one costs a store lookup; leave this off unless
            you imported keys of that form.

    Raises:
        ValueError: A prefix or environment word does not fit the grammar.
        TypeError: ``environments`` is a single string instead of a collection.
    """

    prefix: str = "sk"
    environments: tuple[str, ...] = ("live", "test")
    accept_split_keys: bool = False
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(
                f"key prefix must be 2 to 16 characters of a-z and 0-9 starting with a letter, "
                f"got {self.prefix!r}"
            )
        envs: Iterable[str] = self.environments
        if isinstance(envs, str):
            raise TypeError(
                f"environments must be a collection of words, such as ('live', 'test'), "
                f"not the single string {envs!r}"
            )
        envs = tuple(envs)
        if not envs:
            raise ValueError("environments must name at least one environment, such as 'live'")
        for env in envs:
            if not isinstance(env, str) or not _ENVIRONMENT_RE.fullmatch(env):
                raise ValueError(
                    f"environment must be 1 to 16 characters of a-z and 0-9 starting with a "
                    f"letter, got {env!r}"
                )
        if len(set(envs)) != len(envs):
            raise ValueError(f"environments must not repeat a word: {envs!r}")
        object.__setattr__(self, "environments", envs)
        # The whole grammar in one compiled pattern: the valid-token path is one match
        # plus the checksum; the step-by-step checks below run only to explain a failure.
        object.__setattr__(
            self,
            "_pattern",
            re.compile(
                rf"({re.escape(self.prefix)})_({'|'.join(envs)})_([0-9A-Za-z]{{{KEY_ID_LENGTH}}})"
                rf"_([0-9A-Za-z]{{{SECRET_LENGTH}}})[0-9A-Za-z]{{{CHECKSUM_LENGTH}}}"
            ),
        )

    @property
    def default_environment(self) -> str:
        """The environment new keys get when none is named."""
        return self.environments[0]

    def token_length(self, environment: str) -> int:
        """Length of a token of this format for ``environment``."""
        return (
            len(self.prefix)
            + len(environment)
            + 3
            + KEY_ID_LENGTH
            + SECRET_LENGTH
            + (CHECKSUM_LENGTH)
        )


DEFAULT_KEY_FORMAT = KeyFormat()


class ParsedKey(NamedTuple):
    """A token taken apart. The secret is left out of the repr.

    For a classic split key (``identifier.secret``) ``split`` is true and
    ``prefix`` and ``environment`` are ``None``.
    """

    key_id: str
    secret: str
    prefix: str | None = None
    environment: str | None = None
    split: bool = False

    def __repr__(self) -> str:
        return (
            f"ParsedKey(key_id={self.key_id!r}, prefix={self.prefix!r}, "
            f"environment={self.environment!r}, split={self.split!r})"
        )


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A new key: the token to hand to the client exactly once, and its parts.

    Neither the token nor the secret appears in the repr.
    """

    token: str = field(repr=False)
    key_id: str
    secret: str = field(repr=False)
    prefix: str
    environment: str


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def generate_key(
    key_format: KeyFormat = DEFAULT_KEY_FORMAT, environment: str | None = None
) -> GeneratedKey:
    """Make a new random key.

    Args:
        key_format: The format (prefix and allowed environments).
        environment: One of ``key_format.environments``; default: the first.

    Raises:
        ValueError: ``environment`` is not one of the format's environments.
    """
    env = key_format.default_environment if environment is None else environment
    if env not in key_format.environments:
        raise ValueError(
            f"environment {env!r} is not one of {key_format.environments!r}; "
            f"add it to KeyFormat(environments=...) first"
        )
    key_id = _random_base62(KEY_ID_LENGTH)
    secret = _random_base62(SECRET_LENGTH)
    body = f"{key_format.prefix}_{env}_{key_id}_{secret}"
    return GeneratedKey(
        token=body + checksum(body),
        key_id=key_id,
        secret=secret,
        prefix=key_format.prefix,
        environment=env,
    )


def parse_key(token: str, key_format: KeyFormat = DEFAULT_KEY_FORMAT) -> ParsedKey:
    """Take a token apart and verify its checksum, without touching storage.

    Args:
        token: What the client sent, exactly (no trimming is done here).
        key_format: The format to accept.

    Returns:
        The parts of the token.

    Raises:
        MalformedKeyError: The token is not a key of this format. The message
            says what is wrong and never repeats the token.
        TypeError: ``token`` is not a string.
    """
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedKeyError(f"key is too long (more than {MAX_TOKEN_LENGTH} characters)")
    if not token:
        raise MalformedKeyError("key is empty")
    match = key_format._pattern.fullmatch(token)
    if match is not None:
        body = token[:-CHECKSUM_LENGTH]
        if checksum(body) != token[-CHECKSUM_LENGTH:]:
            raise MalformedKeyError(
                "key checksum does not match: the key was mistyped or truncated"
            )
        prefix, environment, key_id, secret = match.groups()
        return ParsedKey(key_id, secret, prefix, environment)
    return _explain(token, key_format)


def _explain(token: str, key_format: KeyFormat) -> ParsedKey:
    """Parse a token that failed the fast pattern: a split key, or a precise error."""
    if not token.isascii():
        raise MalformedKeyError("key contains non-ASCII characters")
    if token != token.strip():
        raise MalformedKeyError("key has leading or trailing whitespace")
    if "." in token:
        if key_format.accept_split_keys:
            return _parse_split(token)
        raise MalformedKeyError(
            "key contains '.', which keys of this format never do "
            "(split 'identifier.secret' keys are not accepted here)"
        )
    parts = token.split("_")
    if len(parts) != 4:
        raise MalformedKeyError(
            "key must have four '_'-separated parts: prefix, environment, key id, secret"
        )
    prefix, environment, key_id, tail = parts
    if prefix != key_format.prefix:
        raise MalformedKeyError(f"key prefix is not {key_format.prefix!r}")
    if environment not in key_format.environments:
        allowed = ", ".join(repr(env) for env in key_format.environments)
        raise MalformedKeyError(f"key environment is not one of {allowed}")
    if len(key_id) != KEY_ID_LENGTH or not _is_base62(key_id):
        raise MalformedKeyError(f"key id must be {KEY_ID_LENGTH} characters of 0-9, A-Z, a-z")
    if len(tail) != SECRET_LENGTH + CHECKSUM_LENGTH or not _is_base62(tail):
        raise MalformedKeyError(
            f"key secret and checksum must be {SECRET_LENGTH + CHECKSUM_LENGTH} characters "
            f"of 0-9, A-Z, a-z"
        )
    raise MalformedKeyError("key is malformed")  # pragma: no cover (the pattern matched it)


def is_valid_key_id(key_id: str) -> bool:
    """Return whether ``key_id`` can name a key: a keyguard id or a split-key identifier."""
    return isinstance(key_id, str) and _SPLIT_ID_RE.fullmatch(key_id) is not None


def _parse_split(token: str) -> ParsedKey:
    identifier, sep, secret = token.partition(".")
    if not sep or "." in secret:
        raise MalformedKeyError("split key must be 'identifier.secret' with exactly one '.'")
    if not _SPLIT_ID_RE.fullmatch(identifier):
        raise MalformedKeyError(
            "split key identifier must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'"
        )
    if not _SPLIT_SECRET_RE.fullmatch(secret):
        raise MalformedKeyError(
            "split key secret must be 1 to 256 characters of A-Z, a-z, 0-9 and _+/=~-"
        )
    return ParsedKey(key_id=identifier, secret=secret, split=True)
