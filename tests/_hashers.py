"""A hasher for tests that count how many secrets were hashed to be checked."""

from __future__ import annotations

from keyguard import HmacSecretHasher


class CountingHasher(HmacSecretHasher):
    """An :class:`HmacSecretHasher` that counts its ``verify`` calls in ``verifies``."""

    def __init__(self) -> None:
        super().__init__()
        self.verifies = 0

    def verify(self, secret: str, stored: str) -> bool:
        self.verifies += 1
        return super().verify(secret, stored)
