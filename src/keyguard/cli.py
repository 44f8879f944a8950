"""The ``keyguard`` command.

``keyguard generate`` makes a key (printed once), ``keyguard check TOKEN``
checks its format and checksum offline, ``keyguard hash TOKEN`` prints the
stored form of its secret. A TOKEN of ``-`` is read from standard input, which
keeps keys out of shell history and process listings.

Errors are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from ._errors import KeyguardError, MalformedKeyError
from ._hashing import HmacSecretHasher
from ._keys import KeyFormat, generate_key, parse_key

__all__ = ["main"]

#: Exit status for a usage or runtime error; 1 is "the key is not valid".
EXIT_ERROR = 2


class CommandError(Exception):
    """Stops a command with a one-line message (exit status 2)."""


def _key_format(args: argparse.Namespace) -> KeyFormat:
    try:
        return KeyFormat(
            prefix=args.prefix,
            environments=tuple(args.environments.split(",")),
            accept_split_keys=getattr(args, "split", False),
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _read_token(value: str, stdin: TextIO) -> str:
    if value == "-":
        return stdin.readline().rstrip("\r\n")
    return value


def hasher_from_environment(environ: dict[str, str] | None = None) -> HmacSecretHasher:
    """The default hasher, peppered from ``KEYGUARD_PEPPERS`` when set.

    ``KEYGUARD_PEPPERS`` is ``version:base64-pepper[,version:base64-pepper...]``;
    the first entry is the current one. Peppers never go on the command line.
    """
    env = os.environ if environ is None else environ
    spec = env.get("KEYGUARD_PEPPERS", "").strip()
    if not spec:
        return HmacSecretHasher()
    peppers: dict[str, bytes] = {}
    for item in spec.split(","):
        version, sep, encoded = item.strip().partition(":")
        if not sep:
            raise CommandError("KEYGUARD_PEPPERS must be 'version:base64[,version:base64...]'")
        try:
            peppers[version] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CommandError(f"KEYGUARD_PEPPERS: pepper {version!r} is not base64") from None
    try:
        return HmacSecretHasher(peppers, current=next(iter(peppers)))
    except ValueError as exc:
        raise CommandError(f"KEYGUARD_PEPPERS: {exc}") from None


def _cmd_generate(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    fmt = _key_format(args)
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


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """`check`: print the environment and key_id; `hash`: the stored form. Exit 1 if invalid."""
    try:
        parsed = parse_key(_read_token(args.token, stdin), _key_format(args))
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


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from ._flow import Denial  # noqa: PLC0415 (only the tour needs it)
    from ._manager import KeyManager  # noqa: PLC0415
    from .stores.memory import MemoryKeyStore  # noqa: PLC0415

    keys = KeyManager(MemoryKeyStore())
    issued = keys.create("acme", "demo key", scopes=["billing:read"])
    out.write(f"1. created a live key for owner 'acme' (shown once):\n   {issued.token}\n")
    scheme = issued.record.secret_hash.split("$", 1)[0]
    out.write(f"   stored: key_id={issued.key_id} and a {scheme} hash, never the key\n")
    steps = [
        ("the key itself", issued.token, ()),
        ("a typo (last character changed)", issued.token[:-1] + "x", ()),
        ("the key, asking for billing:write", issued.token, ("billing:write",)),
    ]
    for number, (label, token, scopes) in enumerate(steps, start=2):
        result = keys.authenticate(token, required_scopes=scopes)
        verdict = (
            f"denied: {result.reason.value} ({result.detail})"
            if isinstance(result, Denial)
            else f"allowed: owner={result.owner} scopes={sorted(result.scopes)}"
        )
        out.write(f"{number}. {label}\n   {verdict}\n")
    keys.revoke(issued.key_id)
    result = keys.authenticate(issued.token)
    verdict = result.reason.value if isinstance(result, Denial) else "allowed?"
    out.write(f"5. after revoke\n   denied: {verdict}\n")
    return 0


Command = Callable[[argparse.Namespace, TextIO, TextIO, TextIO], int]


def _add_format_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="sk", help="key prefix (default: sk)")
    parser.add_argument(
        "--environments",
        default="live,test",
        help="comma-separated environment words (default: live,test)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="keyguard", description="API keys for HTTP APIs: generate, check, hash."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", help="make a new key and print it once")
    _add_format_options(gen)
    gen.add_argument("--environment", help="environment word (default: the first, live)")
    gen.add_argument("--json", action="store_true", help="print a JSON object")
    gen.set_defaults(handler=_cmd_generate)

    check = sub.add_parser("check", help="check a key's format and checksum, offline")
    _add_format_options(check)
    check.add_argument("--split", action="store_true", help="also accept identifier.secret keys")
    check.add_argument("token", help="the key, or - to read it from standard input")
    check.set_defaults(handler=_cmd_check)

    hsh = sub.add_parser(
        "hash", help="print the stored form of a key's secret (peppered by KEYGUARD_PEPPERS)"
    )
    _add_format_options(hsh)
    hsh.add_argument("--split", action="store_true", help="also accept identifier.secret keys")
    hsh.add_argument("token", help="the key, or - to read it from standard input")
    hsh.set_defaults(handler=_cmd_check)
    demo = sub.add_parser("demo", help="a short tour of keys, checks and denials")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line; return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args, out, err, stdin or sys.stdin)
    except (CommandError, KeyguardError) as exc:
        err.write(f"keyguard: error: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`keyguard keys list | head`): not an error worth a traceback.
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
