"""The fast paths of verification agree with the definitions they speed up."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard import (
    DEFAULT_KEY_FORMAT,
    HmacSecretHasher,
    KeyFormat,
    MalformedKeyError,
    checksum,
    generate_key,
    parse_key,
)
from keyguard._keys import BASE62


def _reference_checksum(body: str) -> str:
    value = zlib.crc32(body.encode("ascii"))
    digits = []
    while value:
        value, rem = divmod(value, 62)
        digits.append(BASE62[rem])
    return "".join(reversed(digits)).rjust(6, "0")


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_table_checksum_matches_the_base62_definition(body: str) -> None:
    assert checksum(body) == _reference_checksum(body)


def test_checksum_extremes_are_six_digits() -> None:
    # crc32 of b"" is 0; the largest crc32 values still fit in six base62 digits.
    assert checksum("") == "000000"
    assert len(_reference_checksum("\x00" * 3)) == 6


def _reference_parse(token: str, fmt: KeyFormat) -> object:
    """The key grammar checked step by step, as DESIGN.md states it."""
    if not token or len(token) > 512 or not token.isascii() or "." in token:
        return "malformed"
    parts = token.split("_")
    if len(parts) != 4:
        return "malformed"
    prefix, environment, key_id, tail = parts
    if prefix != fmt.prefix or environment not in fmt.environments:
        return "malformed"
    if len(key_id) != 12 or any(c not in BASE62 for c in key_id):
        return "malformed"
    if len(tail) != 38 or any(c not in BASE62 for c in tail):
        return "malformed"
    if _reference_checksum(token[:-6]) != token[-6:]:
        return "malformed"
    return (key_id, tail[:32], prefix, environment)


def _outcome(token: str, fmt: KeyFormat) -> object:
    try:
        parsed = parse_key(token, fmt)
    except MalformedKeyError:
        return "malformed"
    return (parsed.key_id, parsed.secret, parsed.prefix, parsed.environment)


_FORMATS = [DEFAULT_KEY_FORMAT, KeyFormat(prefix="acme", environments=("prod", "dev", "prod2"))]


@st.composite
def _mutated_tokens(draw: st.DrawFn) -> tuple[str, KeyFormat]:
    fmt = draw(st.sampled_from(_FORMATS))
    token = generate_key(fmt, draw(st.sampled_from(fmt.environments))).token
    edit = draw(st.sampled_from(["keep", "replace", "insert", "delete", "append", "other"]))
    at = draw(st.integers(0, len(token) - 1))
    char = draw(st.sampled_from([*"_.aZ9 -\n\x00é", *BASE62[:3]]))
    if edit == "replace":
        token = token[:at] + char + token[at + 1 :]
    elif edit == "insert":
        token = token[:at] + char + token[at:]
    elif edit == "delete":
        token = token[:at] + token[at + 1 :]
    elif edit == "append":
        token += char
    elif edit == "other":
        token = draw(st.text(max_size=70))
    if len(token) > 6 and token.isascii() and draw(st.booleans()):
        # A valid checksum over the edited body, so that only the grammar can refuse it.
        token = token[:-6] + checksum(token[:-6])
    return token, fmt


@settings(max_examples=400)
@given(_mutated_tokens())
def test_fast_path_agrees_with_the_full_grammar(case: tuple[str, KeyFormat]) -> None:
    token, fmt = case
    assert _outcome(token, fmt) == _reference_parse(token, fmt)


def test_fast_path_parses_a_generated_key() -> None:
    key = generate_key()
    parsed = parse_key(key.token)
    assert (parsed.key_id, parsed.secret, parsed.prefix, parsed.environment, parsed.split) == (
        key.key_id,
        key.secret,
        "sk",
        "live",
        False,
    )


def test_a_bad_checksum_on_the_fast_path_says_so() -> None:
    token = generate_key().token
    last = "0" if token[-1] != "0" else "1"
    with pytest.raises(MalformedKeyError, match="checksum"):
        parse_key(token[:-1] + last)


def test_hasher_split_memo_keeps_verification_exact() -> None:
    hasher = HmacSecretHasher({"v1": b"p" * 32})
    stored = hasher.hash("s" * 32)
    for _ in range(3):
        assert hasher.verify("s" * 32, stored)
        assert not hasher.verify("t" * 32, stored)
    assert not hasher.verify("s" * 32, "hmac-sha256$v2$" + stored.rsplit("$", 1)[1])
    assert not hasher.needs_rehash(stored)
