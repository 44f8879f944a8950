"""Signing keys for access tokens: :class:`SigningKey`, :class:`KeySet`, and their JWKS.

keyguard signs with PyJWT (``PyJWT[crypto]``) behind these small classes, so
that the rest of the library knows a key by what it does (sign, verify, be
published) and never by PyJWT's types. Three algorithms are supported, each
tied to one key type, so a token can never pick a different algorithm for a
key than the one the key was made for:

=========  ==========================  =====================================
algorithm  key                         note
=========  ==========================  =====================================
``ES256``  EC P-256                    the default: small tokens, fast signing
``RS256``  RSA, 2048 bits or more      for verifiers that know only RSA
``EdDSA``  Ed25519                     fast, deterministic signatures
=========  ==========================  =====================================

A key's ``kid`` is its RFC 7638 JWK thumbprint (SHA-256 of the canonical
public members), so it names the key itself and cannot drift from it.

Rotation: a :class:`KeySet` holds one key that signs and any number that only
verify. Publish the next key (``verify_only``) ahead of time, switch signing
to it, and drop the old one once every token it signed has expired (the
longest token lifetime after the switch).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

try:
    import jwt
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.oauth needs PyJWT with its crypto extra: pip install 'keyguard-auth[oauth]'"
    ) from exc

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "KeySet",
    "PublicKey",
    "SigningKey",
    "generate_signing_key",
    "jwk_thumbprint",
    "load_signing_key",
]

Algorithm = Literal["ES256", "RS256", "EdDSA"]
#: The signing algorithms keyguard makes and accepts by default.
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("ES256", "RS256", "EdDSA")
_RSA_BITS: Final = 3072
_MIN_RSA_BITS: Final = 2048
#: The members RFC 7638 §3.2 hashes, per key type, in lexicographic order.
_THUMBPRINT_MEMBERS: Final = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                              "OKP": ("crv", "kty", "x")}  # fmt: skip
#: Public members a published JWK may carry; anything else (``d``, ``p``, ``q``...) never is.
_PUBLIC_MEMBERS: Final = frozenset({"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"})


#: One compact JSON encoder for every token (``json.dumps`` with options builds one per call).
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_PKCS1V15: Final = padding.PKCS1v15()
_SHA256: Final = hashes.SHA256()


def _b64url_bytes(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _b64url(text: str) -> str:
    return _b64url_bytes(text.encode("utf-8")).decode("ascii")


def _sign_es256(private: Any, data: bytes) -> bytes:
    # JWS wants r || s, each 32 bytes big-endian (RFC 7518 §3.4), not the DER cryptography makes.
    r, s = decode_dss_signature(private.sign(data, _ECDSA_SHA256))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _sign_rs256(private: Any, data: bytes) -> bytes:
    return private.sign(data, _PKCS1V15, _SHA256)  # type: ignore[no-any-return]


def _sign_eddsa(private: Any, data: bytes) -> bytes:
    return private.sign(data)  # type: ignore[no-any-return]


_SIGNERS: Final = {"ES256": _sign_es256, "RS256": _sign_rs256, "EdDSA": _sign_eddsa}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of a JWK: base64url SHA-256 of its required public members.

    Raises:
        ValueError: The key type is not EC, RSA or OKP, or a required member is missing.
    """
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no thumbprint for a key of type {jwk.get('kty')!r}")
    try:
        canonical = {name: jwk[name] for name in members}
    except KeyError as exc:
        raise ValueError(f"the JWK lacks its member {exc.args[0]!r}") from None
    text = json.dumps(canonical, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _public_jwk(public: Any, algorithm: str) -> dict[str, Any]:
    if algorithm == "ES256":
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif algorithm == "RS256":
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk = {k: v for k, v in jwk.items() if k in _PUBLIC_MEMBERS}
    jwk["kid"] = jwk_thumbprint(jwk)
    jwk["alg"] = algorithm
    jwk["use"] = "sig"
    return jwk


def _algorithm_of(key: Any) -> Algorithm:
    """The one algorithm a (private or public) key is used with; refuses any other key."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(  # noqa: TRY004 (the right type, the wrong curve)
                f"EC keys must be on P-256 (for ES256), not {key.curve.name}"
            )
        return "ES256"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {_MIN_RSA_BITS} bits")
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ValueError(
        f"unsupported key type {type(key).__name__}: use EC P-256 (ES256), RSA (RS256) "
        f"or Ed25519 (EdDSA)"
    )


class PublicKey:
    """A key that verifies signatures: its algorithm, ``kid`` and public JWK.

    Built from a local key (:attr:`SigningKey.public`) or a JWK fetched from
    another issuer's JWKS (:meth:`from_jwk`). Verification is bound to the
    key's one algorithm.
    """

    __slots__ = ("_prepared", "_verifier", "algorithm", "jwk", "kid", "pyjwk")

    def __init__(self, jwk: Mapping[str, Any], *, kid: str | None = None) -> None:
        """Build from a public JWK.

        Raises:
            ValueError: The JWK is not a supported public key, or its ``alg``
                is not the algorithm its key type is used with.
        """
        members = {k: v for k, v in jwk.items() if k in _PUBLIC_MEMBERS}
        try:
            pyjwk = jwt.PyJWK(members)
        except (jwt.PyJWTError, NotImplementedError, ValueError, TypeError) as exc:
            raise ValueError(f"not a usable public JWK: {type(exc).__name__} {exc}") from None
        algorithm = _algorithm_of(pyjwk.key)
        if pyjwk.algorithm_name != algorithm:
            raise ValueError(
                f"the JWK says alg {pyjwk.algorithm_name!r}, but its key is used with {algorithm}"
            )
        self.algorithm: Algorithm = algorithm
        self.pyjwk = pyjwk
        self.kid: str = kid if kid is not None else str(members.get("kid") or "")
        if not self.kid:
            self.kid = jwk_thumbprint(members)
        self.jwk = {**members, "kid": self.kid, "alg": algorithm}
        self._verifier = pyjwk.Algorithm
        self._prepared = pyjwk.Algorithm.prepare_key(pyjwk.key)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` signs ``signing_input`` under this key, with its one
        algorithm (PyJWT's algorithm object, the key prepared once)."""
        try:
            return bool(self._verifier.verify(signing_input, self._prepared, signature))
        except (ValueError, TypeError):  # a signature of the wrong length or form
            return False

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """A key from a JWK of a JWKS document (its own ``kid``, else its thumbprint)."""
        return cls(jwk)

    def __repr__(self) -> str:
        return f"PublicKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


class SigningKey:
    """A private key that signs access tokens.

    Args:
        private_key: A ``cryptography`` private key: EC P-256, RSA (2048 bits
            or more) or Ed25519. Its type decides the algorithm.

    Raises:
        ValueError: The key is of another type or size.
    """

    __slots__ = ("_headers", "_private", "_signer", "algorithm", "kid", "public")

    def __init__(self, private_key: Any) -> None:
        self.algorithm: Algorithm = _algorithm_of(private_key)
        if not isinstance(
            private_key,
            ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
        ):
            raise ValueError(  # noqa: TRY004 (a key, but the wrong half)
                "a SigningKey needs a private key; a public key only verifies"
            )
        self._private = private_key
        jwk = _public_jwk(private_key.public_key(), self.algorithm)
        self.kid: str = jwk["kid"]
        #: The public half, as verifiers and the JWKS document see it.
        self.public = PublicKey(jwk)
        #: Signs bytes with this key's one algorithm, in the JWS form of its signature.
        self._signer = _SIGNERS[self.algorithm]
        self._headers: dict[str, bytes] = {}

    def __repr__(self) -> str:  # never the private key
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r})"

    @classmethod
    def generate(cls, algorithm: Algorithm = "ES256") -> SigningKey:
        """A new random key for ``algorithm`` (RSA keys have 3072 bits)."""
        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "RS256":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS))
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")

    def sign(self, claims: Mapping[str, Any], *, typ: str = "at+jwt") -> str:
        """The compact JWS (RFC 7515 §7.1) of ``claims``, with ``alg``, ``kid`` and ``typ``
        in its header.

        The same JWS as PyJWT's ``jwt.encode`` makes (compact JSON, base64url
        without padding, an ES256 signature as ``r || s``), made with less work
        per token: the header segment is encoded once per ``typ``, the claims by
        one reused JSON encoder, and the signature by the ``cryptography`` key
        directly. What ``jwt.encode`` does besides the signature costs about as
        much as the rest of a token request.
        """
        document = claims if type(claims) is dict else dict(claims)
        return self._sign_payload(_COMPACT.encode(document).encode("ascii"), typ)

    def _sign_payload(self, payload: bytes, typ: str) -> str:
        """The compact JWS of ``payload``: claims already written as one compact JSON
        object, in ASCII (the token endpoint writes its claims itself, each string escaped
        by ``json.dumps``)."""
        header = self._headers.get(typ)
        if header is None:
            header = self._headers[typ] = _b64url_bytes(
                _COMPACT.encode({"alg": self.algorithm, "kid": self.kid, "typ": typ}).encode()
            )
        signing_input = header + b"." + _b64url_bytes(payload)
        signature = self._signer(self._private, signing_input)
        return (signing_input + b"." + _b64url_bytes(signature)).decode("ascii")

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM: keep it like a password."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate_signing_key(
    path: str | os.PathLike[str], algorithm: Algorithm = "ES256"
) -> SigningKey:
    """Make a new signing key and write it to ``path`` (PKCS#8 PEM, mode 0600).

    The file is created exclusively: an existing file is never overwritten,
    since that would silently invalidate every token the old key signed.

    Raises:
        FileExistsError: ``path`` exists.
        ValueError: ``algorithm`` is not one of ``ES256``, ``RS256``, ``EdDSA``.
    """
    key = SigningKey.generate(algorithm)
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(
            f"{target} exists; keyguard never overwrites a signing key (remove it first, "
            f"or write the new key elsewhere and rotate)"
        ) from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, key.private_pem())
    finally:
        os.close(fd)
    return key


def load_signing_key(path: str | os.PathLike[str], password: bytes | None = None) -> SigningKey:
    """Read a PEM private key (as :func:`generate_signing_key` writes them).

    Raises:
        ValueError: The file holds no supported private key.
        OSError: It cannot be read.
    """
    data = Path(path).read_bytes()
    try:
        private = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} holds no readable PEM private key ({exc})") from None
    return SigningKey(private)


class KeySet:
    """The keys of one issuer: one signs, all verify, all are published.

    Args:
        signing: The key that signs new tokens.
        verify_only: Keys that still verify (the previous key, until the
            tokens it signed expire) or already are published (the next key,
            so verifiers that cache the JWKS know it before it signs).

    Raises:
        ValueError: Two keys share a ``kid``.
    """

    __slots__ = ("_by_kid", "signing")

    def __init__(
        self, signing: SigningKey, verify_only: Iterable[SigningKey | PublicKey] = ()
    ) -> None:
        self.signing = signing
        keys: dict[str, PublicKey] = {signing.kid: signing.public}
        for key in verify_only:
            public = key.public if isinstance(key, SigningKey) else key
            if not isinstance(public, PublicKey):
                raise TypeError(f"verify_only takes SigningKey or PublicKey, got {key!r}")
            if public.kid in keys:
                raise ValueError(f"two keys share the kid {public.kid!r}")
            keys[public.kid] = public
        self._by_kid = keys

    def __repr__(self) -> str:
        return f"KeySet(signing={self.signing.kid!r}, kids={list(self._by_kid)!r})"

    @property
    def keys(self) -> Sequence[PublicKey]:
        """Every key that verifies, the signing key first."""
        return list(self._by_kid.values())

    def get(self, kid: str) -> PublicKey | None:
        """The verifying key named ``kid``, or None."""
        return self._by_kid.get(kid)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (RFC 7517 §5): public members only, never ``d``, ``p``, ``q``..."""
        return {"keys": [dict(key.jwk) for key in self._by_kid.values()]}
