"""``twistd chatserver``: command-line options and the service they build.

Run ``twistd -n chatserver --help`` for every option. Examples::

    twistd -n chatserver --listen tcp:7777:interface=127.0.0.1
    twistd -n chatserver --listen ssl:7443:privateKey=key.pem:certKey=cert.pem \\
        --database postgresql://chat@db/chat
    twistd -n chatserver --fingerprint    # print the identity fingerprint clients pin
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from twisted.internet import endpoints
from twisted.logger import globalLogPublisher, jsonFileLogObserver
from twisted.python import usage

from chatproto.server import node_log, web, workers
from chatproto.server.bus import BusAddress, check_node_name, default_node_name
from chatproto.server.feature_settings import (
    DEFAULT_EDIT_WINDOW_MS,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_NAME_HOLD_MS,
    FeatureSettings,
)
from chatproto.server.identity import (
    IdentityError,
    identity_fingerprint,
    load_identity,
    load_or_create_identity,
)
from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import JOBS_PER_ADDRESS, Argon2Parameters, PasswordHasher
from chatproto.server.redis_router import PRESENCE_TTL
from chatproto.server.service import ChatService
from chatproto.storage.database import Database
from chatproto.wire.handshake import SUPPORTED_VERSIONS

DEFAULT_LISTEN = "tcp:7777:interface=127.0.0.1"
DEFAULT_DATABASE = "sqlite:chatserver.db"
DEFAULT_IDENTITY = "chatserver.key"

#: OWASP's minimum Argon2id cost; lower values need --insecure-fast-hashing.
MIN_ARGON2 = Argon2Parameters()


def _positive(kind: Callable[[str], Any], what: str,
              zero_ok: bool = False) -> Callable[[str], Any]:
    def coerce(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {what}")
        low_ok = number >= 0 if zero_ok else number > 0
        if not low_ok or number != number or number == float("inf"):
            raise ValueError(f"{value!r} is not {what}")
        return number

    coerce.coerceDoc = f"Must be {what}."  # type: ignore[attr-defined]
    return coerce


positive_int = _positive(int, "a positive integer")
positive_float = _positive(float, "a positive number")
non_negative_float = _positive(float, "a number, 0 or more", zero_ok=True)
non_negative_int = _positive(int, "a whole number, 0 or more", zero_ok=True)

_LIMIT_HELP = {
    "handshake_timeout": "Seconds a client has to complete the login handshake.",
    "idle_timeout": "Seconds of silence allowed during the handshake.",
    "max_handshakes": "Handshakes in progress at once (more connections are refused).",
    "max_connections_per_ip": "Connections at once from one IP address.",
    "max_attempts": "Rejected sign-in/register attempts per connection before it is closed.",
    "account_failures": "Failed sign-ins per account per --account-window "
                        "(not applied from the account's last successful IP).",
    "account_window": "Seconds of the per-account failed sign-in window.",
    "ip_failures": "Failed sign-ins per IP address per --ip-window.",
    "ip_window": "Seconds of the per-IP failed sign-in window.",
    "registrations_per_ip": "Registration attempts per IP address (IPv6: per /64) per "
                            "--registration-window, whatever their outcome.",
    "registration_window": "Seconds of the per-IP registration window.",
    "ping_interval": "Seconds between pings to a signed-in client.",
    "ping_timeout": "Seconds a client has to answer a ping before it is disconnected.",
    "max_image_bytes": "Largest image a client may send (bytes).",
    "max_requests_in_flight": "Requests of one connection waiting for an answer before the "
                              "server stops reading from it (TCP then slows the sender).",
    "max_write_backlog": "Bytes still written to a connection whose send buffer is full "
                         "before it is aborted; at least --max-image-bytes + 1 MiB.",
    "write_stall_timeout": "Seconds a connection's send buffer may stay full (the client "
                           "reads nothing or too slowly) before it is aborted.",
    "message_rate": "Chat messages per second per connection, on average; more are refused "
                    "with 308 RATE_LIMITED. 0: no limit.",
    "message_burst": "Chat messages one connection may send at once (the token bucket).",
}

#: Limits where 0 means "no limit".
_ZERO_OK = {"message_rate"}

#: The --durability choices: what a commit waits for before the SendAck.
DURABILITY = ("full", "relaxed")


def _durability(value: str) -> str:
    if value not in DURABILITY:
        raise ValueError(f"{value!r} is not one of {', '.join(DURABILITY)}")
    return value


_durability.coerceDoc = "full or relaxed."  # type: ignore[attr-defined]


def _limit_parameters() -> list[list[Any]]:
    defaults = LimitSettings()
    params: list[list[Any]] = []
    for f in fields(LimitSettings):
        if f.name in _ZERO_OK:
            coerce = non_negative_float
        else:
            coerce = positive_int if f.type in (int, "int") else positive_float
        params.append([f.name.replace("_", "-"), None, getattr(defaults, f.name),
                       _LIMIT_HELP[f.name], coerce])
    return params


class Options(usage.Options):
    """The options of ``twistd chatserver``."""

    synopsis = "[options]"
    longdesc = ("An encrypted chat server. Every option has a safe default; the server "
                "listens on " + DEFAULT_LISTEN + " unless --listen is given.")

    optFlags = [
        ["fingerprint", None,
         "Print the server identity fingerprint (creating the key if needed) and exit."],
        ["insecure-fast-hashing", None,
         "TESTS ONLY: allow Argon2id parameters below the OWASP minimum "
         f"(m={MIN_ARGON2.memory_kib}, t={MIN_ARGON2.iterations}, p={MIN_ARGON2.lanes}). "
         "Never use it in production: weak hashes make stolen databases easy to crack."],
        ["refuse-v1", None,
         "Refuse clients of protocol version 1 (classical X25519 only, no padding); by "
         "default both versions are served and version 2 with the post-quantum hybrid is "
         "chosen when the client offers it."],
    ]

    optParameters: list[list[Any]] = [
        ["database", None, DEFAULT_DATABASE,
         "Database URI: sqlite:PATH or postgresql://user@host/dbname."],
        ["identity", None, DEFAULT_IDENTITY,
         "The server's Ed25519 identity key file (PEM); created with mode 0600 if missing."],
        ["argon2-memory-kib", None, MIN_ARGON2.memory_kib,
         "Argon2id memory cost in KiB.", positive_int],
        ["argon2-iterations", None, MIN_ARGON2.iterations,
         "Argon2id iterations (time cost).", positive_int],
        ["argon2-lanes", None, MIN_ARGON2.lanes, "Argon2id lanes (parallelism).", positive_int],
        ["metrics", None, None,
         "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
         "tcp:9100:interface=127.0.0.1 (off by default)."],
        ["retention-days", None, 0.0,
         "Delete archived messages older than this many days, once delivered to every "
         "device (checked hourly). 0 keeps the archive forever (the default).",
         non_negative_float],
        ["log-json", None, None,
         "Also write the log as JSON lines (twisted.logger events) to this file."],
        ["argon2-threads", None, 2,
         "Password hashes computed at once; more requests wait.", positive_int],
        ["argon2-processes", None, os.cpu_count() or 1,
         "Worker processes that compute the hashes (Argon2id holds Python's GIL, so hashes in "
         "threads would stall the server and use one core); 0 hashes in threads instead.",
         non_negative_int],
        ["durability", None, "full",
         "full: a message is acknowledged only once its commit is on disk (SQLite "
         "synchronous=FULL, PostgreSQL synchronous_commit=on). relaxed: acknowledged once "
         "committed, synced later (SQLite synchronous=NORMAL, PostgreSQL "
         "synchronous_commit=off): faster, but a power cut or OS crash may lose the last "
         "acknowledged messages.", _durability],
        ["argon2-jobs-per-ip", None, JOBS_PER_ADDRESS,
         "Password hashes waiting or running at once for one client address (IPv6: per /64); "
         "more sign-ins from it are answered TRY_LATER.", positive_int],
        ["bus", None, None,
         "Join other nodes serving the same users through this Redis: "
         "redis://HOST[:PORT][/DB][?prefix=P] (needs a postgresql:// --database)."],
        ["node-name", None, None,
         "This node's name in logs and metrics (default: host:pid)."],
        ["workers", None, 1,
         "Server processes sharing the listeners (tcp: endpoints only), each a node of "
         "its own; needs a postgresql:// --database and --bus. With --metrics, worker i "
         "serves metrics on its port + i - 1.", positive_int],
        ["presence-ttl", None, PRESENCE_TTL,
         "With --bus: seconds the users of a node that died stay online (each node refreshes "
         "its sessions every third of it).", positive_float],
        ["edit-window-minutes", None, DEFAULT_EDIT_WINDOW_MS / 60_000,
         "Minutes after sending during which the sender may edit a message (deleting is "
         "allowed at any time).", non_negative_float],
        ["max-file-mib", None, DEFAULT_MAX_FILE_BYTES // (1024 * 1024),
         "Largest file (not image) a client may send, in MiB.", positive_int],
        ["name-hold-days", None, DEFAULT_NAME_HOLD_MS / 86_400_000,
         "Days the name of a deleted account cannot be registered again.",
         non_negative_float],
        ["file-dir", None, None,
         "Directory of the file bodies (content-addressed); default: DATABASE.files beside a "
         "SQLite file, ./chat-files for PostgreSQL (name a directory every node shares)."],
        ["image-dir", None, None,
         "Directory of the image bodies (content-addressed); default: $CHATPROTO_IMAGE_DIR, "
         "else DATABASE.images beside a SQLite file, else in the PostgreSQL database."],
        *_limit_parameters(),
    ]

    #: Set by postOptions from the checked options.
    database: Database
    endpoints: list[Any]
    metrics_endpoint: Any
    web_settings: web.WebSettings | None
    bus: BusAddress | None
    node_name: str
    #: With --workers: (family, interface, port, backlog) of every listener to share.
    shared_sockets: list[tuple[int, str, int, int]]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["listen-web"] = []
        self["trusted-proxy"] = []
        self["web-origin"] = []

    def opt_listen(self, description: str) -> None:
        self["listen"].append(description)

    opt_listen.__doc__ = (
        "Listen on this endpoint: a strports string such as tcp:7777:interface=127.0.0.1 or "
        "ssl:7443:privateKey=key.pem:certKey=cert.pem. Repeat for several endpoints. "
        f"Default: {DEFAULT_LISTEN}."
    )

    def opt_listen_web(self, description: str) -> None:
        self["listen-web"].append(description)

    opt_listen_web.__doc__ = (
        "Serve the web client and its WebSocket on this endpoint, e.g. "
        "tcp:8080:interface=127.0.0.1 (open http://127.0.0.1:8080/). Repeatable."
    )

    def opt_trusted_proxy(self, address: str) -> None:
        try:
            self["trusted-proxy"].append(web.check_proxy(address))
        except ValueError as e:
            raise usage.UsageError(f"--trusted-proxy: {e}")

    opt_trusted_proxy.__doc__ = (
        "A reverse proxy's IP address: web connections from it take the client address from "
        "X-Forwarded-For. Repeatable."
    )

    def opt_web_origin(self, origin: str) -> None:
        try:
            self["web-origin"].append(web.check_origin(origin))
        except ValueError as e:
            raise usage.UsageError(f"--web-origin: {e}")

    opt_web_origin.__doc__ = (
        "A page origin (https://host[:port]) allowed to open the web client's WebSocket. "
        "Repeatable; default: only the origin the page was served from."
    )

    def feature_settings(self) -> FeatureSettings:
        """The everyday features' settings from --edit-window-minutes, --max-file-mib,
        --name-hold-days and --file-dir."""
        return FeatureSettings(
            edit_window_ms=int(self["edit-window-minutes"] * 60_000),
            name_hold_ms=int(self["name-hold-days"] * 86_400_000),
            max_file_bytes=self["max-file-mib"] * 1024 * 1024,
            blob_dir=Path(self["file-dir"]) if self["file-dir"] else None,
        )

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        params = self.argon2_parameters()
        if params.memory_kib < 8 * params.lanes:
            raise usage.UsageError("--argon2-memory-kib must be at least 8 x --argon2-lanes")
        weak = (params.memory_kib < MIN_ARGON2.memory_kib
                or params.iterations < MIN_ARGON2.iterations)
        if weak and not self["insecure-fast-hashing"]:
            raise usage.UsageError(
                f"Argon2id parameters below the OWASP minimum (m={MIN_ARGON2.memory_kib}, "
                f"t={MIN_ARGON2.iterations}, p={MIN_ARGON2.lanes}) need "
                "--insecure-fast-hashing (tests only)"
            )
        if self["fingerprint"]:
            try:
                key = load_or_create_identity(self["identity"])
            except (IdentityError, OSError) as e:
                raise usage.UsageError(f"--identity: {e}")
            print(identity_fingerprint(key))
            raise SystemExit(0)
        self._check_identity()
        if self["max-write-backlog"] < self["max-image-bytes"] + 1024 * 1024:
            raise usage.UsageError("--max-write-backlog must be at least --max-image-bytes + "
                                   "1 MiB (an image being delivered is written whole)")
        try:
            self.database = Database.from_uri(self["database"],
                                              durable=self["durability"] == "full")
        except ValueError as e:
            raise usage.UsageError(f"--database: {e}")
        self._check_nodes()
        from twisted.internet import reactor

        self.endpoints = [_endpoint(reactor, "--listen", s) for s in self["listen"]]
        self.metrics_endpoint = (_endpoint(reactor, "--metrics", self["metrics"])
                                 if self["metrics"] else None)
        self.shared_sockets = []
        if self["workers"] > 1:
            try:
                self.shared_sockets = [
                    workers.tcp_address(ep, "--listen") for ep in self.endpoints] + [
                    workers.tcp_address(_endpoint(reactor, "--listen-web", s), "--listen-web")
                    for s in self["listen-web"]]
                if self.metrics_endpoint is not None:
                    workers.tcp_address(self.metrics_endpoint, "--metrics")
            except ValueError as e:
                raise usage.UsageError(str(e))
        self.web_settings = web.WebSettings(
            endpoints=[_endpoint(reactor, "--listen-web", s) for s in self["listen-web"]],
            trusted_proxies=self["trusted-proxy"], allowed_origins=self["web-origin"],
        ) if self["listen-web"] else None

    def _check_nodes(self) -> None:
        """--bus and --node-name; several nodes share one PostgreSQL database (SQLite is one
        process's file)."""
        try:
            self.node_name = check_node_name(self["node-name"] or default_node_name())
        except ValueError as e:
            raise usage.UsageError(f"--node-name: {e}")
        self.bus = None
        if self["workers"] > 1 and self["bus"] is None:
            raise usage.UsageError(
                "--workers needs --bus redis://HOST:PORT (the workers are nodes that poke "
                "each other through Redis) and a PostgreSQL --database")
        if self["bus"] is None:
            return
        if self.database.engine.name != "postgres":
            raise usage.UsageError(
                f"{'--workers' if self['workers'] > 1 else '--bus'} needs a PostgreSQL "
                "--database (postgresql://...): several server processes share one database, "
                "and SQLite is a single process's file (it stays the one-process default)")
        try:
            self.bus = BusAddress.parse(self["bus"])
        except ValueError as e:
            raise usage.UsageError(f"--bus: {e}")

    def _check_identity(self) -> None:
        """An existing key file must be usable; a missing one must be creatable (makeService
        creates it: parsing options writes nothing)."""
        path = self["identity"]
        if os.path.exists(path):
            try:
                load_identity(path)
            except IdentityError as e:
                raise usage.UsageError(f"--identity: {e}")
            return
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
            raise usage.UsageError(f"--identity: cannot create {path}: {directory} is not a "
                                   "writable directory")

    def argon2_parameters(self) -> Argon2Parameters:
        return Argon2Parameters(
            memory_kib=self["argon2-memory-kib"],
            iterations=self["argon2-iterations"],
            lanes=self["argon2-lanes"],
        )

    def limit_settings(self) -> LimitSettings:
        return LimitSettings(**{
            f.name: self[f.name.replace("_", "-")] for f in fields(LimitSettings)
        })


def _endpoint(reactor: Any, option: str, description: str) -> Any:
    try:
        return endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise usage.UsageError(f"{option} {description!r}: {e}")


def makeService(options: Options) -> ChatService | workers.WorkerSupervisor:
    """The chat service for checked options (the database opens when the service starts);
    with --workers, the supervisor of that many of them."""
    from twisted.internet import reactor

    if options.bus is not None:  # a node among several (or their supervisor): name the lines
        node_log.install(options.node_name)
    if options["workers"] > 1:
        try:  # created once here, not raced by the workers
            load_or_create_identity(options["identity"])
        except (IdentityError, OSError) as e:
            raise usage.UsageError(f"--identity: {e}") from None
        web_count = len(options["listen-web"])
        return workers.WorkerSupervisor(
            reactor, options["workers"], options.shared_sockets,
            lambda index, names: workers.worker_arguments(options, index, names,
                                                          options.node_name, web_count))

    if options["log-json"]:
        # Kept open for the life of the process, like twistd's own log file.
        log_file = open(options["log-json"], "a", encoding="utf-8")  # noqa: SIM115
        globalLogPublisher.addObserver(jsonFileLogObserver(log_file))  # type: ignore[arg-type]
    hasher = PasswordHasher(reactor, options.argon2_parameters(), options["argon2-threads"],
                            processes=options["argon2-processes"],
                            jobs_per_address=options["argon2-jobs-per-ip"])
    try:
        identity = load_or_create_identity(options["identity"])
    except (IdentityError, OSError) as e:  # checked by postOptions; raced since
        raise usage.UsageError(f"--identity: {e}") from None
    return ChatService(reactor, options.database, identity, options.endpoints, hasher,
                       options.limit_settings(), metrics_endpoint=options.metrics_endpoint,
                       retention_days=options["retention-days"], web=options.web_settings,
                       versions=(2,) if options["refuse-v1"] else SUPPORTED_VERSIONS,
                       bus=options.bus, node=options.node_name,
                       presence_ttl=options["presence-ttl"],
                       features=options.feature_settings(), image_dir=options["image-dir"])
