"""The login and registration handshake as two sans-IO state machines.

The message flow is the original design's (Hello, server key, Signin/register, ACK/NCK,
clientkey, encrypted test message, Hello done/hello error), made safe: the server key message is
signed by the server's long-term Ed25519 identity over the transcript, every later message is an
authenticated frame under keys derived from the transcript, and the session keys come from a
second ephemeral exchange (forward secret, fresh for every login). docs/protocol.rst, sections
"Handshake" and "Protocol version 2", is the byte-level description.

Two versions share the flow. Version 1 (Hello, type 1) uses X25519 for both exchanges and the
original key schedule. Version 2 (Hello2, type 13) offers versions and key-exchange suites; the
server's choice sits in the signed ServerKey2, whose signature covers the client's offer as it
was sent, so an attacker who strips the better suite is detected. Its key schedule is chained
(:mod:`chatproto.wire.schedule`), it pads inside the encrypted messages
(:mod:`chatproto.wire.padding`) and its session ratchets its keys (KeyUpdate).

Both machines work the same way: feed bytes with ``receive_data`` (which returns events), call
the methods that answer events, and write out whatever ``data_to_send`` returns after each call.
Protocol violations raise :class:`RemoteProtocolError`; the adapter then writes
``error_frame(...)`` and closes.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chatproto.wire import messages as m
from chatproto.wire import schedule
from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.frame import FrameDecoder, FrameEncoder, no_padding, pad_to_block
from chatproto.wire.handshake_events import (
    ClientEvent,
    CredentialsReceived,
    HandshakeFailed,
    LoginComplete,
    LoginVerified,
    Registered,
    RegisterRejected,
    ServerEvent,
    ServerIdentityReceived,
    SigninRejected,
    unauthenticated_reason,
)
from chatproto.wire.identity_keys import identity_key_problem
from chatproto.wire.keys import (
    Transcript,
    constant_time_equal,
    derive_handshake_keys,
    derive_session_keys,
    fingerprint,
    finished_mac,
    signature_input,
)
from chatproto.wire.padding import pad_message
from chatproto.wire.session import Session
from chatproto.wire.suites import SUITES, X25519_ID, KeyPair, Seed, Suite, default_suites

#: While the handshake waits for a decision (password check, login bookkeeping) the peer should
#: send nothing; at most this many bytes are buffered before that is a protocol violation.
MAX_BUFFER_WHILE_WAITING = 64 * 1024
#: Rejected Signin/register attempts on one connection before it is closed.
DEFAULT_MAX_ATTEMPTS = 5
#: Protocol versions this implementation speaks, best first.
SUPPORTED_VERSIONS = (2, 1)

Random = Callable[[int], bytes]
Padding = Callable[[int], int]

_DEFAULT_PADDING = pad_to_block(16)
_X25519 = SUITES[X25519_ID]


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def server_key_tbs(server_random: bytes, server_key: bytes, identity_key: bytes) -> bytes:
    """Version 1's signed part of SERVER_KEY: the MessagePack array ``[2, random, A, identity]``."""
    return msgpack.packb([m.ServerKey.TYPE, server_random, server_key, identity_key],
                         use_bin_type=True)


def server_key2_tbs(version: int, suite: int, server_random: bytes, server_share: bytes,
                    identity_key: bytes) -> bytes:
    """Version 2's signed part of SERVER_KEY2: ServerKey2's array without the signature."""
    return msgpack.packb(
        [m.ServerKey2.TYPE, version, suite, server_random, server_share, identity_key],
        use_bin_type=True,
    )


def _unexpected(msg: m.Message, state: enum.Enum) -> RemoteProtocolError:
    return RemoteProtocolError(
        ErrorCode.UNEXPECTED_MESSAGE, f"{type(msg).__name__} is not expected in state {state.name}"
    )


class _Machine:
    """What both sides share: the frame codecs, the transcript and the outgoing buffer."""

    def __init__(self, padding: Padding, rng: Random | None) -> None:
        self._encoder = FrameEncoder(padding=padding)
        self._decoder = FrameDecoder()
        self._transcript = Transcript()
        self._out = bytearray()
        self._keyed = False
        # Tests and vectors fix the randomness; keys then come from it too (suites.Seed).
        self._seed: Seed | None = rng
        self._random: Random = rng if rng is not None else os.urandom
        #: The negotiated protocol version (the client's offer until ServerKey2 arrives).
        self.version = 1
        #: The negotiated key-exchange suite.
        self.suite: Suite = _X25519
        self.session: Session | None = None

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (drained)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _frame(self, body: bytes, *, credentials: bool = False) -> bytes:
        if not self._keyed:
            return self._encoder.encode_plain(body)
        if self.version >= 2:
            body = pad_message(body, credentials=credentials)
        return self._encoder.encode(body)

    def _send(self, msg: m.Message, *, record: bool = True) -> None:
        body = m.encode_message(msg)
        if record:
            self._transcript.add(body)
        self._out += self._frame(body, credentials=isinstance(msg, m.Signin | m.Register))

    def _next(self) -> tuple[m.Message, bytes] | None:
        payload = self._decoder.next_payload()
        if payload is None:
            return None
        padded = self.version >= 2 and self._decoder.keyed
        msg = m.decode_message(payload, padded=padded, canonical=True)
        # Canonical encoding: the message's own bytes are the payload without the padding.
        return msg, (m.encode_message(msg, check=False) if padded else payload)

    def _set_keys_v2(self, send_secret: bytes, receive_secret: bytes) -> None:
        self._encoder.set_keys(*schedule.traffic_key_iv(send_secret))
        self._decoder.set_keys(*schedule.traffic_key_iv(receive_secret))
        self._encoder.set_padding(no_padding)  # version 2 pads inside the message
        self._keyed = True

    def error_frame(self, code: ErrorCode, reason: str) -> bytes:
        """A best-effort ERROR message to send before closing (under the current keys)."""
        try:
            return self._frame(m.encode_message(m.Error(0, int(code), reason[:200], ())))
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
        rng: fixed randomness for tests and known-answer vectors (keys are then derived from
            it); by default os.urandom and keys from ``generate()``.
        padding: the frame padding policy of version 1 (version 2 pads inside messages).
        version: 2 (default) sends Hello2 offering ``suites``; 1 sends the original Hello.
            There is no automatic fallback from 2 to 1: that fallback is exactly the
            downgrade the signed offer prevents.
        suites: the key-exchange suites to offer in version 2, best first (default: the
            hybrid X25519MLKEM768 where available, then X25519).
    """

    def __init__(self, *, rng: Random | None = None, padding: Padding = _DEFAULT_PADDING,
                 version: int = 2, suites: Sequence[int] | None = None) -> None:
        super().__init__(padding, rng)
        if version not in SUPPORTED_VERSIONS:
            raise LocalProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"version {version}")
        offered = tuple(suites) if suites is not None else default_suites()
        if not offered or any(s not in SUITES for s in offered) or len(set(offered)) != len(
                offered):
            raise LocalProtocolError(ErrorCode.INTERNAL_ERROR, f"bad suite list {offered}")
        self.version = version
        self._offered = offered
        self.state = ClientState.START
        self._key_pairs: dict[int, KeyPair] = {}
        self._hello_body = b""
        self._hs_secret = b""
        # The server direction's session keys, until Hello done arrives under them.
        self._server_session: tuple[bytes, bytes] | None = None
        self._session_secrets: schedule.TrafficSecrets | None = None
        self.identity_key: bytes | None = None

    def start(self) -> None:
        """Queue Hello (version 1) or Hello2 (version 2)."""
        if self.state is not ClientState.START:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "handshake already started")
        hello: m.Message
        if self.version == 1:
            pair = _X25519.generate(self._seed)
            self._key_pairs = {X25519_ID: pair}
            hello = m.Hello(m.PROTOCOL_VERSION, self._random(32), pair.share)
        else:
            client_random = self._random(32)
            self._key_pairs = {s: SUITES[s].generate(self._seed) for s in self._offered}
            shares = tuple(m.KeyShare(s, p.share) for s, p in self._key_pairs.items())
            hello = m.Hello2((2,), client_random, shares)
        self._hello_body = m.encode_message(hello)
        self._send(hello)
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
        keys = self._server_session
        iv = self._decoder.peek_iv()
        if keys is not None and iv is not None and constant_time_equal(iv, keys[1]):
            self._decoder.set_keys(*keys)
            self._server_session = None

    def _handle(self, msg: m.Message, body: bytes) -> ClientEvent | None:
        state = self.state
        if isinstance(msg, m.Error):
            self.state = ClientState.FAILED
            if not self._keyed:
                return HandshakeFailed(msg.code, unauthenticated_reason(msg.code), False)
            return HandshakeFailed(msg.code, msg.reason)
        if state is ClientState.AWAIT_SERVER_KEY:
            if isinstance(msg, m.ServerKey) and self.version == 1:
                return self._on_server_key(msg, body)
            if isinstance(msg, m.ServerKey2) and self.version == 2:
                return self._on_server_key2(msg, body)
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
            if isinstance(msg, m.HelloDone) and self._server_session is None:
                self.state = ClientState.DONE
                secrets = self._session_secrets
                self.session = Session(
                    self._encoder, self._decoder,
                    send_secret=secrets.client if secrets else None,
                    receive_secret=secrets.server if secrets else None,
                )
                self._session_secrets = None
                return LoginComplete(msg.name, msg.session_id, msg.server_time_ms)
            if isinstance(msg, m.HelloError) and self._server_session is not None:
                self.state = ClientState.FAILED
                return HandshakeFailed(msg.code, msg.reason)
        raise _unexpected(msg, state)

    def _verify_identity(self, identity_key: bytes, signature: bytes, signed: bytes) -> None:
        problem = identity_key_problem(identity_key)
        if problem is not None:
            raise RemoteProtocolError(
                ErrorCode.BAD_SERVER_SIGNATURE, f"the server identity key is {problem}"
            )
        try:
            Ed25519PublicKey.from_public_bytes(identity_key).verify(signature, signed)
        except (InvalidSignature, ValueError):
            raise RemoteProtocolError(
                ErrorCode.BAD_SERVER_SIGNATURE, "the server key signature does not verify"
            )

    def _identity_received(self, identity_key: bytes) -> ClientEvent:
        self.identity_key = identity_key
        self.state = ClientState.AWAIT_IDENTITY_DECISION
        return ServerIdentityReceived(identity_key, fingerprint(identity_key))

    def _on_server_key(self, msg: m.ServerKey, body: bytes) -> ClientEvent:
        tbs = server_key_tbs(msg.server_random, msg.server_key, msg.identity_key)
        self._verify_identity(msg.identity_key, msg.signature,
                              signature_input(self._hello_body, tbs))
        self._transcript.add(body)
        shared = self._key_pairs.pop(X25519_ID).decapsulate(msg.server_key)
        keys = derive_handshake_keys(shared, self._transcript.digest())
        self._encoder.set_keys(keys.client_key, keys.client_iv)
        self._decoder.set_keys(keys.server_key, keys.server_iv)
        self._keyed = True
        return self._identity_received(msg.identity_key)

    def _on_server_key2(self, msg: m.ServerKey2, body: bytes) -> ClientEvent:
        tbs = server_key2_tbs(msg.version, msg.suite, msg.server_random, msg.server_share,
                              msg.identity_key)
        self._verify_identity(
            msg.identity_key, msg.signature,
            signature_input(self._hello_body, tbs, context=schedule.SIGNATURE_CONTEXT_V2),
        )
        if msg.version != 2 or msg.suite not in self._key_pairs:
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"the server chose version {msg.version}, suite {msg.suite}, not offered",
            )
        self._transcript.add(body)
        pair = self._key_pairs.pop(msg.suite)
        self._key_pairs.clear()  # the other offered suites' private keys are never used
        self.suite = SUITES[msg.suite]
        self._hs_secret = schedule.handshake_secret(pair.decapsulate(msg.server_share))
        secrets = schedule.handshake_traffic(self._hs_secret, self._transcript.digest())
        self._set_keys_v2(secrets.client, secrets.server)
        return self._identity_received(msg.identity_key)

    def _on_ack(self, msg: m.Ack) -> None:
        shared, response = self.suite.encapsulate(msg.server_key, self._seed)
        self._send(m.ClientKey(response))
        transcript_hash = self._transcript.digest()
        if self.version == 1:
            keys, finished_key = derive_session_keys(shared, transcript_hash)
            client_key, client_iv = keys.client_key, keys.client_iv
            self._server_session = (keys.server_key, keys.server_iv)
        else:
            master = schedule.master_secret(self._hs_secret, shared, transcript_hash)
            self._hs_secret = b""
            secrets, finished_key = schedule.application_traffic(master, transcript_hash)
            client_key, client_iv = schedule.traffic_key_iv(secrets.client)
            self._server_session = schedule.traffic_key_iv(secrets.server)
            self._session_secrets = secrets
        self._encoder.set_keys(client_key, client_iv)
        self._send(m.Finished(finished_mac(finished_key, transcript_hash)), record=False)


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
        rng: fixed randomness for tests and known-answer vectors (keys are then derived from
            it); by default os.urandom and keys from ``generate()``.
        padding: the frame padding policy of version 1 (version 2 pads inside messages).
        max_attempts: rejected Signin/register answers before the connection is closed.
        versions: the protocol versions accepted (``(2,)`` refuses version 1 clients).
        suites: the version-2 key-exchange suites accepted, in the server's preference (the
            first one the client offered is chosen); default: hybrid where available, X25519.
    """

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        *,
        rng: Random | None = None,
        padding: Padding = _DEFAULT_PADDING,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        suites: Sequence[int] | None = None,
    ) -> None:
        super().__init__(padding, rng)
        self._identity = identity
        self._max_attempts = max_attempts
        self._versions = tuple(versions)
        self._suites = tuple(suites) if suites is not None else default_suites()
        if not self._versions or not set(self._versions) <= set(SUPPORTED_VERSIONS) or (
                not self._suites or not set(self._suites) <= set(SUITES)):
            raise LocalProtocolError(ErrorCode.INTERNAL_ERROR,
                                     f"bad versions {versions} or suites {suites}")
        self._attempts = 0
        self.state = ServerState.AWAIT_HELLO
        self._hs_secret = b""
        self._key_pair: KeyPair | None = None
        self._session_send: tuple[bytes, bytes] | None = None
        self._session_secrets: schedule.TrafficSecrets | None = None
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
        if state is ServerState.AWAIT_HELLO and isinstance(msg, m.Hello2):
            self._on_hello2(msg, body)
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
        if msg.version != m.PROTOCOL_VERSION or 1 not in self._versions:
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {msg.version} is not supported (this server speaks "
                f"{', '.join(map(str, self._versions))})",
            )
        self._transcript.add(body)
        shared, key_a_public = _X25519.encapsulate(msg.client_key, self._seed)
        server_random = self._random(32)
        identity_public = _raw_public(self._identity)
        signature = self._identity.sign(
            signature_input(body, server_key_tbs(server_random, key_a_public, identity_public))
        )
        self._send(m.ServerKey(server_random, key_a_public, identity_public, signature))
        keys = derive_handshake_keys(shared, self._transcript.digest())
        self._encoder.set_keys(keys.server_key, keys.server_iv)
        self._decoder.set_keys(keys.client_key, keys.client_iv)
        self._keyed = True
        self.state = ServerState.AWAIT_CREDENTIALS

    def _on_hello2(self, msg: m.Hello2, body: bytes) -> None:
        if 2 not in msg.versions or 2 not in self._versions:
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"no common protocol version (this server speaks "
                f"{', '.join(map(str, self._versions))})",
            )
        offered = {share.suite: share.share for share in msg.key_shares}
        if len(offered) != len(msg.key_shares):
            raise RemoteProtocolError(ErrorCode.MALFORMED_MESSAGE, "a suite offered twice")
        chosen = next((s for s in self._suites if s in offered), None)
        if chosen is None:
            raise RemoteProtocolError(
                ErrorCode.UNSUPPORTED_VERSION, "no common key-exchange suite"
            )
        self.version, self.suite = 2, SUITES[chosen]
        self._transcript.add(body)
        shared, response = self.suite.encapsulate(offered[chosen], self._seed)
        server_random = self._random(32)
        identity_public = _raw_public(self._identity)
        tbs = server_key2_tbs(2, chosen, server_random, response, identity_public)
        signature = self._identity.sign(
            signature_input(body, tbs, context=schedule.SIGNATURE_CONTEXT_V2)
        )
        self._send(m.ServerKey2(2, chosen, server_random, response, identity_public, signature))
        self._hs_secret = schedule.handshake_secret(shared)
        secrets = schedule.handshake_traffic(self._hs_secret, self._transcript.digest())
        self._set_keys_v2(secrets.server, secrets.client)
        self.state = ServerState.AWAIT_CREDENTIALS

    def _on_client_key(self, msg: m.ClientKey, body: bytes) -> None:
        self._transcript.add(body)
        pair, self._key_pair = self._key_pair, None  # key B's private half is used once
        assert pair is not None
        shared = pair.decapsulate(msg.client_key)
        transcript_hash = self._transcript.digest()
        if self.version == 1:
            keys, finished_key = derive_session_keys(shared, transcript_hash)
            self._decoder.set_keys(keys.client_key, keys.client_iv)
            self._session_send = (keys.server_key, keys.server_iv)
        else:
            master = schedule.master_secret(self._hs_secret, shared, transcript_hash)
            self._hs_secret = b""
            secrets, finished_key = schedule.application_traffic(master, transcript_hash)
            self._decoder.set_keys(*schedule.traffic_key_iv(secrets.client))
            self._session_send = schedule.traffic_key_iv(secrets.server)
            self._session_secrets = secrets
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
        self._forget_session_keys()
        self.state = ServerState.FAILED
        return HandshakeFailed(ErrorCode.HELLO_ERROR, reason)

    def _forget_session_keys(self) -> None:
        self._session_send = None
        self._session_secrets = None

    # Decisions.

    def _decided(self, state: ServerState) -> CredentialsReceived:
        if self.state is not state or self._credentials is None:
            raise LocalProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE, f"no decision pending in state {self.state.name}"
            )
        credentials, self._credentials = self._credentials, None
        return credentials

    def accept_signin(self) -> list[ServerEvent]:
        """The password is right: send ACK + key B (the suite's share)."""
        credentials = self._decided(ServerState.AWAIT_SIGNIN_DECISION)
        self.name, self.device_id = credentials.name, credentials.device_id
        self._key_pair = self.suite.generate(self._seed)
        self._send(m.Ack(self._key_pair.share))
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
        if self.state is not ServerState.AWAIT_COMPLETION or self._session_send is None:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "login not verified")
        self._encoder.set_keys(*self._session_send)
        secrets = self._session_secrets
        self._forget_session_keys()
        assert self.name is not None
        self._send(m.HelloDone(self.name, session_id, server_time_ms), record=False)
        self.state = ServerState.DONE
        self.session = Session(
            self._encoder, self._decoder,
            send_secret=secrets.server if secrets else None,
            receive_secret=secrets.client if secrets else None,
        )
        return self.session

    def fail_login(self, code: ErrorCode, reason: str) -> None:
        """Login bookkeeping failed after the test message verified: send hello error."""
        if self.state is not ServerState.AWAIT_COMPLETION:
            raise LocalProtocolError(ErrorCode.UNEXPECTED_MESSAGE, "login not verified")
        self._send(m.HelloError(int(code), reason), record=False)
        self._forget_session_keys()
        self.state = ServerState.FAILED
