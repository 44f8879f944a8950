"""The ``keyguard`` command.

``keyguard generate`` makes a key (printed once), ``keyguard check TOKEN``
checks its format and checksum offline, ``keyguard hash TOKEN`` prints the
stored form of its secret. A TOKEN of ``-`` is read from standard input, which
keeps keys out of shell history and process listings.

``keyguard db init`` and ``keyguard keys create|list|show|revoke|rotate|import``
work on a key store (``--database-url``, default ``$KEYGUARD_DATABASE_URL`` or
the SQLite file ``keyguard.db``); revoke and rotate announce the change on the
Redis revocation broadcast when ``--redis-url`` or ``$KEYGUARD_REDIS_URL`` is set.
``keyguard clients create|list|show|revoke|rotate`` do the same for OAuth
clients (a client secret is printed once, by create and rotate), and
``keyguard oauth keygen --out PATH`` writes a signing key for the token endpoint
and prints its kid, never the key.

``keyguard demo`` serves a billing API on localhost with a fresh key, from an
installed package too (extra ``demo``).

Errors are one line on stderr and a non-zero exit, never a traceback. No
message repeats a token: one given where a key_id belongs (or a client secret
where a client_id belongs) is refused, naming only its key_id.

The modules, each importing only those below it (none imports this package)::

    _main       main(): parse, run the handler, print errors
    _parser     build_parser(): every command and option, with help text
    _offline    generate, check, hash
    _records    keys create|list|show|revoke|rotate|import, clients create|list|show|revoke|rotate
    _oauth      oauth keygen
    _store      db init; opening the store, its errors, the revocation broadcast
    _demo       demo (and demo --tour): serves _demo_app on localhost
    _demo_app   the demo's billing API on FastAPI (imported only when the demo runs)
    _tokens     a token given where a key_id belongs is refused, never printed
    _command    the command signature, CommandError, the settings commands read
"""

from ._command import hasher_from_environment
from ._main import main
from ._parser import build_parser

__all__ = ["build_parser", "hasher_from_environment", "main"]
