"""What every command shares: its signature, how it stops, and the settings it reads.

A command is a function ``(args, stdout, stderr, stdin) -> exit status``. It
stops early by raising :class:`CommandError`, which :func:`keyguard.cli.main`
prints as one line on stderr (exit status 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TextIO

from .._hashing import HmacSecretHasher
from .._keys import KeyFormat

__all__ = [
    "EXIT_ERROR",
    "Command",
    "CommandError",
    "hasher_from_environment",
    "key_format",
    "read_token",
]

#: Exit status for a usage or runtime error; 1 is "the key is not valid".
EXIT_ERROR = 2

Command = Callable[[argparse.Namespace, TextIO, TextIO, TextIO], int]


class CommandError(Exception):
    """Stops a command with a one-line message (exit status 2)."""


def key_format(args: argparse.Namespace) -> KeyFormat:
    """The key format named by ``--prefix``, ``--environments`` and ``--split``."""
    try:
        return KeyFormat(
            prefix=args.prefix,
            environments=tuple(args.environments.split(",")),
            accept_split_keys=getattr(args, "split", False),
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def read_token(value: str, stdin: TextIO) -> str:
    """``value``, or the first line of standard input when ``value`` is ``-``."""
    if value == "-":
        return stdin.readline().rstrip("\r\n")
    return value


def hasher_from_environment(environ: Mapping[str, str] | None = None) -> HmacSecretHasher:
    """The hasher of ``KEYGUARD_PEPPERS``: :meth:`HmacSecretHasher.from_environment`,
    whose error becomes a one-line command error.

    The library reads the variable, so that the command and the apps built with
    the same method hash alike. Peppers never go on the command line.
    """
    try:
        return HmacSecretHasher.from_environment(environ)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
