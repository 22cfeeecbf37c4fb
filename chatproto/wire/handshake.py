"""The login and registration handshake as two sans-IO state machines.

The message flow is the original design's (Hello, server key, Signin/register, ACK/NCK,
clientkey, encrypted test message, Hello done/hello error), made safe: the server key message is
signed by the server's long-term Ed25519 identity over the transcript, every later message is an
authenticated frame under keys derived from the transcript, and the session keys come from a
second ephemeral X25519 exchange (forward secret, fresh for every login). docs/protocol.rst,
section "Handshake", is the byte-level description.

Both machines work the same way: feed bytes with ``receive_data`` (which returns events), call
the methods that answer events, and write out whatever ``data_to_send`` returns after each call.
Protocol violations raise :class:`RemoteProtocolError`; the adapter then writes
``error_frame(...)`` and closes.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.frame import FrameDecoder, FrameEncoder, pad_to_block
from chatproto.wire.keys import (
    TrafficKeys,
    Transcript,
    constant_time_equal,
    derive_handshake_keys,
    derive_session_keys,
    fingerprint,
    finished_mac,
    signature_input,
    x25519_exchange,
)
from chatproto.wire.session import Session

#: While the handshake waits for a decision (password check, login bookkeeping) the peer should
#: send nothing; at most this many bytes are buffered before that is a protocol violation.
MAX_BUFFER_WHILE_WAITING = 64 * 1024
#: Rejected Signin/register attempts on one connection before it is closed.
DEFAULT_MAX_ATTEMPTS = 5

Random = Callable[[int], bytes]
Padding = Callable[[int], int]

_DEFAULT_PADDING = pad_to_block(16)


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def server_key_tbs(server_random: bytes, server_key: bytes, identity_key: bytes) -> bytes:
    """The signed part of SERVER_KEY: the MessagePack array ``[2, random, A, identity]``."""
    return msgpack.packb([m.ServerKey.TYPE, server_random, server_key, identity_key],
                         use_bin_type=True)


def _unexpected(msg: m.Message, state: enum.Enum) -> RemoteProtocolError:
    return RemoteProtocolError(
        ErrorCode.UNEXPECTED_MESSAGE, f"{type(msg).__name__} is not expected in state {state.name}"
    )


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerIdentityReceived:
    """The server proved it holds this identity key; check it against the pin, then call
    :meth:`ClientHandshake.accept_identity` (nothing secret is sent before that)."""

    identity_key: bytes
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SigninRejected:
    """NCK: wrong name or password (one generic answer), or a rate limit (TRY_LATER)."""

    code: int
    reason: str
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class Registered:
    """ACK register: the account exists now; sign in on the same connection."""

    name: str


@dataclass(frozen=True, slots=True)
class RegisterRejected:
    """NCK register: the name is taken, invalid, or registrations are limited."""

    code: int
    reason: str
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class LoginComplete:
    """Hello done: the session is ready (``handshake.session``)."""

    name: str
    session_id: bytes
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The handshake is over without a session: hello error, an error, or too many attempts.
    The connection closes; a new login starts with a new connection."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CredentialsReceived:
    """Server side: a Signin or register arrived; answer with accept/reject."""

    register: bool
    name: str
    password: str
    device_id: bytes


@dataclass(frozen=True, slots=True)
class LoginVerified:
    """Server side: the test message proved the client holds the session keys. Mark the user
    online, then call :meth:`ServerHandshake.complete`."""

    name: str
    device_id: bytes


ClientEvent = (
    ServerIdentityReceived | SigninRejected | Registered | RegisterRejected | LoginComplete
    | HandshakeFailed
)
ServerEvent = CredentialsReceived | LoginVerified | HandshakeFailed


class _Machine:
    """What both sides share: the frame codecs, the transcript and the outgoing buffer."""

    def __init__(self, padding: Padding) -> None:
        self._encoder = FrameEncoder(padding=padding)
        self._decoder = FrameDecoder()
        self._transcript = Transcript()
        self._out = bytearray()
        self._keyed = False
        self.session: Session | None = None

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (drained)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, msg: m.Message, *, plain: bool = False, record: bool = True) -> None:
        body = m.encode_message(msg)
        if record:
            self._transcript.add(body)
        self._out += self._encoder.encode_plain(body) if plain else self._encoder.encode(body)

    def _next(self) -> tuple[m.Message, bytes] | None:
        payload = self._decoder.next_payload()
        if payload is None:
            return None
        return m.decode_message(payload), payload

    def error_frame(self, code: ErrorCode, reason: str) -> bytes:
        """A best-effort ERROR message to send before closing (under the current keys)."""
        try:
            body = m.encode_message(m.Error(0, int(code), reason[:200], ()))
            if not self._keyed:
                return self._encoder.encode_plain(body)
            return self._encoder.encode(body)
        except LocalProtocolError:
            return b""


# --- client ----------------------------------------------------------------------------------


class ClientState(enum.Enum):
    START = enum.auto()
    AWAIT_SERVER_KEY = enum.auto()
    AWAIT_IDENTITY_DECISION = enum.auto()
    READY = enum.auto()  # may send Signin or register
    AWAIT_SIGNIN_ANSWER = enum.auto()
    AWAIT_REGISTER_ANSWER = enum.auto()
    AWAIT_HELLO_DONE = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class ClientHandshake(_Machine):
    """The client's side of the handshake.

    Args:
        rng: the source of randomness (tests fix it for known-answer vectors).
        padding: the frame padding policy.
    """

    def __init__(self, *, rng: Random = os.urandom, padding: Padding = _DEFAULT_PADDING) -> None:
        super().__init__(padding)
        self._rng = rng
        self.state = ClientState.START
        self._ephemeral: X25519PrivateKey | None = None
        self._hello_body = b""
        self._session_keys: TrafficKeys | None = None
        self.identity_key: bytes | None = None

    def start(self) -> None:
        """Queue Hello."""
        if self.state is not ClientState.START:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "handshake already started")
        self._ephemeral = X25519PrivateKey.from_private_bytes(self._rng(32))
        hello = m.Hello(m.PROTOCOL_VERSION, self._rng(32), _raw_public(self._ephemeral))
        self._hello_body = m.encode_message(hello)
        self._send(hello, plain=True)
        self.state = ClientState.AWAIT_SERVER_KEY

    def accept_identity(self) -> None:
        """The identity key matched the pin (or the user trusted it): credentials may be sent."""
        self._require(ClientState.AWAIT_IDENTITY_DECISION)
        self.state = ClientState.READY

    def signin(self, name: str, password: str, device_id: bytes) -> None:
        """Queue Signin (encrypted under the handshake keys)."""
        self._require(ClientState.READY)
        self._send(m.Signin(name, password, device_id))
        self.state = ClientState.AWAIT_SIGNIN_ANSWER

    def register(self, name: str, password: str) -> None:
        """Queue register (encrypted under the handshake keys)."""
        self._require(ClientState.READY)
        self._send(m.Register(name, password))
        self.state = ClientState.AWAIT_REGISTER_ANSWER

    def _require(self, state: ClientState) -> None:
        if self.state is not state:
            raise LocalProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, f"not allowed in state {self.state.name}"
            )

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes from the server; returns what happened. After LoginComplete the
        remaining bytes belong to ``self.session``."""
        self._decoder.receive_data(data)
        events: list[ClientEvent] = []
        while self.state not in (ClientState.DONE, ClientState.FAILED):
            if self.state is ClientState.AWAIT_HELLO_DONE:
                self._select_hello_done_keys()
            item = self._next()
            if item is None:
                break
            event = self._handle(*item)
            if event is not None:
                events.append(event)
        return events

    def _select_hello_done_keys(self) -> None:
        # Hello done comes under the session keys, hello error under the handshake keys; the
        # frame's IV (counter 0 under the session keys) says which.
        keys = self._session_keys
        iv = self._decoder.peek_iv()
        if keys is not None and iv is not None and constant_time_equal(iv, keys.server_iv):
            self._decoder.set_keys(keys.server_key, keys.server_iv)
            self._session_keys = None

    def _handle(self, msg: m.Message, body: bytes) -> ClientEvent | None:
        state = self.state
        if isinstance(msg, m.Error):
            self.state = ClientState.FAILED
            return HandshakeFailed(msg.code, msg.reason)
        if state is ClientState.AWAIT_SERVER_KEY and isinstance(msg, m.ServerKey):
            return self._on_server_key(msg, body)
        if state is ClientState.AWAIT_SIGNIN_ANSWER and isinstance(msg, m.Nck):
            self._transcript.add(body)
            if msg.code == ErrorCode.TOO_MANY_ATTEMPTS:
                self.state = ClientState.FAILED
                return HandshakeFailed(msg.code, msg.reason)
            self.state = ClientState.READY
            return SigninRejected(msg.code, msg.reason, msg.retry_after_ms)
        if state is ClientState.AWAIT_SIGNIN_ANSWER and isinstance(msg, m.Ack):
            self._transcript.add(body)
            self._on_ack(msg)
            self.state = ClientState.AWAIT_HELLO_DONE
            return None
        if state is ClientState.AWAIT_REGISTER_ANSWER and isinstance(msg, m.AckRegister):
            self._transcript.add(body)
            self.state = ClientState.READY
            return Registered(msg.name)
        if state is ClientState.AWAIT_REGISTER_ANSWER and isinstance(msg, m.NckRegister):
            self._transcript.add(body)
            if msg.code == ErrorCode.TOO_MANY_ATTEMPTS:
                self.state = ClientState.FAILED
                return HandshakeFailed(msg.code, msg.reason)
            self.state = ClientState.READY
            return RegisterRejected(msg.code, msg.reason, msg.retry_after_ms)
        if state is ClientState.AWAIT_HELLO_DONE:
            if isinstance(msg, m.HelloDone) and self._session_keys is None:
                self.state = ClientState.DONE
                self.session = Session(self._encoder, self._decoder)
                return LoginComplete(msg.name, msg.session_id, msg.server_time_ms)
            if isinstance(msg, m.HelloError) and self._session_keys is not None:
                self.state = ClientState.FAILED
                return HandshakeFailed(msg.code, msg.reason)
        raise _unexpected(msg, state)

    def _on_server_key(self, msg: m.ServerKey, body: bytes) -> ClientEvent:
        tbs = server_key_tbs(msg.server_random, msg.server_key, msg.identity_key)
        try:
            Ed25519PublicKey.from_public_bytes(msg.identity_key).verify(
                msg.signature, signature_input(self._hello_body, tbs)
            )
        except (InvalidSignature, ValueError):
            raise RemoteProtocolError(
                ErrorCode.BAD_SERVER_SIGNATURE, "the server key signature does not verify"
            )
        self._transcript.add(body)
        assert self._ephemeral is not None
        shared = x25519_exchange(self._ephemeral, msg.server_key)
        self._ephemeral = None
        keys = derive_handshake_keys(shared, self._transcript.digest())
        self._encoder.set_keys(keys.client_key, keys.client_iv)
        self._decoder.set_keys(keys.server_key, keys.server_iv)
        self._keyed = True
        self.identity_key = msg.identity_key
        self.state = ClientState.AWAIT_IDENTITY_DECISION
        return ServerIdentityReceived(msg.identity_key, fingerprint(msg.identity_key))

    def _on_ack(self, msg: m.Ack) -> None:
        client_key = X25519PrivateKey.from_private_bytes(self._rng(32))
        self._send(m.ClientKey(_raw_public(client_key)))
        shared = x25519_exchange(client_key, msg.server_key)
        del client_key
        transcript_hash = self._transcript.digest()
        keys, finished_key = derive_session_keys(shared, transcript_hash)
        self._encoder.set_keys(keys.client_key, keys.client_iv)
        self._send(m.Finished(finished_mac(finished_key, transcript_hash)), record=False)
        self._session_keys = keys


# --- server ----------------------------------------------------------------------------------


class ServerState(enum.Enum):
    AWAIT_HELLO = enum.auto()
    AWAIT_CREDENTIALS = enum.auto()
    AWAIT_SIGNIN_DECISION = enum.auto()
    AWAIT_REGISTER_DECISION = enum.auto()
    AWAIT_CLIENT_KEY = enum.auto()
    AWAIT_FINISHED = enum.auto()
    AWAIT_COMPLETION = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


_WAITING = (
    ServerState.AWAIT_SIGNIN_DECISION,
    ServerState.AWAIT_REGISTER_DECISION,
    ServerState.AWAIT_COMPLETION,
)


class ServerHandshake(_Machine):
    """The server's side of the handshake.

    Args:
        identity: the server's long-term Ed25519 identity key.
        rng: the source of randomness (tests fix it for known-answer vectors).
        padding: the frame padding policy.
        max_attempts: rejected Signin/register answers before the connection is closed.
    """

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        *,
        rng: Random = os.urandom,
        padding: Padding = _DEFAULT_PADDING,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        super().__init__(padding)
        self._identity = identity
        self._rng = rng
        self._max_attempts = max_attempts
        self._attempts = 0
        self.state = ServerState.AWAIT_HELLO
        self._handshake_keys: TrafficKeys | None = None
        self._key_b: X25519PrivateKey | None = None
        self._session_keys: TrafficKeys | None = None
        self._finished: tuple[bytes, bytes] | None = None
        self._credentials: CredentialsReceived | None = None
        self.name: str | None = None
        self.device_id: bytes | None = None

    # Input.

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        """Feed bytes from the client; returns what happened."""
        self._decoder.receive_data(data)
        return self._process()

    def _process(self) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        while self.state not in _WAITING and self.state not in (
            ServerState.DONE,
            ServerState.FAILED,
        ):
            if self.state is ServerState.AWAIT_FINISHED:
                event = self._check_finished()
                if event is None:
                    break
                events.append(event)
                continue
            item = self._next()
            if item is None:
                break
            event = self._handle(*item)
            if event is not None:
                events.append(event)
        if self.state in _WAITING and self._decoder.buffered > MAX_BUFFER_WHILE_WAITING:
            raise RemoteProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, "data sent before the server answered"
            )
        return events

    def _handle(self, msg: m.Message, body: bytes) -> ServerEvent | None:
        state = self.state
        if state is ServerState.AWAIT_HELLO and isinstance(msg, m.Hello):
            self._on_hello(msg, body)
            return None
        if state is ServerState.AWAIT_CREDENTIALS and isinstance(msg, m.Signin | m.Register):
            self._transcript.add(body)
            register = isinstance(msg, m.Register)
            device = b"\x00" * 16 if isinstance(msg, m.Register) else msg.device_id
            self._credentials = CredentialsReceived(register, msg.name, msg.password, device)
            self.state = (
                ServerState.AWAIT_REGISTER_DECISION if register
                else ServerState.AWAIT_SIGNIN_DECISION
            )
            return self._credentials
        if state is ServerState.AWAIT_CLIENT_KEY and isinstance(msg, m.ClientKey):
            self._on_client_key(msg, body)
            return None
        raise _unexpected(msg, state)

    def _on_hello(self, msg: m.Hello, body: bytes) -> None:
        if msg.version != m.PROTOCOL_VERSION:
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {msg.version} is not supported (this server speaks "
                f"{m.PROTOCOL_VERSION})",
            )
        self._transcript.add(body)
        key_a = X25519PrivateKey.from_private_bytes(self._rng(32))
        server_random = self._rng(32)
        key_a_public = _raw_public(key_a)
        identity_public = _raw_public(self._identity)
        signature = self._identity.sign(
            signature_input(body, server_key_tbs(server_random, key_a_public, identity_public))
        )
        self._send(
            m.ServerKey(server_random, key_a_public, identity_public, signature), plain=True
        )
        shared = x25519_exchange(key_a, msg.client_key)
        del key_a  # forward secrecy: key A's private half is used once
        keys = derive_handshake_keys(shared, self._transcript.digest())
        self._encoder.set_keys(keys.server_key, keys.server_iv)
        self._decoder.set_keys(keys.client_key, keys.client_iv)
        self._keyed = True
        self._handshake_keys = keys
        self.state = ServerState.AWAIT_CREDENTIALS

    def _on_client_key(self, msg: m.ClientKey, body: bytes) -> None:
        self._transcript.add(body)
        assert self._key_b is not None
        shared = x25519_exchange(self._key_b, msg.client_key)
        self._key_b = None  # forward secrecy: key B's private half is used once
        transcript_hash = self._transcript.digest()
        keys, finished_key = derive_session_keys(shared, transcript_hash)
        self._decoder.set_keys(keys.client_key, keys.client_iv)
        self._session_keys = keys
        self._finished = (finished_key, transcript_hash)
        self.state = ServerState.AWAIT_FINISHED

    def _check_finished(self) -> ServerEvent | None:
        assert self._finished is not None
        finished_key, transcript_hash = self._finished
        try:
            item = self._next()
            if item is None:
                return None
            msg = item[0]
            ok = isinstance(msg, m.Finished) and constant_time_equal(
                msg.verify_data, finished_mac(finished_key, transcript_hash)
            )
        except RemoteProtocolError:
            ok = False
        self._finished = None
        if not ok:
            return self._hello_error()
        assert self.name is not None and self.device_id is not None
        self.state = ServerState.AWAIT_COMPLETION
        return LoginVerified(self.name, self.device_id)

    def _hello_error(self) -> HandshakeFailed:
        # Sent under the handshake keys: the client may not hold the same session keys.
        reason = "the encrypted test message did not verify; sign in again"
        self._send(m.HelloError(int(ErrorCode.HELLO_ERROR), reason), record=False)
        self._session_keys = None
        self.state = ServerState.FAILED
        return HandshakeFailed(ErrorCode.HELLO_ERROR, reason)

    # Decisions.

    def _decided(self, state: ServerState) -> CredentialsReceived:
        if self.state is not state or self._credentials is None:
            raise LocalProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, f"no decision pending in state {self.state.name}"
            )
        credentials, self._credentials = self._credentials, None
        return credentials

    def accept_signin(self) -> list[ServerEvent]:
        """The password is right: send ACK + key B."""
        credentials = self._decided(ServerState.AWAIT_SIGNIN_DECISION)
        self.name, self.device_id = credentials.name, credentials.device_id
        self._key_b = X25519PrivateKey.from_private_bytes(self._rng(32))
        self._send(m.Ack(_raw_public(self._key_b)))
        self.state = ServerState.AWAIT_CLIENT_KEY
        return self._process()

    def reject_signin(self, code: ErrorCode, reason: str, retry_after_ms: int = 0) -> list[
            ServerEvent]:
        """Send NCK; the client may retry until the attempt limit closes the connection."""
        self._decided(ServerState.AWAIT_SIGNIN_DECISION)
        return self._reject(m.Nck, code, reason, retry_after_ms)

    def accept_register(self) -> list[ServerEvent]:
        """The account was created: send ACK register."""
        credentials = self._decided(ServerState.AWAIT_REGISTER_DECISION)
        self._send(m.AckRegister(credentials.name))
        self.state = ServerState.AWAIT_CREDENTIALS
        return self._process()

    def reject_register(self, code: ErrorCode, reason: str, retry_after_ms: int = 0) -> list[
            ServerEvent]:
        """Send NCK register (name taken, invalid, or limited)."""
        self._decided(ServerState.AWAIT_REGISTER_DECISION)
        return self._reject(m.NckRegister, code, reason, retry_after_ms)

    def _reject(self, cls: type[m.Nck] | type[m.NckRegister], code: ErrorCode, reason: str,
                retry_after_ms: int) -> list[ServerEvent]:
        self._attempts += 1
        if self._attempts >= self._max_attempts:
            reason = "too many failed attempts on this connection"
            self._send(cls(int(ErrorCode.TOO_MANY_ATTEMPTS), reason, retry_after_ms))
            self.state = ServerState.FAILED
            return [HandshakeFailed(ErrorCode.TOO_MANY_ATTEMPTS, reason)]
        self._send(cls(int(code), reason, retry_after_ms))
        self.state = ServerState.AWAIT_CREDENTIALS
        return self._process()

    def complete(self, session_id: bytes, server_time_ms: int) -> Session:
        """The user is marked online: send Hello done under the session keys; the session
        takes over the frame codecs (and any bytes already buffered)."""
        if self.state is not ServerState.AWAIT_COMPLETION or self._session_keys is None:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "login not verified")
        keys, self._session_keys = self._session_keys, None
        self._encoder.set_keys(keys.server_key, keys.server_iv)
        assert self.name is not None
        self._send(m.HelloDone(self.name, session_id, server_time_ms), record=False)
        self.state = ServerState.DONE
        self.session = Session(self._encoder, self._decoder)
        return self.session

    def fail_login(self, code: ErrorCode, reason: str) -> None:
        """Login bookkeeping failed after the test message verified: send hello error."""
        if self.state is not ServerState.AWAIT_COMPLETION:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "login not verified")
        self._send(m.HelloError(int(code), reason), record=False)
        self._session_keys = None
        self.state = ServerState.FAILED
