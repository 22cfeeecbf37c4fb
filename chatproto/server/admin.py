"""``chatproto-admin``: manage accounts and show the server fingerprint.

Subcommands: ``add-user NAME``, ``reset-password NAME``, ``delete-user NAME``, ``list-users``,
``fingerprint``. Passwords come from ``--password-file``, ``--password-stdin``, standard input
when it is not a terminal, or are prompted twice; they and their hashes are never printed or
logged. Hashes use the server's Argon2id cost (the same ``--argon2-*`` options and defaults as
``twistd chatserver``). The commands work on an existing database only: they never create one
(a mistyped ``--database`` path is an error, not a new empty database).

Exit codes: 0 success, 1 failure (user exists, no such user, bad password, ...), 2 usage.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from twisted.internet import task, threads

from chatproto.server.identity import IdentityError, identity_fingerprint, load_identity
from chatproto.server.passwords import Argon2Parameters, hash_password, password_policy_error
from chatproto.server.tap import DEFAULT_DATABASE, DEFAULT_IDENTITY, MIN_ARGON2
from chatproto.storage.database import Database, engine_from_uri
from chatproto.storage.store import ChatStore, NameTaken
from chatproto.wire.messages import NAME_PATTERN

OK, FAILED, USAGE = 0, 1, 2

#: The rule of user names (``NAME_PATTERN``), for error messages.
NAME_RULE = "1 to 32 of a-z 0-9 _ . - starting with a letter or a digit"

DESCRIPTION = "Manage the accounts of a chatproto server and show its identity fingerprint."
EPILOG = """\
Passwords come from --password-file, --password-stdin, standard input when it is
not a terminal, or are asked twice on the terminal; they are never printed.
The commands need an existing database (start the server once to create it).

exit status: 0 success; 1 failure (user exists, no such user, bad password, ...);
2 usage error."""


class AdminError(Exception):
    """A failure reported as ``chatproto-admin: <message>`` with exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    """The options of ``chatproto-admin`` (plain text help, no markup)."""
    parser = argparse.ArgumentParser(prog="chatproto-admin", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", default=DEFAULT_DATABASE,
                        help=f"database URI: sqlite:PATH or postgresql://... (default: "
                             f"{DEFAULT_DATABASE}); it must exist")
    password = argparse.ArgumentParser(add_help=False)
    cost = password.add_argument_group("password hashing (as twistd chatserver)")
    cost.add_argument("--argon2-memory-kib", type=int, default=MIN_ARGON2.memory_kib,
                      metavar="KIB", help=f"Argon2id memory cost (default "
                                          f"{MIN_ARGON2.memory_kib})")
    cost.add_argument("--argon2-iterations", type=int, default=MIN_ARGON2.iterations,
                      metavar="N", help=f"Argon2id iterations (default {MIN_ARGON2.iterations})")
    cost.add_argument("--argon2-lanes", type=int, default=MIN_ARGON2.lanes, metavar="N",
                      help=f"Argon2id lanes (default {MIN_ARGON2.lanes})")
    cost.add_argument("--insecure-fast-hashing", action="store_true",
                      help="TESTS ONLY: allow a cost below the OWASP minimum")
    source = password.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="PATH",
                        help="read the password from the first line of this file")
    source.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *parents: argparse.ArgumentParser
                ) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=list(parents), help=help_text,
                              description=help_text, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("add-user", "create an account", common, password)
    p.add_argument("name", help=f"the user name: {NAME_RULE}")
    p = command("reset-password", "set a new password for an account", common, password)
    p.add_argument("name")
    p = command("delete-user", "delete an account", common)
    p.add_argument("name")
    command("list-users", "list the accounts", common)
    p = command("fingerprint", "print the server identity fingerprint")
    p.add_argument("--identity", default=DEFAULT_IDENTITY,
                   help=f"identity key file (default: {DEFAULT_IDENTITY})")
    return parser


def argon2_parameters(args: argparse.Namespace) -> Argon2Parameters:
    """The Argon2id cost from the options, checked as the server checks its own."""
    params = Argon2Parameters(memory_kib=args.argon2_memory_kib,
                              iterations=args.argon2_iterations, lanes=args.argon2_lanes)
    if min(params.memory_kib, params.iterations, params.lanes) < 1:
        raise AdminError("the --argon2-* values must be positive")
    if params.memory_kib < 8 * params.lanes:
        raise AdminError("--argon2-memory-kib must be at least 8 x --argon2-lanes")
    weak = (params.memory_kib < MIN_ARGON2.memory_kib
            or params.iterations < MIN_ARGON2.iterations)
    if weak and not args.insecure_fast_hashing:
        raise AdminError(f"Argon2id parameters below the OWASP minimum "
                         f"(m={MIN_ARGON2.memory_kib}, t={MIN_ARGON2.iterations}, "
                         f"p={MIN_ARGON2.lanes}) need --insecure-fast-hashing (tests only)")
    return params


def read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    """The new password from the chosen source (the first line of standard input when it is
    not a terminal); checked against the password policy."""
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise AdminError(f"cannot read the password file: {e.strerror}")
    elif args.password_stdin or not stdin.isatty():
        password = stdin.readline().rstrip("\r\n")
        if not password:
            raise AdminError("no password: standard input is not a terminal and its first "
                             "line is empty; use --password-file PATH or pipe the password "
                             "into --password-stdin")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise AdminError("the passwords do not match")
    problem = password_policy_error(password)
    if problem is not None:
        raise AdminError(problem)
    return password


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_existing_database(uri: str) -> Database:
    """The database at ``uri``; AdminError if it does not exist (never creates one)."""
    try:
        engine = engine_from_uri(uri)
    except ValueError as e:
        raise AdminError(str(e))
    path = getattr(engine, "path", None)
    if isinstance(path, str) and path != ":memory:" and not os.path.isfile(path):
        raise AdminError(f"no database at {path}: check --database (the server creates "
                         "its database when it first starts)")
    return Database(engine)


async def run(reactor: Any, args: argparse.Namespace, *, stdin: TextIO = sys.stdin,
              stdout: TextIO = sys.stdout,
              params: Argon2Parameters | None = None) -> int:
    """Carry out one parsed command; raises AdminError on failure."""
    if args.command == "fingerprint":
        try:
            key = load_identity(args.identity)
        except IdentityError as e:
            raise AdminError(str(e))
        print(identity_fingerprint(key), file=stdout)
        return OK
    name: str = getattr(args, "name", "")
    if args.command != "list-users" and NAME_PATTERN.fullmatch(name) is None:
        raise AdminError(f"invalid user name {name!r}: a name is {NAME_RULE}")
    password = None
    cost = params
    if args.command in ("add-user", "reset-password"):
        cost = cost or argon2_parameters(args)
        password = read_password(args, stdin)
    db = open_existing_database(args.database)
    await db.start()
    try:
        store = ChatStore(db)
        if args.command == "list-users":
            for user in await store.list_users():
                print(f"{user.name}\tcreated {_time(user.created_ms)}"
                      f"\tlast login {_time(user.last_login_ms)}"
                      f" from {user.last_login_ip or '-'}"
                      f"\tlast seen {_time(user.last_seen_ms)}", file=stdout)
            return OK
        if args.command == "delete-user":
            if not await store.delete_user(name):
                raise AdminError(f"no such user: {name}")
            print(f"deleted {name}", file=stdout)
            return OK
        assert password is not None and cost is not None
        if args.command == "add-user":
            if await store.get_user(name) is not None:
                raise AdminError(f"user exists: {name}")
            phc = await threads.deferToThread(hash_password, password, cost)
            try:
                await store.create_user(name, phc, int(reactor.seconds() * 1000))
            except NameTaken:
                raise AdminError(f"user exists: {name}")
            print(f"added {name}", file=stdout)
            return OK
        # reset-password
        if await store.get_user(name) is None:
            raise AdminError(f"no such user: {name}")
        phc = await threads.deferToThread(hash_password, password, cost)
        if not await store.set_password_hash(name, phc):
            raise AdminError(f"no such user: {name}")
        print(f"password of {name} changed", file=stdout)
        return OK
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    """The console script: parse, run in ``task.react``, exit with the status code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)

    async def _main(reactor: Any) -> None:
        try:
            code = await run(reactor, args)
        except AdminError as e:
            print(f"chatproto-admin: {e}", file=sys.stderr)
            code = FAILED
        except Exception as e:  # one line, no traceback: no local variables in the output
            print(f"chatproto-admin: {type(e).__name__}: {e}", file=sys.stderr)
            code = FAILED
        if code:
            raise SystemExit(code)

    try:
        task.react(_main)
    except SystemExit as e:
        return int(e.code or 0)
    return OK


if __name__ == "__main__":
    sys.exit(main())
