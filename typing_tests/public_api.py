"""Uses the public API as an application would; checked by mypy --strict, not run."""

from __future__ import annotations

import logging
from datetime import timedelta

import keyguard
from keyguard import (
    AsyncKeyManager,
    Denial,
    HmacSecretHasher,
    IssuedKey,
    KeyFormat,
    KeyManager,
    KeyRecord,
    PasslibHasher,
    Policy,
    Principal,
)
from keyguard.stores import AsyncKeyStore, KeyStore, MemoryKeyStore


def sync_app() -> str:
    store: KeyStore = MemoryKeyStore()
    keys = KeyManager(
        store,
        key_format=KeyFormat(prefix="acme", environments=("live", "test")),
        hasher=HmacSecretHasher({"v1": b"0" * 32}),
        legacy_hashers=[PasslibHasher()],
    )
    issued: IssuedKey = keys.create(
        "customer-1",
        "deploy bot",
        scopes=["billing:read"],
        expires_in=timedelta(days=90),
        rate_limit=Policy.parse("100/minute", name="per-key"),
    )
    result: Principal | Denial = keys.authenticate(issued.token, required_scopes=["billing:read"])
    if isinstance(result, Denial):
        return result.reason.value
    record: KeyRecord = keys.revoke(result.key_id)
    return record.key_id


async def async_app() -> bool:
    store: AsyncKeyStore = MemoryKeyStore()
    keys = AsyncKeyManager(store)
    issued = await keys.create("customer-2")
    rotated = await keys.rotate(issued.key_id, grace=timedelta(hours=1))
    result = await keys.authenticate(rotated.token)
    return bool(result) and keyguard.parse_key(rotated.token).key_id == rotated.key_id


def server_logs() -> None:
    redact = keyguard.RedactKeys(KeyFormat(prefix="acme"), query_param_names=["api_key"])
    logging.getLogger("uvicorn.access").addFilter(redact)
    text: str = redact.redact("GET /invoices?api_key=acme_live_...")
    del text


def peppered_from_the_environment() -> KeyManager:
    hasher: HmacSecretHasher = HmacSecretHasher.from_environment({"KEYGUARD_PEPPERS": ""})
    versions: tuple[str, ...] = hasher.versions
    missing: str | None = hasher.missing_pepper("hmac-sha256$v0$00")
    del versions, missing
    return KeyManager(MemoryKeyStore(), hasher=HmacSecretHasher.from_environment())
