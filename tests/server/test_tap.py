"""``twistd chatserver``: option parsing, makeService, and real servers in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import endpoints
from twisted.python import usage

from chatproto.server.identity import identity_fingerprint, load_identity
from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import Argon2Parameters
from chatproto.server.service import ChatService
from chatproto.server.tap import DEFAULT_LISTEN, Options, makeService
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import LoginComplete, Registered
from tests.server.certs import make_self_signed
from tests.server.conftest import start_loopback
from tests.server.wireclient import BlockingClient, Closed, WireClient, register_and_signin
from tests.services import empty_database_uri

TWISTD = str(Path(sys.executable).parent / "twistd")
PASSWORD = "correct horse battery"
FAST_ARGS = ["--insecure-fast-hashing", "--argon2-memory-kib", "64", "--argon2-iterations", "1"]


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


# --- options -------------------------------------------------------------------------------


def test_defaults() -> None:
    """Without options: the loopback listener, the SQLite file, the key file, OWASP's Argon2
    minimum with 2 threads, and the default limits."""
    options = parse()
    assert options["listen"] == [DEFAULT_LISTEN]
    assert options["database"] == "sqlite:chatserver.db"
    assert options["identity"] == "chatserver.key"
    assert options.argon2_parameters() == Argon2Parameters(19456, 2, 1)
    assert options["argon2-threads"] == 2
    assert options.limit_settings() == LimitSettings()


def test_repeated_listen_and_limits() -> None:
    """--listen may repeat (no default then); every limit option sets its LimitSettings field
    with the right type."""
    options = parse("--listen", "tcp:1", "--listen", r"tcp:2:interface=\:\:1",
                    "--handshake-timeout", "2.5", "--max-handshakes", "7", "--ping-interval",
                    "3", "--max-image-bytes", "1000")
    assert options["listen"] == ["tcp:1", r"tcp:2:interface=\:\:1"]
    limits = options.limit_settings()
    assert limits.handshake_timeout == 2.5 and limits.max_handshakes == 7
    assert isinstance(limits.max_handshakes, int) and isinstance(limits.ping_interval, float)
    assert limits.max_image_bytes == 1000


@pytest.mark.parametrize("args", [
    ["--idle-timeout", "0"],
    ["--handshake-timeout", "-1"],
    ["--ping-timeout", "nan"],
    ["--account-window", "inf"],
    ["--max-attempts", "1.5"],
    ["--max-connections-per-ip", "many"],
    ["--argon2-threads", "0"],
    ["--argon2-processes", "-1"],
    ["--argon2-memory-kib", "1024"],
    ["--argon2-iterations", "1"],
    ["--insecure-fast-hashing", "--argon2-memory-kib", "8", "--argon2-lanes", "4"],
])
def test_bad_values_are_rejected(args: list[str]) -> None:
    """Non-positive or malformed numbers, and Argon2 cost below OWASP's minimum without
    --insecure-fast-hashing, are usage errors."""
    with pytest.raises(usage.UsageError):
        parse(*args)


@pytest.mark.parametrize("option, value", [
    ("--listen", "tcp:notaport"),
    ("--listen", "carrier-pigeon:7777"),
    ("--metrics", "tcp:9100:bogus=1"),
    ("--database", "mysql://db/chat"),
])
def test_bad_endpoints_and_database_are_usage_errors(option: str, value: str,
                                                     tmp_path: Path) -> None:
    """An endpoint string or database URI that cannot work is a usage error when the options
    are parsed (twistd prints the usage and exits 1), not an exit inside makeService."""
    with pytest.raises(usage.UsageError) as info:
        parse(option, value, "--identity", str(tmp_path / "key"))
    assert option in str(info.value)
    assert not (tmp_path / "key").exists()  # parsing writes nothing


def test_unusable_identity_is_a_usage_error(tmp_path: Path) -> None:
    """An identity file that is not an Ed25519 PEM key, or one that cannot be created, is a
    usage error at parse time."""
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(usage.UsageError, match="--identity"):
        parse("--identity", str(bad))
    with pytest.raises(usage.UsageError, match="--identity"):
        parse("--identity", str(tmp_path / "missing-dir" / "key"))


def test_insecure_fast_hashing_allows_cheap_argon2() -> None:
    """--insecure-fast-hashing (tests only) permits a cost below the minimum."""
    options = parse(*FAST_ARGS)
    assert options.argon2_parameters() == Argon2Parameters(64, 1, 1)


def test_refuse_v1_and_hashing_jobs_per_address_reach_the_server(tmp_path: Path) -> None:
    """--refuse-v1 leaves only protocol version 2 to the handshake (both by default), and
    --argon2-jobs-per-ip bounds the hashes queued per address."""
    base = ["--database", f"sqlite:{tmp_path / 'chat.db'}",
            "--identity", str(tmp_path / "id.key"), *FAST_ARGS]
    default = makeService(parse(*base))
    assert default.server.versions == (2, 1)
    refusing = makeService(parse(*base, "--refuse-v1", "--argon2-jobs-per-ip", "7"))
    assert refusing.server.versions == (2,)
    assert refusing.hasher.queue.max_per_key == 7


def test_feature_and_file_options_reach_the_server(tmp_path: Path) -> None:
    """--edit-window-minutes, --max-file-mib, --name-hold-days and --file-dir set the
    everyday features' settings (defaults: 15 minutes, 100 MiB, 90 days, beside the
    database); --image-dir names the image directory (default: beside the SQLite file)."""
    base = ["--database", f"sqlite:{tmp_path / 'chat.db'}",
            "--identity", str(tmp_path / "id.key"), *FAST_ARGS]
    default = makeService(parse(*base))
    settings = default.server.features.settings
    assert (settings.edit_window_ms, settings.max_file_bytes, settings.name_hold_ms,
            settings.blob_dir) == (15 * 60_000, 100 * 2**20, 90 * 86_400_000, None)
    assert default.server.store.log.files.directory == Path(f"{tmp_path / 'chat.db'}.images")
    custom = makeService(parse(*base, "--edit-window-minutes", "2", "--max-file-mib", "3",
                               "--name-hold-days", "0.5", "--file-dir", str(tmp_path / "f"),
                               "--image-dir", str(tmp_path / "i")))
    settings = custom.server.features.settings
    assert (settings.edit_window_ms, settings.max_file_bytes, settings.name_hold_ms,
            settings.blob_dir) == (120_000, 3 * 2**20, 43_200_000, tmp_path / "f")
    assert custom.server.store.log.files.directory == tmp_path / "i"


def test_help_documents_every_option() -> None:
    """The help text names every option, each limit included, with a description."""
    text = str(Options())
    names = ["listen", "database", "identity", "argon2-memory-kib", "argon2-iterations",
             "argon2-lanes", "argon2-threads", "insecure-fast-hashing", "fingerprint",
             "refuse-v1", "argon2-jobs-per-ip", "edit-window-minutes", "max-file-mib",
             "name-hold-days", "file-dir", "image-dir"]
    names += [f.replace("_", "-") for f in LimitSettings.__dataclass_fields__]
    for name in names:
        assert f"--{name}" in text, name
    assert "TESTS ONLY" in text


def test_fingerprint_option_prints_and_exits(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--fingerprint creates the key (mode 0600) if needed, prints its fingerprint and exits 0."""
    key = tmp_path / "id.key"
    with pytest.raises(SystemExit) as exit_info:
        parse("--identity", str(key), "--fingerprint")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == identity_fingerprint(load_identity(str(key)))
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_make_service(tmp_path: Path) -> None:
    """makeService builds a ChatService with one listener per --listen (ssl: included), the
    hasher's cost and the limits, and does not open the database."""
    cert = make_self_signed(tmp_path / "tls")
    options = parse(
        "--listen", "tcp:0:interface=127.0.0.1",
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={cert.key_path}:"
                    f"certKey={cert.cert_path}",
        "--database", f"sqlite:{tmp_path / 'db'}", "--identity", str(tmp_path / "key"),
        "--max-attempts", "3", *FAST_ARGS,
    )
    svc = makeService(options)
    assert isinstance(svc, ChatService)
    assert [what for what, _, _ in svc.endpoints] == ["chat", "chat"]
    assert isinstance(svc.endpoints[1][1], endpoints.SSL4ServerEndpoint)
    assert svc.hasher.params == Argon2Parameters(64, 1, 1)
    assert svc.server.limits.max_attempts == 3
    assert svc.database._pool is None and not (tmp_path / "db").exists()
    assert (tmp_path / "key").exists()


@pytest_twisted.ensureDeferred
async def test_tls_listener_in_process(tmp_path: Path) -> None:
    """An ssl: server endpoint string with a test certificate serves the chat protocol; a
    tls: client endpoint that trusts the certificate registers and signs in through it."""
    cert = make_self_signed(tmp_path / "tls")
    lb, stop = await start_loopback(
        f"sqlite:{tmp_path / 'db'}",
        listen=f"ssl:0:interface=127.0.0.1:privateKey={cert.key_path}:certKey={cert.cert_path}")
    try:
        client_ep = endpoints.clientFromString(
            lb.reactor, f"tls:127.0.0.1:{lb.port}:trustRoots={cert.trust_dir}")
        client = WireClient()
        await endpoints.connectProtocol(client_ep, client)
        await client.trust()
        assert isinstance(await client.register("tina", PASSWORD), Registered)
        assert isinstance(await client.signin("tina", PASSWORD), LoginComplete)
        await client.close()
    finally:
        await stop()


# --- real servers in a subprocess ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until the server accepts (at most ~15 s); fail early if it exits."""
    for _ in range(150):
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)  # readiness polling of a subprocess: the one place we sleep
    pytest.fail(f"the server did not listen on {port}:\n{log.read_text()}")


class RunningServer:
    def __init__(self, tmp_path: Path, database: str, listen: str, port: int,
                 extra: tuple[str, ...] = ()) -> None:
        self.key = tmp_path / "server.key"
        self.log = tmp_path / "server.log"
        args = [TWISTD, "-n", "--pidfile=", "chatserver", "--listen", listen,
                "--database", database, "--identity", str(self.key), *FAST_ARGS, *extra]
        self.out = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT,
                                     cwd=tmp_path)
        self.port = port
        wait_for_port(port, self.proc, self.log)

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status (twistd re-raises the signal once it has
        shut down cleanly, so -SIGTERM with "Server Shut Down." in the log is a clean stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.out.close()
        return code


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[RunningServer] = []

    class Factory:
        @staticmethod
        def start(database: str, listen: str | None = None,
                  port: int | None = None, extra: tuple[str, ...] = ()) -> RunningServer:
            port = port or free_port()
            server = RunningServer(tmp_path, database,
                                   listen or f"tcp:{port}:interface=127.0.0.1", port, extra)
            started.append(server)
            return server

    yield Factory
    for server in started:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_twistd_serves_logins(backend: str, tmp_path: Path, server_factory: type) -> None:
    """``twistd -n chatserver`` on each backend: creates its key (0600), logs the fingerprint,
    accepts a registration and sign-in over TCP, and stops cleanly on SIGTERM."""
    with empty_database_uri(backend, tmp_path) as uri:
        server = server_factory.start(uri)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            ident, done = register_and_signin(sock, "sam", PASSWORD)
        assert done.name == "sam"
        assert server.stop() in (0, -signal.SIGTERM)
        assert "Server Shut Down." in server.log.read_text()
    fp = identity_fingerprint(load_identity(str(server.key)))
    assert ident.fingerprint == fp
    assert stat.S_IMODE(os.stat(server.key).st_mode) == 0o600
    log = server.log.read_text()
    assert f"server identity fingerprint: {fp}" in log
    assert PASSWORD not in log


@pytest.mark.slow
def test_twistd_says_where_it_listens_and_stops_sessions_first(tmp_path: Path,
                                                               server_factory: type) -> None:
    """``twistd -n chatserver`` logs "listening on 127.0.0.1:PORT" once it listens; SIGTERM
    while a user is signed in tells the client, ends the session, then closes the database:
    no "Unhandled Error" (before: record_last_seen -> "Database not started")."""
    server = server_factory.start(f"sqlite:{tmp_path / 'db'}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        client = BlockingClient(sock)
        client.start()
        assert isinstance(client.register("sam", PASSWORD), Registered)
        assert isinstance(client.signin("sam", PASSWORD), LoginComplete)
        server.proc.send_signal(signal.SIGTERM)
        items = []
        while not isinstance(item := client.next(), Closed):
            items.append(item)
        assert m.Error(0, ErrorCode.SERVER_BUSY, "the server is shutting down", ()) in items
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert f"listening on 127.0.0.1:{server.port} (chat)" in log
    assert "Server Shut Down." in log
    assert "Unhandled Error" not in log and "Traceback" not in log, log


@pytest.mark.slow
def test_twistd_over_tls(tmp_path: Path, server_factory: type) -> None:
    """``--listen ssl:...`` with a test certificate: Python's ssl module, trusting only that
    certificate and checking the host name, completes a login through it."""
    cert = make_self_signed(tmp_path / "tls")
    port = free_port()
    listen = (f"ssl:{port}:interface=127.0.0.1:privateKey={cert.key_path}:"
              f"certKey={cert.cert_path}")
    server = server_factory.start(f"sqlite:{tmp_path / 'db'}", listen=listen, port=port)
    context = ssl.create_default_context(cafile=str(cert.cert_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        _, done = register_and_signin(sock, "tls-user", PASSWORD)
    assert done.name == "tls-user"
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Server Shut Down." in server.log.read_text()


@pytest.mark.slow
def test_twistd_help_and_fingerprint(tmp_path: Path) -> None:
    """``twistd chatserver --help`` documents the options; ``--fingerprint`` prints the same
    fingerprint the key file has."""
    out = subprocess.run([TWISTD, "chatserver", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and "--insecure-fast-hashing" in out.stdout
    key = tmp_path / "k"
    out = subprocess.run([TWISTD, "--pidfile=", "chatserver", "--identity", str(key),
                          "--fingerprint"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == identity_fingerprint(load_identity(str(key)))


@pytest.mark.slow
def test_twistd_metrics_and_json_log(tmp_path: Path, server_factory: type) -> None:
    """--metrics serves Prometheus text at /metrics with connection, handshake, login,
    message, error and store-latency figures; --log-json writes one JSON event per line,
    without the password."""
    import json
    import urllib.request

    metrics_port = free_port()
    json_log = tmp_path / "events.json"
    server = server_factory.start(
        f"sqlite:{tmp_path / 'db'}",
        extra=("--metrics", f"tcp:{metrics_port}:interface=127.0.0.1",
               "--log-json", str(json_log)))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        register_and_signin(sock, "sam", PASSWORD)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x00\x00\x00\x05junk!")  # a bad Hello: an error by code
        sock.recv(4096)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback
    for needle in ('chatproto_logins_total{result="ok"} 1.0',
                   'chatproto_registrations_total{result="ok"} 1.0',
                   "chatproto_connections_total 3.0",  # the readiness probe is one
                   "chatproto_handshakes_completed_total 1.0",
                   'chatproto_errors_total{code="MALFORMED_MESSAGE"} 1.0',
                   "chatproto_store_transaction_seconds_count",
                   "chatproto_users_online"):
        assert needle in text, needle
    server.stop()
    events = [json.loads(line) for line in json_log.read_text().splitlines() if line.strip()]
    assert any("fingerprint" in e.get("log_format", "") for e in events)
    assert PASSWORD not in json_log.read_text()
