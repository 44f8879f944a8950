"""Key generation, parsing and verification, with the default hasher and with bcrypt.

The verification rows run with ``token_memo=False``: the memo spares a repeated
token its parse and hash altogether, which would leave the hashers unmeasured.
One row shows the memo on its own. Each bcrypt row first checks that it runs
bcrypt exactly as often as its label says.
"""

from __future__ import annotations

from collections.abc import Iterator

from _harness import Row, time_sync

import keyguard
from keyguard import HmacSecretHasher, KeyManager, PasslibHasher, generate_key, parse_key
from keyguard.stores import MemoryKeyStore


class _CountingPasslib(PasslibHasher):
    verifies = 0

    def verify(self, secret: str, stored: str) -> bool:
        self.verifies += 1
        return super().verify(secret, stored)


def rows() -> Iterator[Row]:
    key = generate_key()
    yield Row("keys", "generate_key", time_sync(generate_key))
    yield Row("keys", "parse_key (format + checksum)", time_sync(lambda: parse_key(key.token)))

    manager = KeyManager(MemoryKeyStore(), token_memo=False)
    issued = manager.create("bench")
    yield Row(
        "keys",
        "authenticate, sha256 default hasher (memory store)",
        time_sync(lambda: manager.authenticate(issued.token)),
    )
    memo = KeyManager(MemoryKeyStore())
    issued_m = memo.create("bench")
    yield Row(
        "keys",
        "authenticate, a repeated token (verified-token memo)",
        time_sync(lambda: memo.authenticate(issued_m.token)),
    )
    peppered = KeyManager(
        MemoryKeyStore(), hasher=HmacSecretHasher({"v1": b"p" * 32}), token_memo=False
    )
    issued_p = peppered.create("bench")
    yield Row(
        "keys",
        "authenticate, hmac-sha256 peppered hasher",
        time_sync(lambda: peppered.authenticate(issued_p.token)),
    )

    # An imported bcrypt key, kept as bcrypt (no upgrade) to measure the cache itself.
    passlib = _CountingPasslib()
    secret = "Imp0rtedSecretFromTheOldSystem00"
    for label, cached in (("with", True), ("without", False)):
        bcrypt_manager = KeyManager(
            MemoryKeyStore(),
            legacy_hashers=[passlib],
            upgrade_hashes=False,
            verified_cache=cached,
            token_memo=False,
            key_format=keyguard.KeyFormat(accept_split_keys=True),
        )
        bcrypt_manager.import_key(
            "legacy01", passlib.hash(secret), owner="bench", environment="live"
        )
        token = f"legacy01.{secret}"
        passlib.verifies = 0
        assert bcrypt_manager.authenticate(token)
        assert bcrypt_manager.authenticate(token)
        expected = 1 if cached else 2
        assert passlib.verifies == expected, f"bcrypt ran {passlib.verifies} times, not {expected}"
        yield Row(
            "keys",
            f"authenticate, imported bcrypt key, {label} verified-secret cache",
            time_sync(lambda m=bcrypt_manager, t=token: m.authenticate(t), repeat=3),
        )
