"""``chatproto-admin``: manage accounts and show the server fingerprint.

Subcommands: ``add-user NAME``, ``reset-password NAME``, ``delete-user NAME``, ``list-users``,
``fingerprint``. Passwords come from ``--password-file``, ``--password-stdin`` or are prompted
twice; they and their hashes are never printed or logged.

Exit codes: 0 success, 1 failure (user exists, no such user, bad password, ...), 2 usage.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from twisted.internet import task, threads

from chatproto.server.identity import IdentityError, identity_fingerprint, load_identity
from chatproto.server.passwords import Argon2Parameters, hash_password, password_policy_error
from chatproto.server.tap import DEFAULT_DATABASE, DEFAULT_IDENTITY
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore, NameTaken
from chatproto.wire.messages import NAME_PATTERN

OK, FAILED, USAGE = 0, 1, 2


class AdminError(Exception):
    """A failure reported as ``chatproto-admin: <message>`` with exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatproto-admin", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", default=DEFAULT_DATABASE,
                        help=f"database URI (default: {DEFAULT_DATABASE})")
    password = argparse.ArgumentParser(add_help=False)
    source = password.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="PATH",
                        help="read the password from the first line of this file")
    source.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("add-user", parents=[common, password], help="create an account")
    p.add_argument("name")
    p = sub.add_parser("reset-password", parents=[common, password],
                       help="set a new password for an account")
    p.add_argument("name")
    p = sub.add_parser("delete-user", parents=[common], help="delete an account")
    p.add_argument("name")
    sub.add_parser("list-users", parents=[common], help="list the accounts")
    p = sub.add_parser("fingerprint", help="print the server identity fingerprint")
    p.add_argument("--identity", default=DEFAULT_IDENTITY,
                   help=f"identity key file (default: {DEFAULT_IDENTITY})")
    return parser


def read_password(args: argparse.Namespace, stdin: TextIO) -> str:
    """The new password from the chosen source; checked against the password policy."""
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise AdminError(f"cannot read the password file: {e.strerror}")
    elif args.password_stdin:
        password = stdin.readline().rstrip("\r\n")
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
        raise AdminError(f"invalid user name: {name!r}")
    password = None
    if args.command in ("add-user", "reset-password"):
        password = read_password(args, stdin)
    try:
        db = Database.from_uri(args.database)
    except ValueError as e:
        raise AdminError(str(e))
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
        assert password is not None
        cost = params or Argon2Parameters()
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
