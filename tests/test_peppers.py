"""Peppers are configured one way (``HmacSecretHasher.from_environment``), and a key hashed
with a pepper version the app lacks is refused like a wrong secret and said so in the log:
one WARNING per key and interval, with the key_id and the version, never a secret."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyguard import (
    AsyncKeyManager,
    Denial,
    DenialReason,
    HmacSecretHasher,
    KeyChanges,
    KeyManager,
    checksum,
    parse_key,
)
from keyguard._hashing import stored_hash_warnings
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock

SECRET = "YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs"
PEPPER1 = b"p" * 32
PEPPER2 = b"q" * 32
B64_1 = base64.b64encode(PEPPER1).decode()
B64_2 = base64.b64encode(PEPPER2).decode()


def _env(value: str) -> dict[str, str]:
    return {"KEYGUARD_PEPPERS": value}


# -- reading KEYGUARD_PEPPERS -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "versions"),
    [
        pytest.param(None, (), id="unset"),
        pytest.param("   ", (), id="blank"),
        pytest.param(f"v1:{B64_1}", ("v1",), id="one"),
        pytest.param(f"v2:{B64_2},v1:{B64_1}", ("v2", "v1"), id="two-first-current"),
        pytest.param(f" v2 : {B64_2} ,\tv1:{B64_1} ", ("v2", "v1"), id="spaces"),
        pytest.param(f"2026-01:{B64_1}", ("2026-01",), id="dated-version"),
    ],
)
def test_the_variable_configures_the_hasher(value: str | None, versions: tuple[str, ...]) -> None:
    hasher = HmacSecretHasher.from_environment({} if value is None else _env(value))
    assert hasher.versions == versions
    by_hand = {"v1": PEPPER1, "v2": PEPPER2, "2026-01": PEPPER1}
    expected = HmacSecretHasher(
        {v: by_hand[v] for v in versions}, current=versions[0] if versions else None
    )
    assert hasher.hash(SECRET) == expected.hash(SECRET)
    for version in versions:  # every version is accepted, the first one makes new hashes
        assert hasher.verify(SECRET, HmacSecretHasher({version: by_hand[version]}).hash(SECRET))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(B64_1, "entry 1 has no 'version:'", id="no-version"),
        pytest.param(f"v1:{B64_1},", "entry 2 has no 'version:'", id="trailing-comma"),
        pytest.param(f":{B64_1}", "entry 1 has no 'version:'", id="empty-version"),
        pytest.param(f"v1:{B64_1},v1:{B64_2}", "'v1' is given twice", id="version-twice"),
        pytest.param("v1:not base64!", "'v1' is not standard base64", id="not-base64"),
        pytest.param(f"v1:{B64_1[:-1]}", "'v1' is not standard base64", id="bad-padding"),
        pytest.param("v1:c2hvcnQ=", "at least 16 bytes", id="too-short"),
        pytest.param(f"v$1:{B64_1}", "word of letters, digits", id="bad-version-name"),
    ],
)
def test_a_malformed_variable_is_a_clear_error_without_the_pepper(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        HmacSecretHasher.from_environment(_env(value))
    assert str(caught.value).startswith("KEYGUARD_PEPPERS")
    assert B64_1 not in str(caught.value)
    assert B64_2 not in str(caught.value)


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYGUARD_PEPPERS", f"v9:{B64_2}")
    assert HmacSecretHasher.from_environment().versions == ("v9",)
    monkeypatch.delenv("KEYGUARD_PEPPERS")
    assert HmacSecretHasher.from_environment().hash(SECRET).startswith("sha256$")


_VERSIONS = st.from_regex(r"[A-Za-z0-9-]{0,6}[A-Za-z0-9][A-Za-z0-9-]{0,6}", fullmatch=True)


@given(st.dictionaries(_VERSIONS, st.binary(min_size=16, max_size=64), min_size=1, max_size=4))
def test_any_peppers_written_to_the_variable_read_back_the_same(peppers: dict[str, bytes]) -> None:
    value = ",".join(f"{v}:{base64.b64encode(p).decode()}" for v, p in peppers.items())
    current = next(iter(peppers))
    read = HmacSecretHasher.from_environment(_env(value))
    assert read.hash(SECRET) == HmacSecretHasher(peppers, current=current).hash(SECRET)
    assert read.versions[0] == current
    assert sorted(read.versions) == sorted(peppers)


# -- telling a missing pepper ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "missing"),
    [
        pytest.param(HmacSecretHasher({"v9": PEPPER1}).hash(SECRET), "v9", id="other-version"),
        pytest.param(HmacSecretHasher({"v1": PEPPER2}).hash(SECRET), None, id="own-version"),
        pytest.param(HmacSecretHasher().hash(SECRET), None, id="plain-sha256"),
        pytest.param("$2b$12$abcdefghijklmnopqrstuv", None, id="bcrypt"),
        pytest.param("hmac-sha256$v9", None, id="no-digest"),
        pytest.param("hmac-sha256$v 9$abc", None, id="version-not-a-word"),
        pytest.param("hmac-sha256$--$abc", None, id="version-only-dashes"),
        pytest.param("hmac-sha256$" + "v" * 65 + "$abc", None, id="version-too-long"),
        pytest.param("oauth-client$hmac-sha256$v9$abc", None, id="marked-form"),
    ],
)
def test_missing_pepper_names_only_a_version_it_lacks(stored: str, missing: str | None) -> None:
    hasher = HmacSecretHasher({"v1": PEPPER1})
    assert hasher.missing_pepper(stored) == missing
    if missing is not None:  # a hash it cannot check: no secret verifies against it
        assert not hasher.verify(SECRET, stored)


# -- the warning ---------------------------------------------------------------------------


@pytest.fixture
def warnings_clock() -> Iterator[FakeClock]:
    """The process's stored-hash warnings on a fake clock, forgotten before and after."""
    clock = FakeClock()
    saved = stored_hash_warnings.clock
    stored_hash_warnings.clock = clock.monotonic
    stored_hash_warnings.reset()
    yield clock
    stored_hash_warnings.clock = saved
    stored_hash_warnings.reset()


def _wrong_secret(token: str) -> str:
    """The same key with another secret, and a valid checksum: a lookup, then a mismatch."""
    parsed = parse_key(token)
    body = f"sk_live_{parsed.key_id}_{parsed.secret[::-1]}"
    return body + checksum(body)


def _key_id(token: str) -> str:
    return parse_key(token).key_id


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "keyguard"]


def _assert_no_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        text = f"{record.getMessage()} {record.args!r} {record.__dict__!r}"
        for secret in secrets:
            assert secret not in text, f"{secret[:8]}... logged by {record.name}"


def _keys_made_with_v1_and_v2(store: MemoryKeyStore) -> tuple[str, str, str]:
    """Three keys in ``store``: two hashed with pepper v1, one with v2."""
    old = KeyManager(store, hasher=HmacSecretHasher({"v1": PEPPER1}))
    new = KeyManager(store, hasher=HmacSecretHasher({"v2": PEPPER2}))
    return old.create("acme").token, old.create("acme").token, new.create("acme").token


def test_a_key_of_a_missing_pepper_is_warned_once_per_key_and_interval(
    caplog: pytest.LogCaptureFixture, warnings_clock: FakeClock
) -> None:
    store = MemoryKeyStore()
    first, second, current = _keys_made_with_v1_and_v2(store)
    app = KeyManager(store, hasher=HmacSecretHasher({"v2": PEPPER2}))  # v1 was dropped
    caplog.set_level(logging.INFO)
    wrong_secret = app.authenticate(_wrong_secret(current))
    for _ in range(5):
        refused = app.authenticate(first)
        assert isinstance(refused, Denial)
        assert refused.reason is DenialReason.WRONG_SECRET  # a client learns nothing more
    assert isinstance(wrong_secret, Denial)
    assert app.authenticate(second).reason is DenialReason.WRONG_SECRET  # type: ignore[union-attr]
    assert not isinstance(app.authenticate(current), Denial)

    first_id, second_id = _key_id(first), _key_id(second)
    warned = _warnings(caplog)
    assert [(r.args[0], r.args[1]) for r in warned] == [(first_id, "v1"), (second_id, "v1")]  # type: ignore[index]
    assert "pepper version 'v1'" in warned[0].getMessage()
    assert "it has 'v2'" in warned[0].getMessage()
    stored = [store.get(_key_id(t)).secret_hash for t in (first, second, current)]  # type: ignore[union-attr]
    secrets = [parse_key(t).secret for t in (first, second, current)]
    _assert_no_secret(caplog, B64_1, B64_2, *secrets, *stored, *(h.split("$")[-1] for h in stored))

    caplog.clear()
    warnings_clock.advance(299)
    app.authenticate(first)
    assert _warnings(caplog) == []
    warnings_clock.advance(1)
    app.authenticate(first)
    (again,) = _warnings(caplog)
    assert again.args[0] == first_id  # type: ignore[index]
    assert again.getMessage().endswith("; 5 more times since the last warning")


@pytest.mark.anyio
async def test_the_async_path_warns_the_same(
    caplog: pytest.LogCaptureFixture, warnings_clock: FakeClock
) -> None:
    store = MemoryKeyStore()
    first, _, _ = _keys_made_with_v1_and_v2(store)
    app = AsyncKeyManager(store, hasher=HmacSecretHasher({"v2": PEPPER2}))
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert isinstance(await app.authenticate(first), Denial)
    (warned,) = _warnings(caplog)
    assert warned.args[:2] == (_key_id(first), "v1")  # type: ignore[index]
    await app.aclose()


def test_a_hash_no_hasher_knows_is_warned_once_too(
    caplog: pytest.LogCaptureFixture, warnings_clock: FakeClock
) -> None:
    store = MemoryKeyStore()
    token = KeyManager(store).create("acme").token
    key_id = _key_id(token)
    store.update(key_id, KeyChanges(secret_hash="$2b$12$" + "a" * 53))  # bcrypt, no passlib
    app = KeyManager(store)
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert isinstance(app.authenticate(token), Denial)
    (warned,) = _warnings(caplog)
    assert warned.args == (key_id,)
    assert "no configured hasher understands" in warned.getMessage()


def test_a_wrong_secret_is_not_warned(
    caplog: pytest.LogCaptureFixture, warnings_clock: FakeClock
) -> None:
    store = MemoryKeyStore()
    app = KeyManager(store, hasher=HmacSecretHasher({"v1": PEPPER1}))
    token = app.create("acme").token
    caplog.set_level(logging.INFO)
    refused = app.authenticate(_wrong_secret(token))
    assert isinstance(refused, Denial)
    assert refused.reason is DenialReason.WRONG_SECRET
    assert _warnings(caplog) == []
