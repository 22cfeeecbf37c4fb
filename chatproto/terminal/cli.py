"""The command line of ``chatproto-client``: options, and the non-interactive commands.

Without a command, ``chatproto-client`` starts the interactive terminal client
(:mod:`chatproto.terminal.app`). With one, it does one thing and exits with a status a script
can test (:data:`EXIT_CODES`)::

    chatproto-client register --name bot --password-file pw
    chatproto-client send --to bob --name alice "the build is green"
    chatproto-client send-image --to bob --name alice plot.png
    chatproto-client tail --name alice            # JSON lines, one per incoming message

Everything here uses only the public API of :mod:`chatproto.client`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.python.failure import Failure

from chatproto.client import (
    ChatClient,
    ChatClientError,
    ChatListener,
    ConnectionLost,
    HandshakeError,
    ImageTooLarge,
    KnownServers,
    RegisterError,
    ServerError,
    ServerKeyChanged,
    ServerTrust,
    SigninError,
    UntrustedServer,
    connect,
    encode_text,
    endpoint_host,
)
from chatproto.terminal.feature_cli import (
    FEATURE_COMMAND_NAMES,
    FeatureUsageError,
    add_feature_commands,
    change_json,
    check_feature_args,
    run_feature_command,
)
from chatproto.terminal.presentation import (
    EVENT_ACTIONS,
    decode_event,
    read_image_file,
    save_image,
    time_iso,
)
from chatproto.wire import messages as m

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONNECTION",
    "EXIT_CODES",
    "EXIT_IDENTITY",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "build_parser",
    "run_command",
]

DEFAULT_SERVER = "tcp:127.0.0.1:7777"
#: The rule of user names (``messages.NAME_PATTERN``) in words.
NAME_RULE = "a name is 1 to 32 of a-z 0-9 _ . - and starts with a letter or a digit"
PASSWORD_ENV = "CHATPROTO_PASSWORD"  # noqa: S105 (the name of a variable)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_AUTH = 4
EXIT_IDENTITY = 5

#: Exit status → meaning (printed by ``--help`` and in the README).
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_REFUSED: "the server refused the request (its error code and reason are printed)",
    EXIT_USAGE: "usage error (bad options or --server, no password available, a file that is "
                "not an image or over 10 MiB, an empty text)",
    EXIT_CONNECTION: "could not connect, or the connection or handshake failed",
    EXIT_AUTH: "authentication failed (wrong name or password, too many attempts)",
    EXIT_IDENTITY: "the server's identity does not match its pin or --server-fingerprint, "
                   "or it is unknown and --trust-on-first-use was not given",
}


class CommandError(Exception):
    """Ends a command with an exit status and a message for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- paths and local state -----------------------------------------------------------------


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_known_servers() -> Path:
    """``$XDG_CONFIG_HOME/chatproto/known_servers`` (``~/.config/...`` by default)."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "chatproto" / "known_servers"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/chatproto`` (``~/.local/state/chatproto`` by default)."""
    return _xdg("XDG_STATE_HOME", ".local/state") / "chatproto"


def default_downloads() -> Path:
    """``~/Downloads/chatproto`` if ``~/Downloads`` exists, else ``./downloads``."""
    home_downloads = Path.home() / "Downloads"
    if home_downloads.is_dir():
        return home_downloads / "chatproto"
    return Path("downloads")


def load_device_id(state_dir: Path) -> bytes:
    """This installation's 16-byte device id, created (mode 0600) on first use.

    The server keeps the delivery position per device, so a stable id is what makes messages
    that arrived while we were away show up on the next start (and only once).
    """
    path = state_dir / "device_id"
    try:
        value = bytes.fromhex(path.read_text().strip())
        if len(value) == 16:
            return value
    except (FileNotFoundError, ValueError):
        pass
    value = os.urandom(16)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value.hex() + "\n")
    return value


# --- errors → exit codes -------------------------------------------------------------------


def describe_error(error: BaseException) -> tuple[int, str]:
    """The exit status and the message for an exception of a connection or a request."""
    if isinstance(error, ServerKeyChanged):
        return EXIT_IDENTITY, (
            f"SERVER IDENTITY CHANGED for {error.host}: pinned {error.expected}, "
            f"server presented {error.got}. Refusing to continue; if the key was replaced on "
            f"purpose, remove the old line from the known servers file.")
    if isinstance(error, UntrustedServer):
        return EXIT_IDENTITY, (
            f"unknown server {error.host} with fingerprint {error.fingerprint}; check it and "
            "pass --server-fingerprint or --trust-on-first-use")
    if isinstance(error, SigninError):
        return EXIT_AUTH, f"sign-in refused: {error}"
    if isinstance(error, RegisterError):
        return EXIT_REFUSED, f"registration refused: {error}"
    if isinstance(error, ImageTooLarge):
        return EXIT_USAGE, str(error)
    if isinstance(error, ServerError):
        names = f" [{', '.join(error.names)}]" if error.names else ""
        return EXIT_REFUSED, f"server error {error}{names}"
    if isinstance(error, HandshakeError):
        return EXIT_CONNECTION, f"handshake failed: {error}"
    if isinstance(error, ConnectionLost | ConnectError | DNSLookupError):
        return EXIT_CONNECTION, f"connection failed: {error}"
    if isinstance(error, ChatClientError):
        return EXIT_CONNECTION, str(error)
    if isinstance(error, OSError | ValueError):
        return EXIT_REFUSED, str(error)
    raise error


# --- options -------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes. In the subcommands their defaults are suppressed, so
    an option given before the command name is not overwritten by the subcommand's default."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--server", metavar="ENDPOINT", action="append",
                        default=default(None),
                        help="the server, as a Twisted client endpoint "
                             f"(default {DEFAULT_SERVER}; tls:HOST:PORT for TLS); repeat it "
                             "for the nodes of one deployment: they are tried in turn, and a "
                             "session that loses its node resumes on the next")
    parser.add_argument("--known-servers", metavar="PATH", type=Path,
                        default=default(None),
                        help=f"the pinned server keys (default {default_known_servers()})")
    parser.add_argument("--server-fingerprint", metavar="FP", default=default(None),
                        help="the expected server fingerprint (SHA256:...), overriding the pins")
    parser.add_argument("--name", default=default(None), help="the user name")
    parser.add_argument("--state-dir", metavar="DIR", type=Path, default=default(None),
                        help=f"where the device id and the window list are kept "
                             f"(default {default_state_dir()})")
    parser.add_argument("--downloads", metavar="DIR", type=Path, default=default(None),
                        help="where received images are saved "
                             "(default ~/Downloads/chatproto or ./downloads)")


def _add_auth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-file", metavar="PATH", type=Path,
                        help=f"read the password from the first line of PATH (else from "
                             f"${PASSWORD_ENV}, else asked on the terminal)")
    parser.add_argument("--trust-on-first-use", action="store_true",
                        help="trust and pin an unknown server without asking (scripts only: "
                             "check the fingerprint another way)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``chatproto-client`` (the interactive client and the commands)."""
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="chatproto-client",
        description="The chatproto terminal client. Without a command it starts the "
                    "interactive client; with one it runs it and exits.",
        epilog="exit status of the commands:\n" + codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog="exit status:\n" + codes,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, suppress=True)
        _add_auth(p)
        return p

    command("register", "create an account (--name, password as for sign-in)")
    p = command("send", "send one text message")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME", help="the recipient")
    target.add_argument("--group", metavar="ID", type=int, help="the group id")
    p.add_argument("text", nargs="+", help="the text ('-' reads it from stdin)")
    p = command("send-image", "send one image file (PNG, JPEG, GIF or WebP)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME", help="the recipient")
    target.add_argument("--group", metavar="ID", type=int, help="the group id")
    p.add_argument("path", type=Path, help="the image file")
    p = command("tail", "print incoming messages as JSON lines (images are saved to "
                        "--downloads) until interrupted")
    p.add_argument("--count", type=int, metavar="N",
                   help="exit after N messages (only those N are acknowledged: the next "
                        "tail starts with the one after them)")
    p.add_argument("--since", type=int, metavar="SEQ",
                   help="start after this user_seq (0: everything) instead of after the last "
                        "message this device acknowledged")
    p.add_argument("--include-own", action="store_true",
                   help="also print the messages this account sent (from any device); by "
                        "default only what others sent is printed")
    add_feature_commands(command)
    return parser


@dataclass
class Settings:
    """The resolved common options."""

    #: The first server; ``servers`` has them all (the nodes of one deployment).
    server: str
    known_servers: KnownServers
    server_fingerprint: str | None
    name: str | None
    state_dir: Path
    downloads: Path
    servers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.servers:
            self.servers = [self.server]

    @staticmethod
    def from_args(args: argparse.Namespace) -> Settings:
        """Apply the defaults to parsed options."""
        servers = getattr(args, "server", None) or [DEFAULT_SERVER]
        return Settings(
            server=servers[0],
            servers=list(servers),
            known_servers=KnownServers(args.known_servers or default_known_servers()),
            server_fingerprint=args.server_fingerprint,
            name=args.name,
            state_dir=args.state_dir or default_state_dir(),
            downloads=args.downloads or default_downloads(),
        )

    def trust(self, on_first_use: Any = None) -> ServerTrust:
        """The server trust settings, with a trust-on-first-use callback."""
        return ServerTrust(self.known_servers, self.server_fingerprint, on_first_use)

    @property
    def host(self) -> str:
        """The pinning key of the server."""
        return endpoint_host(self.server)


def read_password(path: Path | None, prompt: str = "password: ") -> str:
    """The password: the first line of ``path``, else ``$CHATPROTO_PASSWORD``, else asked on
    the terminal (CommandError EXIT_USAGE if there is none)."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CommandError(EXIT_USAGE, f"cannot read the password file: {e}")
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise CommandError(EXIT_USAGE, f"the password file {path} is empty")
        return lines[0]
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    raise CommandError(EXIT_USAGE, f"no password: use --password-file or ${PASSWORD_ENV}")


# --- the commands --------------------------------------------------------------------------


def deliver_json(deliver: m.Deliver, image_path: Path | None = None) -> dict[str, Any]:
    """The JSON object ``tail`` prints for a message."""
    out: dict[str, Any] = {
        "user_seq": deliver.user_seq,
        "group_id": deliver.group_id,
        "from": deliver.sender,
        "to": deliver.to,
        "conv_seq": deliver.conv_seq,
        "time": time_iso(deliver.server_time_ms),
        "time_ms": deliver.server_time_ms,
    }
    if deliver.content_type == m.ContentType.TEXT:
        out["type"] = "text"
        out["text"] = deliver.body.decode("utf-8", "replace")
    elif deliver.content_type == m.ContentType.IMAGE and deliver.image is not None:
        out["type"] = "image"
        out["image_path"] = str(image_path) if image_path is not None else None
        out["size"] = deliver.image.total_size
        out["mime"] = deliver.image.mime
        out["sha256"] = deliver.image.sha256.hex()
    elif deliver.content_type == m.ContentType.EVENT:
        out["type"] = "event"
        event = decode_event(deliver.body)
        out["event"] = None if event is None else {
            "action": EVENT_ACTIONS.get(event.action, str(event.action)),
            "actor": event.actor, "names": list(event.names), "title": event.title}
    else:
        out.update(change_json(deliver.content_type, deliver.body))
    return out


class _TailListener(ChatListener):
    """Prints (and saves) what arrives, and acknowledges exactly what it printed: with
    ``--count N`` the messages after the N-th stay unacknowledged, so the next ``tail`` gets
    them. The account's own messages are skipped (and acknowledged) unless ``include_own``."""

    def __init__(self, me: str, downloads: Path, out: TextIO, count: int | None,
                 include_own: bool) -> None:
        self.me = me
        self.downloads = downloads
        self.out = out
        self.remaining = count
        self.include_own = include_own
        self.client: ChatClient | None = None
        self.done: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.quitting = False

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        if self.done.called:
            return  # past the count: not printed, not acknowledged
        if deliver.sender != self.me or self.include_own:
            path = save_image(self.downloads, deliver, image) if image is not None else None
            self.out.write(json.dumps(deliver_json(deliver, path), ensure_ascii=False) + "\n")
            self.out.flush()
            if self.remaining is not None:
                self.remaining -= 1
        if self.client is not None:
            self.client.acknowledge(deliver.user_seq)
        if self.remaining is not None and self.remaining <= 0:
            self.done.callback(None)

    def error_received(self, code: int, reason: str) -> None:
        print(f"chatproto-client: error {code}: {reason}", file=sys.stderr)

    def connection_lost(self, reason: Failure) -> None:
        if not self.quitting and not self.lost.called:
            self.lost.callback(None)


async def open_client(reactor: Any, settings: Settings, args: argparse.Namespace,
                      listener: ChatListener | None = None, auto_ack: bool = True) -> ChatClient:
    """Connect to the server, checking its identity non-interactively."""
    trust = None
    if getattr(args, "trust_on_first_use", False):
        def trust(host: str, fingerprint: str) -> bool:
            print(f"chatproto-client: trusting {host} {fingerprint} (pinned in "
                  f"{settings.known_servers.path})", file=sys.stderr)
            return True
    for i, server in enumerate(settings.servers):
        try:
            client: ChatClient = await connect(
                reactor, server, trust=settings.trust(trust),
                device_id=load_device_id(settings.state_dir), listener=listener,
                auto_ack=auto_ack)
        except (ConnectError, DNSLookupError):
            if i == len(settings.servers) - 1:
                raise
            continue
        return client
    raise AssertionError("unreachable: Settings has at least one server")


async def _run(reactor: Any, args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)
    if not settings.name:
        raise CommandError(EXIT_USAGE, "--name is required")
    if m.NAME_PATTERN.fullmatch(settings.name) is None:
        raise CommandError(EXIT_USAGE, f"invalid name {settings.name!r}: {NAME_RULE}")
    for server in settings.servers:
        try:
            clientFromString(reactor, server)
        except (ValueError, KeyError, TypeError) as e:
            raise CommandError(EXIT_USAGE, f"invalid --server {server!r}: {e} (an "
                                           "endpoint such as tcp:HOST:PORT or tls:HOST:PORT)")
    if args.command == "tail" and args.count is not None and args.count < 1:
        raise CommandError(EXIT_USAGE, "--count must be 1 or more")
    image: bytes | None = None
    if args.command == "send-image":
        try:
            image = read_image_file(args.path)
        except ValueError as e:
            raise CommandError(EXIT_USAGE, str(e))
    text: str | None = None
    if args.command == "send":
        text = sys.stdin.read() if args.text == ["-"] else " ".join(args.text)
        try:
            encode_text(text)
        except ValueError as e:
            raise CommandError(EXIT_USAGE, str(e))
    if args.command in FEATURE_COMMAND_NAMES:
        try:
            check_feature_args(args)
        except (FeatureUsageError, OSError) as e:
            raise CommandError(EXIT_USAGE, str(e))
    password = read_password(args.password_file)
    listener: ChatListener | None = None
    if args.command == "tail":
        listener = _TailListener(settings.name, settings.downloads, sys.stdout, args.count,
                                 args.include_own)
    client = await open_client(reactor, settings, args, listener,
                               auto_ack=args.command != "tail")
    if isinstance(listener, _TailListener):
        listener.client = client
    try:
        if args.command == "register":
            await client.register(settings.name, password)
            print(f"registered {settings.name}")
            return EXIT_OK
        await client.signin(settings.name, password)
        if args.command == "tail":
            assert isinstance(listener, _TailListener)
            return await _tail(reactor, client, listener, args.since)
        if args.command in FEATURE_COMMAND_NAMES:
            await run_feature_command(client, args, password)
            return EXIT_OK
        to: str | int = args.to if args.to is not None else args.group
        if args.command == "send":
            assert text is not None
            ack = await client.send_text(to, text)
        else:
            assert image is not None
            ack = await client.send_image(to, image)
        print(json.dumps({"group_id": ack.group_id, "conv_seq": ack.conv_seq,
                          "time": time_iso(ack.server_time_ms)}))
        await client.quit()
        return EXIT_OK
    finally:
        if client.state != "offline":
            await client.close()


async def _tail(reactor: Any, client: ChatClient, listener: _TailListener,
                since: int | None) -> int:
    stop: Deferred[None] = Deferred()

    def stopped() -> None:
        if not stop.called:
            stop.callback(None)

    def stop_signal(signum: int, frame: object) -> None:
        reactor.callFromThread(stopped)

    signal.signal(signal.SIGTERM, stop_signal)
    signal.signal(signal.SIGINT, stop_signal)
    await client.sync(since)
    from twisted.internet.defer import DeferredList

    await DeferredList([listener.done, listener.lost, stop], fireOnOneCallback=True)
    if listener.lost.called:
        raise CommandError(EXIT_CONNECTION, "connection lost")
    listener.quitting = True
    await client.quit()
    return EXIT_OK


def run_command(args: argparse.Namespace) -> NoReturn:
    """Run a non-interactive command and exit with its status."""
    from twisted.internet import task

    async def main(reactor: Any) -> None:
        try:
            code = await _run(reactor, args)
        except CommandError as e:
            print(f"chatproto-client: {e}", file=sys.stderr)
            raise SystemExit(e.code)
        except Exception as e:
            code, message = describe_error(e)
            print(f"chatproto-client: {message}", file=sys.stderr)
        raise SystemExit(code)

    task.react(lambda reactor: ensureDeferred(main(reactor)))

