"""The OAuth API as a user types it (checked by mypy, not run)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from flask import Flask

from keyguard import AsyncKeyManager, KeyguardMiddleware, KeyguardWSGIMiddleware, KeyManager
from keyguard._types import ASGIApp, WSGIApp
from keyguard.integrations import fastapi as kg_fastapi
from keyguard.integrations import flask as kg_flask
from keyguard.oauth import (
    AuthorizationServer,
    JWTVerifier,
    KeySet,
    RemoteJWKS,
    SigningKey,
    generate_signing_key,
    load_signing_key,
)
from keyguard.oauth.asgi import AuthorizationServerApp
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from keyguard.stores import MemoryKeyStore


def asgi(api: ASGIApp) -> AuthorizationServerApp:
    manager = AsyncKeyManager(MemoryKeyStore(), client_secret_prefix="acs")
    keys = KeySet(load_signing_key("signing.pem"), verify_only=[SigningKey.generate("EdDSA")])
    server = AuthorizationServer(
        manager,
        keys,
        issuer="https://api.example.com",
        audiences=["https://api.example.com"],
        token_lifetime=timedelta(minutes=5),
    )
    verifier = JWTVerifier(issuer=server.issuer, audience="https://api.example.com", keys=keys)
    return AuthorizationServerApp(
        server, app=KeyguardMiddleware(api, manager, jwt_verifier=verifier)
    )


def wsgi(api: WSGIApp) -> AuthorizationServerWSGIApp:
    manager = KeyManager(MemoryKeyStore())
    keys = KeySet(generate_signing_key("new.pem", "RS256"))
    issued = manager.create_client("acme", scopes=["a"])
    kind: str = issued.record.kind
    print(kind, issued.key_id)
    external = JWTVerifier(
        issuer="https://login.example",
        audience="https://api.example.com",
        keys=RemoteJWKS("https://login.example/jwks.json", refetch_interval=60),
        owner_claim="org",
    )
    server = AuthorizationServer(manager, keys, issuer="https://a.example", audiences="https://a")
    return AuthorizationServerWSGIApp(
        server, app=KeyguardWSGIMiddleware(api, manager, jwt_verifier=external)
    )


def integrations() -> None:
    """The integrations serve an authorization server given to them."""
    keys = KeySet(load_signing_key("signing.pem"))
    async_manager = AsyncKeyManager(MemoryKeyStore())
    async_server = AuthorizationServer(
        async_manager, keys, issuer="https://api.example.com", audiences="https://api.example.com"
    )
    kg_fastapi.Keyguard(async_manager, authorization_server=async_server).init_app(FastAPI())
    manager = KeyManager(MemoryKeyStore())
    server = AuthorizationServer(
        manager, keys, issuer="https://api.example.com", audiences="https://api.example.com"
    )
    kg_flask.Keyguard(Flask(__name__), manager, authorization_server=server)
