"""An independent chatproto/1 client written from docs/protocol.rst alone.

Blocking sockets, no Twisted, nothing imported from ``chatproto``.  Section names in
comments refer to docs/protocol.rst.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import socket
import struct
import time

import msgpack
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# --------------------------------------------------------------------------- constants

VERSION = 1
MAX_PLAIN_BODY = 1024
MAX_FRAME_BODY = 1 << 20
MAX_CHUNK = 524288
SIG_CONTEXT = b"chatproto/1 server key signature" + b"\x00"
HS_INFO = b"chatproto/1 handshake keys"
SESSION_INFO = b"chatproto/1 session keys"

# Message type numbers (Message types).
HELLO, SERVER_KEY, SIGNIN, REGISTER, ACK, NCK, ACK_REGISTER, NCK_REGISTER = range(1, 9)
CLIENT_KEY, FINISHED, HELLO_DONE, HELLO_ERROR = 9, 10, 11, 12
(ERROR, OK, CREATE, ACK_CREATE, CREATE_GROUP, ACK_CREATE_GROUP, CHAT, IMAGE_CHUNK,
 SEND_ACK, DELIVER, DELIVERY_ACK, READ, RECEIPT, TYPING, TYPING_EVENT, GROUP_ADD,
 GROUP_REMOVE, GROUP_LEAVE, GROUP_RENAME, GROUP_LIST, GROUPS, GROUP_MEMBERS, MEMBERS,
 PRESENCE_QUERY, PRESENCE, PRESENCE_EVENT, HISTORY, HISTORY_PAGE, SYNC, SYNC_DONE, QUIT,
 ACK_QUIT, PING, PONG) = range(32, 66)

TEXT, IMAGE, EVENT = 1, 2, 3
DELIVERED, READ_RECEIPT = 2, 3

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}\Z")

# Field schemas (Message reference / Nested records).  Type codes:
#   u8 u16 u32 u63: integer ranges;  bool;  str:a:b (UTF-8 bytes);  bin:a:b;  name
#   ?X: nil or X;  [n]X: array of at most n X;  R:Name: nested record
U63 = (1 << 63) - 1
RECORDS = {
    "ImageInfo": ["u32", "bin:32:32", "?str:0:64"],
    "GroupEvent": ["u8", "name", "[256]name", "str:0:200"],
    "PresenceInfo": ["name", "bool", "?u63"],
    "GroupInfo": ["u63", "str:0:200", "str:0:16", "u32"],
    "MemberInfo": ["name", "str:0:16", "bool", "?u63"],
    "HistoryEntry": ["u63", "name", "?name", "u63", "u8", "bin:0:65536", "?R:ImageInfo"],
}
SCHEMAS = {
    HELLO: ["u16", "bin:32:32", "bin:32:32"],
    SERVER_KEY: ["bin:32:32", "bin:32:32", "bin:32:32", "bin:64:64"],
    SIGNIN: ["name", "str:1:1024", "bin:16:16"],
    REGISTER: ["name", "str:1:1024"],
    ACK: ["bin:32:32"],
    NCK: ["u16", "str:0:1024", "u32"],
    ACK_REGISTER: ["name"],
    NCK_REGISTER: ["u16", "str:0:1024", "u32"],
    CLIENT_KEY: ["bin:32:32"],
    FINISHED: ["bin:32:32"],
    HELLO_DONE: ["name", "bin:16:16", "u63"],
    HELLO_ERROR: ["u16", "str:0:1024"],
    ERROR: ["u32", "u16", "str:0:1024", "[256]name"],
    OK: ["u32"],
    CREATE: ["u32", "name"],
    ACK_CREATE: ["u32", "name", "bool", "?u63"],
    CREATE_GROUP: ["u32", "u8", "u16", "[256]name", "str:0:200"],
    ACK_CREATE_GROUP: ["u32", "u63", "[256]name"],
    CHAT: ["u32", "bin:16:16", "u63", "?name", "?name", "u8", "bin:0:524288",
           "?R:ImageInfo"],
    IMAGE_CHUNK: ["u63", "u16", "bin:1:524288"],
    SEND_ACK: ["u32", "bin:16:16", "u63", "u63", "u63"],
    DELIVER: ["u63", "u63", "name", "?name", "u63", "u63", "?bin:16:16", "u8",
              "bin:0:524288", "?R:ImageInfo"],
    DELIVERY_ACK: ["u63"],
    READ: ["u63", "?name", "u63"],
    RECEIPT: ["u8", "u63", "name", "u63"],
    TYPING: ["u63", "?name", "bool"],
    TYPING_EVENT: ["u63", "name", "bool"],
    GROUP_ADD: ["u32", "u63", "[256]name"],
    GROUP_REMOVE: ["u32", "u63", "[256]name"],
    GROUP_LEAVE: ["u32", "u63"],
    GROUP_RENAME: ["u32", "u63", "str:0:200"],
    GROUP_LIST: ["u32"],
    GROUPS: ["u32", "[256]R:GroupInfo"],
    GROUP_MEMBERS: ["u32", "u63"],
    MEMBERS: ["u32", "u63", "[256]R:MemberInfo"],
    PRESENCE_QUERY: ["u32"],
    PRESENCE: ["u32", "[4096]R:PresenceInfo"],
    PRESENCE_EVENT: ["name", "bool", "?u63"],
    HISTORY: ["u32", "u63", "?name", "u63", "u16"],
    HISTORY_PAGE: ["u32", "u63", "?name", "[256]R:HistoryEntry", "bool"],
    SYNC: ["u32", "?u63"],
    SYNC_DONE: ["u32", "u63"],
    QUIT: ["u32"],
    ACK_QUIT: ["u32"],
    PING: ["u63"],
    PONG: ["u63"],
}
INT_MAX = {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF, "u63": U63}


class ProtocolError(Exception):
    """A violation detected by this client; ``code`` is the spec's error code."""

    def __init__(self, code: int, text: str):
        super().__init__(f"{code}: {text}")
        self.code = code


class ServerError(Exception):
    """The server sent Error / HelloError / Nck 205 that ends the connection."""

    def __init__(self, msg):
        super().__init__(repr(msg))
        self.msg = msg


class ConnectionClosed(Exception):
    pass


# --------------------------------------------------------------------------- layer 2


def _check_value(spec: str, v):
    if spec.startswith("?"):
        if v is None:
            return
        spec = spec[1:]
    if spec.startswith("["):
        bound, inner = spec[1:].split("]", 1)
        if not isinstance(v, list) or len(v) > int(bound):
            raise ProtocolError(105, f"bad array for {spec}: {v!r}")
        for x in v:
            _check_value(inner, x)
        return
    if spec.startswith("R:"):
        check_record(spec[2:], v)
        return
    if spec in INT_MAX:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= INT_MAX[spec]:
            raise ProtocolError(105, f"bad {spec}: {v!r}")
        return
    if spec == "bool":
        if not isinstance(v, bool):
            raise ProtocolError(105, f"bad bool: {v!r}")
        return
    if spec == "name":
        if not isinstance(v, str) or not NAME_RE.match(v):
            raise ProtocolError(105, f"bad name: {v!r}")
        return
    kind, lo, hi = spec.split(":")
    if kind == "str":
        if not isinstance(v, str):
            raise ProtocolError(105, f"expected str: {v!r}")
        n = len(v.encode("utf-8"))
    else:
        if not isinstance(v, bytes):
            raise ProtocolError(105, f"expected bin: {v!r}")
        n = len(v)
    if not int(lo) <= n <= int(hi):
        raise ProtocolError(105, f"{spec}: bad length {n}")


def check_record(rname: str, v):
    fields = RECORDS[rname]
    if not isinstance(v, list) or len(v) != len(fields):
        raise ProtocolError(105, f"bad {rname} record: {v!r}")
    for spec, x in zip(fields, v, strict=True):
        _check_value(spec, x)


def encode(*fields) -> bytes:
    """Encode a message ``[type, field1, ...]`` (smallest representation)."""
    return msgpack.packb(list(fields), use_bin_type=True)


def decode(payload: bytes) -> list:
    """Decode and validate one layer-2 message (Decoding rules)."""
    if len(payload) > MAX_FRAME_BODY:
        raise ProtocolError(105, "payload too long")
    try:
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True,
                              ext_hook=_reject_ext)
    except ProtocolError:
        raise
    except Exception as e:  # ExtraData, invalid UTF-8, truncated data, ...
        raise ProtocolError(105, f"bad MessagePack: {e}") from None
    _reject_forbidden(obj)
    if not isinstance(obj, list) or not obj:
        raise ProtocolError(105, "not a non-empty array")
    t = obj[0]
    if isinstance(t, bool) or not isinstance(t, int):
        raise ProtocolError(105, "type is not an integer")
    if t not in SCHEMAS:
        raise ProtocolError(106, f"unknown type {t}")
    schema = SCHEMAS[t]
    if len(obj) != len(schema) + 1:
        raise ProtocolError(105, f"type {t}: {len(obj) - 1} fields, expected {len(schema)}")
    for spec, v in zip(schema, obj[1:], strict=True):
        _check_value(spec, v)
    return obj


def _reject_ext(code, data):
    raise ProtocolError(105, "ext type")


def _reject_forbidden(obj):
    if isinstance(obj, dict) or isinstance(obj, float):
        raise ProtocolError(105, "map or float")
    if isinstance(obj, list):
        if len(obj) > 4096:
            raise ProtocolError(105, "array too long")
        for x in obj:
            _reject_forbidden(x)


def decode_group_event(body: bytes) -> list:
    try:
        obj = msgpack.unpackb(body, raw=False, use_list=True, ext_hook=_reject_ext)
    except Exception as e:
        raise ProtocolError(105, f"bad GroupEvent: {e}") from None
    check_record("GroupEvent", obj)
    return obj


# --------------------------------------------------------------------------- layer 1


def make_iv(static_iv: bytes, seq: int) -> bytes:
    """iv = static_iv XOR (00 00 00 00 || uint64(seq))."""
    return static_iv[:4] + (int.from_bytes(static_iv[4:], "big") ^ seq).to_bytes(8, "big")


def pad16(msg_length: int) -> int:
    return (-msg_length) % 16


def plain_frame(body: bytes) -> bytes:
    if not 1 <= len(body) <= MAX_PLAIN_BODY:
        raise ValueError("plaintext frame body out of range")
    return struct.pack(">I", len(body)) + body


class FrameSealer:
    """One direction's sending state: key, static IV, counter."""

    def __init__(self, key: bytes, static_iv: bytes, pad=pad16):
        self.aead = AESGCM(key)
        self.static_iv = static_iv
        self.seq = 0
        self.pad = pad

    def seal(self, payload: bytes, pad_length: int | None = None) -> bytes:
        if self.seq >= 1 << 32:
            raise ProtocolError(109, "frame limit")
        if pad_length is None:
            pad_length = self.pad(len(payload))
            if len(payload) + pad_length > MAX_FRAME_BODY:
                pad_length = max(0, MAX_FRAME_BODY - len(payload))
        iv = make_iv(self.static_iv, self.seq)
        header = struct.pack(">IB", len(payload), pad_length) + iv
        ct = self.aead.encrypt(iv, payload + b"\x00" * pad_length, header)
        self.seq += 1
        return header + ct


class FrameOpener:
    """One direction's receiving state."""

    def __init__(self, key: bytes, static_iv: bytes, max_body: int = MAX_FRAME_BODY):
        self.aead = AESGCM(key)
        self.static_iv = static_iv
        self.seq = 0
        self.max_body = max_body

    def expected_iv(self) -> bytes:
        return make_iv(self.static_iv, self.seq)

    def check_header(self, header: bytes) -> int:
        """Steps 1-3 of 'Receiving an encrypted frame'; returns the remaining length."""
        msg_length, pad_length = struct.unpack(">IB", header[:5])
        if msg_length + pad_length > self.max_body:
            raise ProtocolError(101, "frame too large")
        if self.seq >= 1 << 32:
            raise ProtocolError(109, "frame limit")
        return msg_length + pad_length + 16

    def open(self, frame: bytes) -> bytes:
        """Steps 5-8 on a complete frame."""
        header = frame[:17]
        msg_length, pad_length = struct.unpack(">IB", header[:5])
        if len(frame) != 17 + msg_length + pad_length + 16:
            raise ProtocolError(100, "frame length mismatch")
        if header[5:17] != self.expected_iv():
            raise ProtocolError(102, "bad iv")
        try:
            pt = self.aead.decrypt(header[5:17], frame[17:], header)
        except InvalidTag:
            raise ProtocolError(103, "bad tag") from None
        if any(pt[msg_length:]):
            raise ProtocolError(104, "bad padding")
        self.seq += 1
        return pt[:msg_length]


# --------------------------------------------------------------------------- key schedule


class Transcript:
    def __init__(self):
        self.h = hashlib.sha256()

    def add(self, body: bytes):
        self.h.update(struct.pack(">I", len(body)) + body)

    def digest(self) -> bytes:
        return self.h.copy().digest()


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def x25519(priv: X25519PrivateKey, pub: bytes) -> bytes:
    shared = priv.exchange(X25519PublicKey.from_public_bytes(pub))
    if shared == bytes(32):
        raise ProtocolError(105, "all-zero X25519 result")
    return shared


def x25519_raw(priv: bytes, pub: bytes) -> bytes:
    return x25519(X25519PrivateKey.from_private_bytes(priv), pub)


def x25519_public(priv: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def handshake_keys(salt: bytes, ikm: bytes) -> dict:
    okm = hkdf(salt, ikm, HS_INFO, 88)
    return dict(okm=okm, client_key=okm[0:32], server_key=okm[32:64],
                client_iv=okm[64:76], server_iv=okm[76:88])


def session_keys(th: bytes, ikm: bytes) -> dict:
    okm = hkdf(th, ikm, SESSION_INFO, 120)
    fk = okm[88:120]
    return dict(okm=okm, client_key=okm[0:32], server_key=okm[32:64],
                client_iv=okm[64:76], server_iv=okm[76:88], finished_key=fk,
                verify_data=hmac.new(fk, th, hashlib.sha256).digest())


def build_tbs(server_random: bytes, server_key: bytes, identity_key: bytes) -> bytes:
    """The exact 104-byte tbs layout of 'Server signature'."""
    tbs = (b"\x94\x02" + b"\xc4\x20" + server_random + b"\xc4\x20" + server_key
           + b"\xc4\x20" + identity_key)
    assert len(tbs) == 104
    return tbs


def signed_message(hello_body: bytes, tbs: bytes) -> bytes:
    return SIG_CONTEXT + hashlib.sha256(
        struct.pack(">I", len(hello_body)) + hello_body + struct.pack(">I", len(tbs)) + tbs
    ).digest()


def verify_server_signature(hello_body: bytes, sk_msg: list):
    _, server_random, server_key, identity_key, signature = sk_msg
    try:
        pub = Ed25519PublicKey.from_public_bytes(identity_key)
        pub.verify(signature, signed_message(
            hello_body, build_tbs(server_random, server_key, identity_key)))
    except (InvalidSignature, ValueError):
        raise ProtocolError(113, "BAD_SERVER_SIGNATURE") from None


def fingerprint(identity_key: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(identity_key).digest()).decode().rstrip("=")


def ed25519_public_from_seed(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_sign(seed: bytes, msg: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(msg)


# --------------------------------------------------------------------------- the client


class Client:
    """A blocking chatproto/1 client.

    Usage: ``c = Client(host, port, pin=fp); c.connect()``, then ``c.register()`` /
    ``c.signin()`` (returning the answer message), then session methods.
    """

    def __init__(self, host: str, port: int, pin: str | None, rng=os.urandom,
                 timeout: float = 10.0, device_id: bytes | None = None):
        self.host, self.port, self.pin = host, port, pin
        self.rng = rng
        self.timeout = timeout
        self.device_id = device_id or rng(16)
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.transcript = Transcript()
        self.sealer: FrameSealer | None = None
        self.opener: FrameOpener | None = None
        self.hs: dict | None = None
        self.session: dict | None = None
        self.name: str | None = None
        self.pending: list[list] = []  # session messages received but not consumed
        self.next_req = 1
        self.auto_pong = True
        self.identity_key: bytes | None = None

    # -- socket helpers
    def _recv_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out waiting for data")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionClosed("connection closed by peer")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _peek(self, n: int) -> bytes:
        data = self._recv_exact(n)
        self.buf[0:0] = data
        return data

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    # -- frames
    def read_plain(self) -> bytes:
        (n,) = struct.unpack(">I", self._recv_exact(4))
        if n == 0:
            raise ProtocolError(100, "empty plaintext frame")
        if n > MAX_PLAIN_BODY:
            raise ProtocolError(101, "plaintext frame too large")
        return self._recv_exact(n)

    def read_encrypted(self, opener: FrameOpener | None = None) -> bytes:
        opener = opener or self.opener
        header = self._recv_exact(17)
        rest = self._recv_exact(opener.check_header(header))
        return opener.open(header + rest)

    def send_msg(self, *fields, pad_length=None) -> bytes:
        body = encode(*fields)
        self.send_raw(self.sealer.seal(body, pad_length))
        return body

    # -- handshake
    def connect(self, sock: socket.socket | None = None):
        self.sock = sock or socket.create_connection((self.host, self.port),
                                                     timeout=self.timeout)
        eph = X25519PrivateKey.from_private_bytes(self.rng(32))
        client_random = self.rng(32)
        eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        hello = encode(HELLO, VERSION, client_random, eph_pub)
        self.send_raw(plain_frame(hello))
        self.transcript.add(hello)
        body = self.read_plain()
        msg = decode(body)
        if msg[0] == ERROR:
            raise ServerError(msg)
        if msg[0] != SERVER_KEY:
            raise ProtocolError(107, f"expected ServerKey, got {msg[0]}")
        verify_server_signature(hello, msg)
        fp = fingerprint(msg[3])
        if self.pin is not None and fp != self.pin:
            self.close()
            raise ProtocolError(114, f"SERVER_KEY_CHANGED: pinned {self.pin}, got {fp}")
        self.identity_key = msg[3]
        self.transcript.add(body)
        ikm = x25519(eph, msg[2])
        del eph
        self.hs = handshake_keys(self.transcript.digest(), ikm)
        self.sealer = FrameSealer(self.hs["client_key"], self.hs["client_iv"])
        self.opener = FrameOpener(self.hs["server_key"], self.hs["server_iv"])
        return msg

    def _hs_answer(self) -> tuple[list, bytes]:
        body = self.read_encrypted()
        msg = decode(body)
        if msg[0] in (ERROR, HELLO_ERROR):
            self.close()
            raise ServerError(msg)
        return msg, body

    def register(self, name: str, password: str) -> list:
        self.transcript.add(self.send_msg(REGISTER, name, password))
        msg, body = self._hs_answer()
        if msg[0] not in (ACK_REGISTER, NCK_REGISTER):
            raise ProtocolError(107, f"unexpected {msg[0]}")
        self.transcript.add(body)
        if msg[0] == NCK_REGISTER and msg[1] == 205:
            self.close()
        return msg

    def signin(self, name: str, password: str) -> list:
        """Returns Nck on refusal, HelloDone on success (session begun)."""
        self.transcript.add(self.send_msg(SIGNIN, name, password, self.device_id))
        msg, body = self._hs_answer()
        if msg[0] == NCK:
            self.transcript.add(body)
            if msg[1] == 205:
                self.close()
            return msg
        if msg[0] != ACK:
            raise ProtocolError(107, f"unexpected {msg[0]}")
        self.transcript.add(body)
        key_c = X25519PrivateKey.from_private_bytes(self.rng(32))
        c_pub = key_c.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        ck = encode(CLIENT_KEY, c_pub)
        self.transcript.add(ck)
        ck_frame = self.sealer.seal(ck)
        th = self.transcript.digest()
        self.session = session_keys(th, x25519(key_c, msg[1]))
        del key_c
        self.sealer = FrameSealer(self.session["client_key"], self.session["client_iv"])
        fin_frame = self.sealer.seal(encode(FINISHED, self.session["verify_data"]))
        self.send_raw(ck_frame + fin_frame)
        # HelloDone or HelloError: tell by the iv field (HelloDone or HelloError).
        header = self._peek(17)
        if header[5:17] == self.session["server_iv"]:
            self.opener = FrameOpener(self.session["server_key"], self.session["server_iv"])
            done = decode(self.read_encrypted())
            if done[0] != HELLO_DONE:
                raise ProtocolError(107, f"expected HelloDone, got {done[0]}")
            self.name = done[1]
            return done
        m = decode(self.read_encrypted())
        self.close()
        if m[0] in (HELLO_ERROR, ERROR):
            raise ServerError(m)
        raise ProtocolError(107, f"unexpected {m[0]} under handshake key")

    # -- session
    def req(self) -> int:
        r = self.next_req
        self.next_req += 1
        return r

    def send(self, *fields):
        return self.send_msg(*fields)

    def recv(self) -> list:
        """Next session message from the wire (answers Ping automatically)."""
        msg = decode(self.read_encrypted())
        if msg[0] == PING and self.auto_pong:
            self.send(PONG, msg[1])
        return msg

    def wait_for(self, pred, timeout: float | None = None) -> list:
        """Return the first message (pending first) matching pred; keeps the others."""
        for i, m in enumerate(self.pending):
            if pred(m):
                return self.pending.pop(i)
        old = self.timeout
        if timeout is not None:
            self.timeout = timeout
        try:
            while True:
                m = self.recv()
                if pred(m):
                    return m
                if m[0] == ERROR and m[1] == 0 and not 300 <= m[2] < 400:
                    raise ServerError(m)
                self.pending.append(m)
        finally:
            self.timeout = old

    def wait_type(self, t: int, **kw) -> list:
        return self.wait_for(lambda m: m[0] == t, **kw)

    def wait_reply(self, req: int, timeout: float | None = None) -> list:
        """The reply to request ``req`` (its field 1 is ``req``)."""
        reply_types = {ERROR, OK, ACK_CREATE, ACK_CREATE_GROUP, SEND_ACK, GROUPS, MEMBERS,
                       PRESENCE, HISTORY_PAGE, SYNC_DONE, ACK_QUIT}
        return self.wait_for(lambda m: m[0] in reply_types and m[1] == req, timeout)

    def sync(self, cursor=None) -> tuple[list, list]:
        r = self.req()
        self.send(SYNC, r, cursor)
        delivers = []
        while True:
            m = self.wait_for(lambda m: m[0] == DELIVER or (m[0] in (SYNC_DONE, ERROR)
                                                          and m[1] == r))
            if m[0] == DELIVER:
                delivers.append(m)
            else:
                return delivers, m

    def create(self, peer: str) -> list:
        r = self.req()
        self.send(CREATE, r, peer)
        return self.wait_reply(r)

    def chat_text(self, text: str, to: str | None = None, group_id: int = 0,
                  client_msg_id: bytes | None = None) -> tuple[int, bytes]:
        r = self.req()
        cmid = client_msg_id or os.urandom(16)
        self.send(CHAT, r, cmid, group_id, to, None, TEXT, text.encode("utf-8"), None)
        return r, cmid

    def send_image(self, data: bytes, to: str | None = None, group_id: int = 0,
                   chunk: int = MAX_CHUNK) -> tuple[int, bytes]:
        r = self.req()
        cmid = os.urandom(16)
        info = [len(data), hashlib.sha256(data).digest(), None]
        self.send(CHAT, r, cmid, group_id, to, None, IMAGE, data[:chunk], info)
        index = 1
        for off in range(chunk, len(data), chunk):
            self.send(IMAGE_CHUNK, r, index, data[off:off + chunk])
            index += 1
        return r, cmid

    def receive_image(self, deliver: list) -> bytes:
        """Reassemble the image of an IMAGE Deliver from its ImageChunks; check SHA-256."""
        total, digest, _mime = deliver[10]
        parts = [deliver[9]]
        got = len(deliver[9])
        index = 1
        while got < total:
            m = self.wait_for(lambda m: m[0] == IMAGE_CHUNK and m[1] == deliver[1])
            if m[2] != index:
                raise ProtocolError(105, f"chunk index {m[2]}, expected {index}")
            parts.append(m[3])
            got += len(m[3])
            index += 1
        data = b"".join(parts)
        if len(data) != total or hashlib.sha256(data).digest() != digest:
            raise ProtocolError(305, "image SHA-256 mismatch")
        return data

    def quit(self) -> list:
        r = self.req()
        self.send(QUIT, r)
        return self.wait_reply(r)

    def ping(self, nonce: int) -> list:
        self.send(PING, nonce)
        return self.wait_for(lambda m: m[0] == PONG and m[1] == nonce)

    def read_until_closed(self, timeout: float = 5.0) -> list:
        """Read messages until EOF; returns them (used after fatal errors)."""
        out = []
        old = self.timeout
        self.timeout = timeout
        try:
            while True:
                try:
                    out.append(decode(self.read_encrypted()))
                except ConnectionClosed:
                    return out
        finally:
            self.timeout = old


def login(host, port, pin, name, password, register=False, **kw) -> Client:
    c = Client(host, port, pin, **kw)
    c.connect()
    if register:
        ans = c.register(name, password)
        if ans[0] != ACK_REGISTER:
            raise ServerError(ans)
    done = c.signin(name, password)
    if done[0] != HELLO_DONE:
        raise ServerError(done)
    return c
