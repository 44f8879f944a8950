"""Key generation, parsing and verification, with the default hasher and with bcrypt."""

from __future__ import annotations

from collections.abc import Iterator

from _harness import Row, time_sync

import keyguard
from keyguard import HmacSecretHasher, KeyManager, PasslibHasher, generate_key, parse_key
from keyguard.stores import MemoryKeyStore


def rows() -> Iterator[Row]:
    key = generate_key()
    yield Row("keys", "generate_key", time_sync(generate_key))
    yield Row("keys", "parse_key (format + checksum)", time_sync(lambda: parse_key(key.token)))

    manager = KeyManager(MemoryKeyStore())
    issued = manager.create("bench")
    yield Row(
        "keys",
        "authenticate, sha256 default hasher (memory store)",
        time_sync(lambda: manager.authenticate(issued.token)),
    )
    peppered = KeyManager(MemoryKeyStore(), hasher=HmacSecretHasher({"v1": b"p" * 32}))
    issued_p = peppered.create("bench")
    yield Row(
        "keys",
        "authenticate, hmac-sha256 peppered hasher",
        time_sync(lambda: peppered.authenticate(issued_p.token)),
    )

    # An imported bcrypt key, kept as bcrypt (no upgrade) to measure the cache itself.
    passlib = PasslibHasher()
    secret = "Imp0rtedSecretFromTheOldSystem00"
    for label, cached in (("with", True), ("without", False)):
        bcrypt_manager = KeyManager(
            MemoryKeyStore(),
            legacy_hashers=[passlib],
            upgrade_hashes=False,
            verified_cache=cached,
            key_format=keyguard.KeyFormat(accept_split_keys=True),
        )
        bcrypt_manager.import_key(
            "legacy01", passlib.hash(secret), owner="bench", environment="live"
        )
        token = f"legacy01.{secret}"
        assert bcrypt_manager.authenticate(token)
        yield Row(
            "keys",
            f"authenticate, imported bcrypt key, {label} verified-secret cache",
            time_sync(lambda m=bcrypt_manager, t=token: m.authenticate(t), repeat=3),
        )
