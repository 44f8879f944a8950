"""OAuth 2.0 client credentials: a token endpoint, RFC 9068 JWT access tokens, JWKS.

Install with ``pip install 'keyguard-auth[oauth]'`` (PyJWT with its crypto extra).
See docs/oauth.md.
"""

from ._jwt import DEFAULT_LEEWAY, JWTVerifier
from ._remote import RemoteJWKS
from ._server import (
    DEFAULT_TOKEN_LIFETIME,
    DEFAULT_TOKEN_RATE_LIMIT,
    AuthorizationServer,
    OAuthResponse,
    TokenRequest,
    token_flow,
)
from ._signing import (
    ALGORITHMS,
    Algorithm,
    KeySet,
    PublicKey,
    SigningKey,
    generate_signing_key,
    jwk_thumbprint,
    load_signing_key,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_LEEWAY",
    "DEFAULT_TOKEN_LIFETIME",
    "DEFAULT_TOKEN_RATE_LIMIT",
    "Algorithm",
    "AuthorizationServer",
    "JWTVerifier",
    "KeySet",
    "OAuthResponse",
    "PublicKey",
    "RemoteJWKS",
    "SigningKey",
    "TokenRequest",
    "generate_signing_key",
    "jwk_thumbprint",
    "load_signing_key",
    "token_flow",
]
