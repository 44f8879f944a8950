from __future__ import annotations

import hashlib
import hmac

import pytest

from keyguard import (
    HmacSecretHasher,
    PasslibHasher,
    SecretHasher,
    SecretTooLongError,
    VerifiedSecretCache,
)
from keyguard.testing import FakeClock

SECRET = "YvcmInz8IPd6wyHrsvMXo8eaDATs2aRs"
PEPPER1 = b"p" * 32
PEPPER2 = b"q" * 32


def test_sha256_without_pepper() -> None:
    hasher = HmacSecretHasher()
    stored = hasher.hash(SECRET)
    assert stored == "sha256$" + hashlib.sha256(SECRET.encode()).hexdigest()
    assert hasher.verify(SECRET, stored)
    assert not hasher.verify(SECRET + "x", stored)
    assert not hasher.needs_rehash(stored)
    assert isinstance(hasher, SecretHasher)
    assert hasher.slow is False


def test_hmac_with_pepper() -> None:
    hasher = HmacSecretHasher({"v1": PEPPER1})
    stored = hasher.hash(SECRET)
    digest = hmac.new(PEPPER1, SECRET.encode(), hashlib.sha256).hexdigest()
    assert stored == f"hmac-sha256$v1${digest}"
    assert hasher.verify(SECRET, stored)
    assert not hasher.verify(SECRET[:-1], stored)


def test_several_peppers_accepted_one_current() -> None:
    old = HmacSecretHasher({"v1": PEPPER1})
    both = HmacSecretHasher({"v1": PEPPER1, "v2": PEPPER2}, current="v2")
    old_stored = old.hash(SECRET)
    assert both.verify(SECRET, old_stored)
    assert both.needs_rehash(old_stored)
    new_stored = both.hash(SECRET)
    assert new_stored.startswith("hmac-sha256$v2$")
    assert not both.needs_rehash(new_stored)
    # Unpeppered hashes still verify after a pepper is introduced, and get upgraded.
    plain = HmacSecretHasher().hash(SECRET)
    assert both.verify(SECRET, plain)
    assert both.needs_rehash(plain)


def test_unknown_pepper_version_does_not_verify() -> None:
    stored = HmacSecretHasher({"v9": PEPPER1}).hash(SECRET)
    hasher = HmacSecretHasher({"v1": PEPPER1})
    assert not hasher.identify(stored)
    assert not hasher.verify(SECRET, stored)


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param("", id="empty"),
        pytest.param("sha256$", id="no-digest"),
        pytest.param("sha256$zz", id="garbage-digest"),
        pytest.param("sha256$é", id="non-ascii-digest"),
        pytest.param("md5$abc", id="foreign-scheme"),
        pytest.param("$2b$12$abcdefghijklmnopqrstuv", id="bcrypt"),
        pytest.param("hmac-sha256$v1", id="hmac-no-digest"),
    ],
)
def test_foreign_or_broken_stored_forms_never_verify(stored: str) -> None:
    hasher = HmacSecretHasher({"v1": PEPPER1})
    assert not hasher.verify(SECRET, stored)


@pytest.mark.parametrize(
    ("peppers", "current"),
    [
        pytest.param({"v1": b"short"}, None, id="short-pepper"),
        pytest.param({"v1": "p" * 32}, None, id="str-pepper"),
        pytest.param({"": PEPPER1}, None, id="empty-version"),
        pytest.param({"v$1": PEPPER1}, None, id="dollar-in-version"),
        pytest.param({"v1": PEPPER1, "v2": PEPPER2}, None, id="several-without-current"),
        pytest.param({"v1": PEPPER1}, "v2", id="unknown-current"),
    ],
)
def test_pepper_configuration_errors(peppers: dict[str, bytes], current: str | None) -> None:
    with pytest.raises(ValueError, match="pepper") as info:
        HmacSecretHasher(peppers, current=current)
    for pepper in peppers.values():
        assert str(pepper) not in str(info.value)


def test_repr_shows_no_pepper() -> None:
    text = repr(HmacSecretHasher({"v1": PEPPER1}))
    assert "ppp" not in text
    assert "v1" in text


@pytest.fixture(scope="module")
def passlib_hasher() -> PasslibHasher:
    from passlib.context import CryptContext

    # The lowest bcrypt cost keeps the suite fast; the behaviour is the same.
    return PasslibHasher(CryptContext(schemes=["bcrypt", "argon2"], bcrypt__rounds=4))


def test_passlib_bcrypt_and_argon2(passlib_hasher: PasslibHasher) -> None:
    from passlib.hash import argon2

    bcrypt_stored = passlib_hasher.hash(SECRET)
    assert bcrypt_stored.startswith("$2b$")
    assert passlib_hasher.identify(bcrypt_stored)
    assert passlib_hasher.verify(SECRET, bcrypt_stored)
    assert not passlib_hasher.verify(SECRET + "x", bcrypt_stored)
    assert passlib_hasher.needs_rehash(bcrypt_stored)
    argon_stored = argon2.using(rounds=1, memory_cost=1024).hash(SECRET)
    assert passlib_hasher.verify(SECRET, argon_stored)
    assert passlib_hasher.slow is True
    assert not passlib_hasher.identify("sha256$abc")
    assert not passlib_hasher.verify(SECRET, "sha256$abc")


def test_bcrypt_over_72_bytes_is_a_clear_error(passlib_hasher: PasslibHasher) -> None:
    stored = passlib_hasher.hash(SECRET)
    long_secret = "s" * 73
    with pytest.raises(SecretTooLongError, match="72 bytes") as info:
        passlib_hasher.verify(long_secret, stored)
    assert long_secret not in str(info.value)
    with pytest.raises(SecretTooLongError):
        passlib_hasher.hash(long_secret)
    assert passlib_hasher.verify("s" * 72, passlib_hasher.hash("s" * 72))


def test_verified_cache_hit_miss_and_ttl() -> None:
    clock = FakeClock()
    cache = VerifiedSecretCache(max_size=10, ttl=60, clock=clock.monotonic)
    assert not cache.check("k1", "$2b$stored", SECRET)
    cache.remember("k1", "$2b$stored", SECRET)
    assert cache.check("k1", "$2b$stored", SECRET)
    assert not cache.check("k1", "$2b$stored", SECRET + "x")
    assert not cache.check("k1", "$2b$other", SECRET), "a changed stored hash must miss"
    cache.remember("k1", "$2b$stored", SECRET)
    clock.advance(59)
    assert cache.check("k1", "$2b$stored", SECRET)
    clock.advance(61)
    assert not cache.check("k1", "$2b$stored", SECRET)
    assert SECRET not in repr(cache)


def test_verified_cache_discard_and_lru_bound() -> None:
    cache = VerifiedSecretCache(max_size=2, ttl=60, clock=FakeClock().monotonic)
    cache.remember("a", "h", SECRET)
    cache.remember("b", "h", SECRET)
    assert cache.check("a", "h", SECRET)  # a is now the most recently used
    cache.remember("c", "h", SECRET)
    assert len(cache) == 2
    assert not cache.check("b", "h", SECRET)
    assert cache.check("a", "h", SECRET)
    cache.discard("a")
    assert not cache.check("a", "h", SECRET)
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize(
    "kwargs", [pytest.param({"max_size": 0}, id="size"), pytest.param({"ttl": 0}, id="ttl")]
)
def test_verified_cache_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        VerifiedSecretCache(**kwargs)  # type: ignore[arg-type]
