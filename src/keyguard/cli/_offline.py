"""The commands that need no key store: ``generate``, ``check`` and ``hash``."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from .._errors import MalformedKeyError
from .._keys import generate_key, parse_key
from ._command import CommandError, hasher_from_environment, key_format, read_token

__all__ = ["check", "generate"]


def generate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """`generate`: the token on stdout (once), its key_id and stored form on stderr."""
    fmt = key_format(args)
    try:
        key = generate_key(fmt, args.environment)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    stored = hasher_from_environment().hash(key.secret)
    if args.json:
        json.dump(
            {
                "token": key.token,
                "key_id": key.key_id,
                "environment": key.environment,
                "secret_hash": stored,
            },
            out,
        )
        out.write("\n")
    else:
        out.write(f"{key.token}\n")
        err.write(
            f"key_id: {key.key_id}\nstored form: {stored}\n"
            "This key is shown once; keyguard keeps only its hash.\n"
        )
    return 0


def check(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """`check`: print the environment and key_id; `hash`: the stored form. Exit 1 if invalid."""
    try:
        parsed = parse_key(read_token(args.token, stdin), key_format(args))
    except MalformedKeyError as exc:
        err.write(f"invalid: {exc}\n")
        return 1
    if args.command == "hash":
        out.write(f"{hasher_from_environment().hash(parsed.secret)}\n")
    elif parsed.split:
        out.write(f"valid split key; key_id {parsed.key_id}\n")
    else:
        out.write(f"valid {parsed.environment} key; key_id {parsed.key_id}\n")
    return 0
