"""``keyguard oauth keygen``: a signing key file for the authorization server.

The key is written by :func:`keyguard.oauth.generate_signing_key`: PKCS#8 PEM,
mode 0600, created exclusively (an existing file is never overwritten, which
would invalidate every token the old key signed). The command prints the key's
``kid`` (its RFC 7638 thumbprint, as the JWKS and each token's header show it)
and never the private key.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from ._command import CommandError

__all__ = ["keygen"]

_NEXT_STEPS = (
    "Name the file in KEYGUARD_OAUTH_SIGNING_KEYS (paths separated by commas): the first "
    "key signs, the others are published and verify (the next key of a rotation, or the "
    "previous one). Keep the file as secret as a password."
)


def keygen(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """`oauth keygen`: write the key file, print its kid (stdout) and what to do next (stderr)."""
    try:
        from ..oauth import generate_signing_key  # noqa: PLC0415 (the oauth extra)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    try:
        key = generate_signing_key(args.out, args.algorithm)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.json:
        json.dump({"kid": key.kid, "algorithm": key.algorithm, "path": str(args.out)}, out)
        out.write("\n")
    else:
        out.write(f"{key.kid}\n")
        err.write(f"wrote a new {key.algorithm} signing key to {args.out} (mode 0600)\n")
    err.write(_NEXT_STEPS + "\n")
    return 0
