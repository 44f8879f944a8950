from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard import (
    DEFAULT_KEY_FORMAT,
    KeyFormat,
    KeyguardError,
    MalformedKeyError,
    checksum,
    generate_key,
    parse_key,
)
from keyguard._keys import BASE62, MAX_TOKEN_LENGTH

DESIGN_EXAMPLE = "sk_live_M65wXtYRmqlf_YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs2o7KnQ"

prefixes = st.from_regex(r"[a-z][a-z0-9]{1,15}", fullmatch=True)
env_words = st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True)
formats = st.builds(
    KeyFormat,
    prefix=prefixes,
    environments=st.lists(env_words, min_size=1, max_size=4, unique=True).map(tuple),
)


def test_design_example_parses() -> None:
    parsed = parse_key(DESIGN_EXAMPLE)
    assert parsed.key_id == "M65wXtYRmqlf"
    assert parsed.environment == "live"
    assert parsed.prefix == "sk"
    assert parsed.secret == "YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs"
    assert not parsed.split


def test_checksum_is_base62_crc32_left_padded() -> None:
    assert checksum("") == "000000"  # crc32(b"") == 0
    # crc32(b"a") == 0xE8B7BE43 == 3904355907
    value, digits = 3904355907, ""
    while value:
        value, rem = divmod(value, 62)
        digits = BASE62[rem] + digits
    assert checksum("a") == digits.rjust(6, "0")


def test_generated_key_shape() -> None:
    key = generate_key()
    assert key.token.startswith("sk_live_")
    assert len(key.token) == DEFAULT_KEY_FORMAT.token_length("live")
    assert len(key.key_id) == 12
    assert len(key.secret) == 32
    assert set(key.secret) <= set(BASE62)
    assert key.token not in repr(key)
    assert key.secret not in repr(key)


def test_generated_keys_differ() -> None:
    keys = {generate_key().token for _ in range(200)}
    assert len(keys) == 200


@settings(max_examples=200)
@given(fmt=formats, data=st.data())
def test_generate_parse_round_trip(fmt: KeyFormat, data: st.DataObject) -> None:
    env = data.draw(st.sampled_from(fmt.environments))
    key = generate_key(fmt, env)
    parsed = parse_key(key.token, fmt)
    assert (parsed.key_id, parsed.secret, parsed.environment, parsed.prefix) == (
        key.key_id,
        key.secret,
        env,
        fmt.prefix,
    )
    assert parsed.secret not in repr(parsed)


def _mutations(token: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["substitute", "delete", "insert", "swap"]))
    alphabet = BASE62 + "_-. "
    if kind == "delete":
        i = data.draw(st.integers(0, len(token) - 1))
        return token[:i] + token[i + 1 :]
    if kind == "insert":
        i = data.draw(st.integers(0, len(token)))
        return token[:i] + data.draw(st.sampled_from(alphabet)) + token[i:]
    if kind == "swap":
        i = data.draw(st.integers(0, len(token) - 2).filter(lambda j: token[j] != token[j + 1]))
        return token[:i] + token[i + 1] + token[i] + token[i + 2 :]
    i = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[i]))
    return token[:i] + char + token[i + 1 :]


def _drawn_token(data: st.DataObject) -> str:
    """A valid token made of drawn parts, so that Hypothesis can replay and shrink it
    (a token from ``generate_key`` would change between replays)."""
    environment = data.draw(st.sampled_from(["live", "test"]))
    key_id = data.draw(st.text(BASE62, min_size=12, max_size=12))
    secret = data.draw(st.text(BASE62, min_size=32, max_size=32))
    body = f"sk_{environment}_{key_id}_{secret}"
    return body + checksum(body)


@settings(max_examples=500)
@given(data=st.data())
def test_every_single_typo_is_rejected_offline(data: st.DataObject) -> None:
    token = _drawn_token(data)
    assert parse_key(token).key_id == token.split("_")[2]
    mutated = _mutations(token, data)
    assert mutated != token
    with pytest.raises(MalformedKeyError):
        parse_key(mutated)


def test_every_substitution_of_one_token_is_rejected() -> None:
    token = generate_key().token
    for i, original in enumerate(token):
        for char in BASE62 + "_":
            if char != original:
                with pytest.raises(MalformedKeyError):
                    parse_key(token[:i] + char + token[i + 1 :])


@settings(max_examples=300)
@given(text=st.text(max_size=600))
def test_arbitrary_text_raises_only_malformed_key_error(text: str) -> None:
    for fmt in (DEFAULT_KEY_FORMAT, KeyFormat(accept_split_keys=True)):
        message = ""
        try:
            parse_key(text, fmt)
        except MalformedKeyError as exc:  # anything else fails the test
            message = str(exc)
        assert len(text) < 20 or text not in message


VALID = generate_key().token


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(" " + VALID, "whitespace", id="leading-space"),
        pytest.param(VALID + "\n", "whitespace", id="trailing-newline"),
        pytest.param(VALID.upper(), "prefix", id="upper-case"),
        pytest.param(VALID.replace("_", "-"), "four", id="dashes"),
        pytest.param("pk" + VALID[2:], "prefix", id="wrong-prefix"),
        pytest.param(VALID.replace("_live_", "_prod_"), "environment", id="unknown-environment"),
        pytest.param(VALID[:-1], "38 characters", id="truncated"),
        pytest.param(VALID + "A", "38 characters", id="extended"),
        pytest.param(VALID[:-6] + "000000", "checksum", id="bad-checksum"),
        pytest.param(VALID[:9] + "é" + VALID[10:], "non-ASCII", id="non-ascii"),
        pytest.param(VALID[:9] + "\x00" + VALID[10:], "key id", id="nul"),
        pytest.param("x" * (MAX_TOKEN_LENGTH + 1), "too long", id="over-long"),
        pytest.param("a" * 100_000, "too long", id="huge"),
        pytest.param("abc.def", "split", id="split-not-accepted"),
        pytest.param("sk_live_" + "A" * 11 + "_" + "B" * 38, "key id", id="short-key-id"),
        pytest.param("sk_live_" + "A" * 12 + "_" + "B" * 37 + "!", "38 characters", id="bad-char"),
    ],
)
def test_malformed_tokens(token: str, message: str) -> None:
    with pytest.raises(MalformedKeyError, match=message) as info:
        parse_key(token)
    assert isinstance(info.value, KeyguardError)
    assert isinstance(info.value, ValueError)
    if len(token) > 10:
        assert token not in str(info.value)
        assert VALID[21:53] not in str(info.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(TypeError):
        parse_key(b"sk_live_x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("token", "key_id", "secret"),
    [
        pytest.param("abcd1234.s3cr3tValue", "abcd1234", "s3cr3tValue", id="drf-style"),
        pytest.param("id_with-dash.A+b/c=", "id_with-dash", "A+b/c=", id="punctuation"),
    ],
)
def test_split_keys_when_accepted(token: str, key_id: str, secret: str) -> None:
    parsed = parse_key(token, KeyFormat(accept_split_keys=True))
    assert (parsed.key_id, parsed.secret, parsed.split) == (key_id, secret, True)
    assert parsed.environment is None
    assert secret not in repr(parsed)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(".secret", id="no-identifier"),
        pytest.param("ident.", id="no-secret"),
        pytest.param("a.b.c", id="two-dots"),
        pytest.param("id ent.secret", id="space"),
        pytest.param("ident.sec ret", id="space-in-secret"),
        pytest.param("i" * 65 + ".secret", id="long-identifier"),
    ],
)
def test_bad_split_keys(token: str) -> None:
    with pytest.raises(MalformedKeyError):
        parse_key(token, KeyFormat(accept_split_keys=True))


def test_keyguard_keys_still_parse_with_split_keys_on() -> None:
    fmt = KeyFormat(accept_split_keys=True)
    key = generate_key(fmt)
    assert parse_key(key.token, fmt).key_id == key.key_id


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"prefix": "S"}, ValueError, id="prefix-too-short"),
        pytest.param({"prefix": "Sk"}, ValueError, id="prefix-upper"),
        pytest.param({"prefix": "1k"}, ValueError, id="prefix-digit-first"),
        pytest.param({"prefix": "s_k"}, ValueError, id="prefix-underscore"),
        pytest.param({"prefix": "a" * 17}, ValueError, id="prefix-too-long"),
        pytest.param({"environments": ()}, ValueError, id="no-environments"),
        pytest.param({"environments": ("Live",)}, ValueError, id="env-upper"),
        pytest.param({"environments": ("li_ve",)}, ValueError, id="env-underscore"),
        pytest.param({"environments": ("live", "live")}, ValueError, id="env-repeated"),
        pytest.param({"environments": "live"}, TypeError, id="env-string"),
    ],
)
def test_key_format_validation(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        KeyFormat(**kwargs)  # type: ignore[arg-type]


def test_custom_format() -> None:
    fmt = KeyFormat(prefix="acme", environments=["prod", "staging", "dev"])  # type: ignore[arg-type]
    assert fmt.environments == ("prod", "staging", "dev")
    key = generate_key(fmt)
    assert key.token.startswith("acme_prod_")
    with pytest.raises(MalformedKeyError):
        parse_key(key.token)  # default format: wrong prefix
    with pytest.raises(ValueError, match="environment"):
        generate_key(fmt, "live")


def test_base62_alphabet_order() -> None:
    assert string.digits + string.ascii_uppercase + string.ascii_lowercase == BASE62
