"""Signing keys, key sets, the JWKS document and RFC 7638 thumbprints."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyguard.oauth import (
    ALGORITHMS,
    KeySet,
    PublicKey,
    SigningKey,
    generate_signing_key,
    jwk_thumbprint,
    load_signing_key,
)

# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
    "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6We"
    "Zu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_thumbprint_of_the_rfc_7638_example() -> None:
    assert jwk_thumbprint(RFC7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param({"kty": "oct", "k": "c2VjcmV0"}, id="symmetric"),
        pytest.param({"kty": "EC", "crv": "P-256", "x": "AA"}, id="missing-y"),
        pytest.param({}, id="empty"),
    ],
)
def test_thumbprint_refuses_keys_it_cannot_name(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"thumbprint|lacks"):
        jwk_thumbprint(jwk)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_signs_and_its_public_jwk_verifies(algorithm: str) -> None:
    key = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    token = key.sign({"sub": "c1"})
    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "kid": key.kid, "typ": "at+jwt"}
    assert key.kid == jwk_thumbprint(key.public.jwk)
    # A third party builds the key from the published JWK alone.
    published = PublicKey.from_jwk(KeySet(key).jwks()["keys"][0])
    assert jwt.decode(token, published.pyjwk, algorithms=[algorithm]) == {"sub": "c1"}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_jwks_has_public_members_only(algorithm: str) -> None:
    key = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    (jwk,) = KeySet(key).jwks()["keys"]
    assert set(jwk) <= {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}
    assert jwk["use"] == "sig"
    assert jwk["alg"] == algorithm
    assert "PRIVATE" not in repr(key)


def test_keys_of_other_types_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        SigningKey(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="2048"):
        SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    with pytest.raises(ValueError, match="private key"):
        SigningKey(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(ValueError, match="algorithm"):
        SigningKey.generate("HS256")  # type: ignore[arg-type]


def test_a_jwk_whose_alg_contradicts_its_key_is_refused() -> None:
    jwk = SigningKey.generate("ES256").public.jwk
    for alg in ("HS256", "RS256", "none"):
        with pytest.raises(ValueError, match="JWK"):
            PublicKey(dict(jwk, alg=alg))


def test_generate_signing_key_writes_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    key = generate_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signing_key(path).kid == key.kid
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never overwrites"):
        generate_signing_key(path, "EdDSA")
    assert path.read_bytes() == before


def test_load_signing_key_refuses_what_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "not-a-key.pem"
    path.write_text("hello")
    with pytest.raises(ValueError, match="no readable PEM private key"):
        load_signing_key(path)


def test_key_set_one_signs_all_verify() -> None:
    old, current, upcoming = (SigningKey.generate() for _ in range(3))
    keys = KeySet(current, verify_only=[old, upcoming.public])
    assert keys.signing is current
    assert [k.kid for k in keys.keys] == [current.kid, old.kid, upcoming.kid]
    assert keys.get(old.kid) is not None
    assert keys.get("nope") is None
    with pytest.raises(ValueError, match="share the kid"):
        KeySet(current, verify_only=[current])


CLAIMS = {"iss": "https://auth.example.com", "sub": "c1", "aud": "https://api.example.com",
          "iat": 1700000000, "exp": 1700000600, "scope": "a b", "owner": "Zoë \"q\" \\ \u2028",
          "n": 1.5, "list": [1, "x"], "map": {"k": None, "t": True}}  # fmt: skip


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_deterministic_signatures_are_pyjwts_to_the_byte(algorithm: str) -> None:
    key = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    expected = jwt.encode(
        CLAIMS, key._private, algorithm=algorithm, headers={"typ": "at+jwt", "kid": key.kid}
    )
    assert key.sign(CLAIMS) == expected


def test_es256_signs_pyjwts_header_and_payload_with_a_raw_r_s_signature() -> None:
    key = SigningKey.generate("ES256")
    expected = jwt.encode(
        CLAIMS, key._private, algorithm="ES256", headers={"typ": "at+jwt", "kid": key.kid}
    )
    for _ in range(200):  # some r or s with a leading zero byte among them, most likely
        token = key.sign(CLAIMS)
        signing_input, _, signature = token.rpartition(".")
        assert signing_input == expected.rpartition(".")[0]
        assert len(signature) == 86  # 64 bytes, r || s (RFC 7518 §3.4), not DER
        assert jwt.decode(token, key.public.pyjwk, algorithms=["ES256"], audience=CLAIMS["aud"],
                          options={"verify_exp": False}) == CLAIMS  # fmt: skip
        assert key.public.verify(signing_input.encode(), jwt.utils.base64url_decode(signature))


def test_claims_that_are_a_mapping_but_not_a_dict_are_signed_alike() -> None:
    from types import MappingProxyType

    key = SigningKey.generate("EdDSA")
    assert key.sign(MappingProxyType(CLAIMS)) == key.sign(CLAIMS)
