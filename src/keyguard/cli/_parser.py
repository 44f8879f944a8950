"""The command line's grammar: :func:`build_parser`, with every command and option.

Each subcommand's parser sets ``handler``, the function that runs it. Every
argument has help text: the documentation's command reference is generated
from this parser.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

from . import _demo, _oauth, _offline, _records, _store
from ._tokens import hide_secrets

__all__ = ["DISTRIBUTION_NAMES", "build_parser", "duration", "installed_version"]

#: The names keyguard is installed under, tried in order: ``keyguard-auth`` is the
#: distribution's name on PyPI; ``keyguard`` is what it was called before.
DISTRIBUTION_NAMES = ("keyguard-auth", "keyguard")

_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w``."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30d, 12h, 90m, 3600s or 2w, got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


def installed_version() -> str:
    """The version of the installed distribution, from its metadata; ``unknown`` without one."""
    import importlib.metadata  # noqa: PLC0415 (slow to import; only --version needs it)

    for name in DISTRIBUTION_NAMES:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors never repeat a secret.

    argparse quotes the arguments it refuses (``unrecognized arguments: ...``,
    ``argument --grace: ... got '...'``); each parser remembers the arguments it
    was given, and its errors hide those that may hold a secret. Subcommands'
    parsers are of this class too (``add_subparsers`` makes them so).
    """

    _given: Sequence[str] = ()

    # The one signature argparse calls; typeshed spells it as three overloads.
    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._given, namespace)

    def error(self, message: str) -> NoReturn:
        super().error(hide_secrets(message, self._given))


class _VersionAction(argparse.Action):
    """``--version``: like argparse's own, but the version is looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        sys.stdout.write(f"keyguard {installed_version()}\n")
        parser.exit()


def _add_format_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="sk", help="key prefix (default: sk)")
    parser.add_argument(
        "--environments",
        default="live,test",
        help="comma-separated environment words (default: live,test)",
    )


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the key store (default: $KEYGUARD_DATABASE_URL, "
        "else sqlite:///keyguard.db)",
    )
    parser.add_argument("--table", default="keyguard_keys", help="table name")
    parser.add_argument("--schema", help="PostgreSQL schema of the table")


def _add_broadcast_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url", help="announce the change on Redis (default: $KEYGUARD_REDIS_URL)"
    )
    parser.add_argument(
        "--redis-channel", default="keyguard:revocations", help="the revocation channel"
    )


def _add_key_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "key_id", help="the key's public key_id (as keys list shows it), never the token"
    )


def _add_offline_commands(sub: Any) -> None:
    gen = sub.add_parser("generate", help="make a new key and print it once")
    _add_format_options(gen)
    gen.add_argument("--environment", help="environment word (default: the first, live)")
    gen.add_argument("--json", action="store_true", help="print a JSON object")
    gen.set_defaults(handler=_offline.generate)

    check = sub.add_parser("check", help="check a key's format and checksum, offline")
    _add_format_options(check)
    check.add_argument("--split", action="store_true", help="also accept identifier.secret keys")
    check.add_argument("token", help="the key, or - to read it from standard input")
    check.set_defaults(handler=_offline.check)

    hsh = sub.add_parser(
        "hash", help="print the stored form of a key's secret (peppered by KEYGUARD_PEPPERS)"
    )
    _add_format_options(hsh)
    hsh.add_argument("--split", action="store_true", help="also accept identifier.secret keys")
    hsh.add_argument("token", help="the key, or - to read it from standard input")
    hsh.set_defaults(handler=_offline.check)


def _add_store_commands(sub: Any) -> None:
    db = sub.add_parser("db", help="the key store's database")
    db_sub = db.add_subparsers(
        dest="db_command", required=True, metavar="COMMAND", help="what to do with it"
    )
    init = db_sub.add_parser("init", help="create the keys table if it is missing")
    _add_store_options(init)
    _add_format_options(init)
    init.set_defaults(handler=_store.db_init)

    keys = sub.add_parser("keys", help="create, list, show, revoke, rotate and import keys")
    keys_sub = keys.add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND", help="what to do with the keys"
    )

    create = keys_sub.add_parser("create", help="create a key and print its token once")
    create.add_argument("--owner", required=True, help="who the key belongs to")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--environment", help="live or test (default: the first, live)")
    create.add_argument(
        "--scope", action="append", default=[], help="a granted scope (repeat for more)"
    )
    create.add_argument("--expires-in", type=duration, help="lifetime, such as 30d or 12h")
    create.add_argument("--rate-limit", help="per-key limit, such as 100/minute")
    create.set_defaults(handler=_records.keys_create)

    lst = keys_sub.add_parser(
        "list", help="list API keys (never their hashes; OAuth clients: clients list)"
    )
    lst.add_argument("--owner", help="only this owner's keys")
    lst.set_defaults(handler=_records.keys_list)

    show = keys_sub.add_parser("show", help="show one key")
    _add_key_id(show)
    show.set_defaults(handler=_records.keys_show)

    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    _add_key_id(revoke)
    _add_broadcast_options(revoke)
    revoke.set_defaults(handler=_records.keys_revoke)

    rotate = keys_sub.add_parser("rotate", help="issue a replacement; the old key expires later")
    _add_key_id(rotate)
    rotate.add_argument(
        "--grace", type=duration, default=timedelta(hours=24), help="old key's overlap (24h)"
    )
    _add_broadcast_options(rotate)
    rotate.set_defaults(handler=_records.keys_rotate)

    imp = keys_sub.add_parser("import", help="store a key made elsewhere, by its existing hash")
    imp.add_argument("--key-id", required=True, help="the key's public identifier")
    imp.add_argument(
        "--secret-hash", required=True, help="its stored hash (bcrypt, ...), or - for stdin"
    )
    imp.add_argument("--owner", required=True, help="who the key belongs to")
    imp.add_argument("--name", default="", help="what the key is for")
    imp.add_argument("--environment", default="live", help="the key's environment (default: live)")
    imp.add_argument(
        "--scope", action="append", default=[], help="a granted scope (repeat for more)"
    )
    imp.add_argument("--expires-in", type=duration, help="lifetime from now, such as 30d or 12h")
    imp.set_defaults(handler=_records.keys_import)

    for parser in (create, lst, show, revoke, rotate, imp):
        _add_store_options(parser)
        _add_format_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _add_client_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "client_id",
        help="the client's public client_id (as clients list shows it), never its secret",
    )


def _add_client_commands(sub: Any) -> None:
    clients = sub.add_parser(
        "clients", help="create, list, show, revoke and rotate OAuth clients (client credentials)"
    )
    clients_sub = clients.add_subparsers(
        dest="clients_command", required=True, metavar="COMMAND", help="what to do with them"
    )

    create = clients_sub.add_parser(
        "create", help="create a client and print its client_id and its secret, once"
    )
    create.add_argument("--owner", required=True, help="who the client belongs to")
    create.add_argument("--name", default="", help="what the client is for")
    create.add_argument("--environment", help="live or test (default: the first, live)")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        help="a scope its tokens may carry (repeat for more)",
    )
    create.add_argument("--expires-in", type=duration, help="lifetime, such as 90d or 12h")
    create.add_argument(
        "--rate-limit", help="limit of its API requests with tokens, such as 100/minute"
    )
    create.set_defaults(handler=_records.clients_create)

    lst = clients_sub.add_parser("list", help="list clients (never their hashes)")
    lst.add_argument("--owner", help="only this owner's clients")
    lst.set_defaults(handler=_records.clients_list)

    show = clients_sub.add_parser("show", help="show one client")
    _add_client_id(show)
    show.set_defaults(handler=_records.clients_show)

    revoke = clients_sub.add_parser(
        "revoke", help="revoke a client at once: no more tokens, and its tokens are refused"
    )
    _add_client_id(revoke)
    _add_broadcast_options(revoke)
    revoke.set_defaults(handler=_records.clients_revoke)

    rotate = clients_sub.add_parser(
        "rotate", help="issue a replacement client; the old one expires later"
    )
    _add_client_id(rotate)
    rotate.add_argument(
        "--grace", type=duration, default=timedelta(hours=24), help="old client's overlap (24h)"
    )
    _add_broadcast_options(rotate)
    rotate.set_defaults(handler=_records.clients_rotate)

    for parser in (create, lst, show, revoke, rotate):
        _add_store_options(parser)
        _add_format_options(parser)
        parser.add_argument(
            "--client-secret-prefix",
            default="cs",
            help="prefix of client secrets (default: cs); it must differ from the key prefix",
        )
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _add_oauth_commands(sub: Any) -> None:
    oauth = sub.add_parser("oauth", help="the authorization server's signing keys")
    oauth_sub = oauth.add_subparsers(
        dest="oauth_command", required=True, metavar="COMMAND", help="what to do"
    )
    keygen = oauth_sub.add_parser(
        "keygen", help="write a new private signing key file (mode 0600) and print its kid"
    )
    keygen.add_argument(
        "--out", required=True, help="the file to create; an existing file is never overwritten"
    )
    keygen.add_argument(
        "--algorithm",
        choices=("ES256", "RS256", "EdDSA"),
        default="ES256",
        help="ES256 (EC P-256, the default), RS256 (RSA 3072) or EdDSA (Ed25519)",
    )
    keygen.add_argument(
        "--json", action="store_true", help="print a JSON object (kid, algorithm, path)"
    )
    keygen.set_defaults(handler=_oauth.keygen)


def _add_demo_command(sub: Any) -> None:
    demo = sub.add_parser(
        "demo", help="serve a billing API on localhost with a live key, and curl lines to try"
    )
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    demo.add_argument(
        "--check", action="store_true", help="make the requests, print the answers, and exit"
    )
    demo.add_argument(
        "--tour", action="store_true", help="instead, a short offline tour of keys and denials"
    )
    demo.set_defaults(handler=_demo.demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand.

    Each subcommand's namespace carries ``handler``, the function that runs it.
    """
    parser = _Parser(
        prog="keyguard",
        description="API keys and OAuth clients for HTTP APIs: make, check and manage them.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print keyguard's version and exit"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="the command to run"
    )
    _add_offline_commands(sub)
    _add_store_commands(sub)
    _add_client_commands(sub)
    _add_oauth_commands(sub)
    _add_demo_command(sub)
    return parser
