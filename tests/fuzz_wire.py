"""Mutation fuzzer for the sans-IO wire layer (not collected by pytest).

Usage::

    .venv/bin/python tests/fuzz_wire.py N [SEED]      # or FUZZ_SEED=... in the environment

Feeds N inputs in total, mutated from valid data (bit flips, truncations, splices, inserted,
deleted and duplicated runs, random bytes), to:

* ``FrameDecoder`` in plaintext mode and keyed mode (random chunking, sometimes low limits);
* ``decode_message`` (valid encodings of every message type, built from the field specs);
* ``decode_record`` (every nested record type);
* ``ServerHandshake.receive_data`` and ``ClientHandshake.receive_data`` (mutations of a
  valid register / wrong signin / signin transcript, answered by a scripted peer), for
  protocol version 1, version 2 with the X25519 suite and version 2 with X25519MLKEM768
  (its ML-KEM encapsulation is random, so mutated client transcripts reach the server's
  Hello2 handling and the client side goes all the way), sessions included (KeyUpdate).

Any exception other than RemoteProtocolError is unexpected; the first few are printed with
their traceback and how to reproduce them. Prints ``ran N inputs, U unexpected exceptions`` and
exits 1 if U > 0.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from chatproto.wire import messages as m  # noqa: E402
from chatproto.wire.errors import ErrorCode, RemoteProtocolError  # noqa: E402
from chatproto.wire.frame import FrameDecoder, FrameEncoder, no_padding  # noqa: E402
from chatproto.wire.handshake import (  # noqa: E402
    ClientHandshake,
    ClientState,
    CredentialsReceived,
    ServerHandshake,
    ServerState,
)
from chatproto.wire.suites import X25519_ID  # noqa: E402

IDENTITY = Ed25519PrivateKey.from_private_bytes(bytes(32))
KEY = bytes(range(32))
IV = bytes(range(100, 112))
NAME, PASSWORD, WRONG, DEVICE = "alice", "hunter2-p\u00e4ss", "wrong-password", bytes(16)
MAX_UNEXPECTED_SHOWN = 5


def counter_rng(label: bytes) -> Callable[[int], bytes]:
    """Deterministic rng: call i returns SHA-512(label || uint32 BE i)[:n]."""
    counter = itertools.count()
    return lambda n: hashlib.sha512(label + struct.pack(">I", next(counter))).digest()[:n]


#: The handshake variants fuzzed: client and server constructor arguments.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "v1": ({"version": 1}, {}),
    "v2-x25519": ({"suites": (X25519_ID,)}, {"suites": (X25519_ID,)}),
    "v2-hybrid": ({}, {}),
}


# --------------------------------------------------------------------- valid seed data


def random_value(spec: m.FieldSpec, rnd: random.Random) -> Any:
    """A random valid value for a field spec (introspected, so new types are covered)."""
    if isinstance(spec, m.UInt):
        return rnd.choice([0, 1, (1 << spec.bits) - 1, rnd.getrandbits(spec.bits)])
    if isinstance(spec, m.Bool):
        return rnd.random() < 0.5
    if isinstance(spec, m.Bin):
        return rnd.randbytes(rnd.randint(spec.min_len, min(spec.max_len, spec.min_len + 40)))
    if isinstance(spec, m.Text):
        text = rnd.choice(["", "hi", "h\u00e9llo \u2713", "x" * 30, "\U0001f600"])
        return text if spec.min_bytes <= len(text.encode()) <= spec.max_bytes else "ok"
    if isinstance(spec, m.NameSpec):
        return rnd.choice(["a", "alice", "bob.smith-2", "z" * 32, "0_x"])
    if isinstance(spec, m.Optional):
        return None if rnd.random() < 0.3 else random_value(spec.inner, rnd)
    if isinstance(spec, m.ListOf):
        return tuple(random_value(spec.item, rnd) for _ in range(rnd.randint(0, 3)))
    if isinstance(spec, m.RecordSpec):
        return random_record(spec.record, rnd)
    raise NotImplementedError(repr(spec))


def random_record(cls: type[m.Record], rnd: random.Random) -> Any:
    """A random valid record or message of ``cls``."""
    return cls(*[random_value(spec, rnd) for _, spec in cls._specs])


RECORD_TYPES: list[type[m.Record]] = [
    m.ImageInfo, m.GroupEvent, m.PresenceInfo, m.GroupInfo, m.MemberInfo, m.HistoryEntry,
]


def handshake_transcript(variant: str) -> tuple[list[bytes], list[bytes]]:
    """The client->server and server->client flushes of a full, valid handshake with fixed
    randomness: register, wrong signin, signin, completion, then one session message each
    way."""
    client_args, server_args = VARIANTS[variant]
    client = ClientHandshake(rng=counter_rng(b"client"), **client_args)
    server = ServerHandshake(IDENTITY, rng=counter_rng(b"server"), **server_args)
    c2s: list[bytes] = []
    s2c: list[bytes] = []

    def up() -> list[Any]:
        c2s.append(client.data_to_send())
        return server.receive_data(c2s[-1])

    def down() -> list[Any]:
        s2c.append(server.data_to_send())
        return client.receive_data(s2c[-1])

    client.start()
    up()
    down()
    client.accept_identity()
    client.register(NAME, PASSWORD)
    up()
    server.accept_register()
    down()
    client.signin(NAME, WRONG, DEVICE)
    up()
    server.reject_signin(ErrorCode.AUTH_FAILED, "no")
    down()
    client.signin(NAME, PASSWORD, DEVICE)
    up()
    server.accept_signin()
    down()
    up()
    session = server.complete(bytes(16), 1)
    down()
    assert client.state is ClientState.DONE and client.session is not None
    c2s.append(client.session.send(m.Ping(1)))
    s2c.append(session.send(m.Pong(1)))
    return c2s, s2c


# --------------------------------------------------------------------- mutations


def mutate(data: bytes, rnd: random.Random, pool: list[bytes]) -> bytes:
    """Apply 1-3 random mutations."""
    buf = bytearray(data)
    for _ in range(rnd.choice((1, 1, 1, 2, 3))):
        op = rnd.randrange(9)
        n = len(buf)
        if op <= 2 and n:  # bit flips
            for _ in range(rnd.randint(1, 4)):
                buf[rnd.randrange(n)] ^= 1 << rnd.randrange(8)
        elif op == 3 and n:  # truncate
            del buf[rnd.randrange(n) :]
        elif op == 4:  # splice with another seed
            other = rnd.choice(pool)
            cut = rnd.randint(0, n)
            buf = buf[:cut] + other[rnd.randint(0, len(other)) :]
        elif op == 5:  # insert random bytes
            pos = rnd.randint(0, n)
            buf[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 6 and n:  # delete a run
            pos = rnd.randrange(n)
            del buf[pos : pos + rnd.randint(1, 16)]
        elif op == 7 and n:  # duplicate a run
            pos = rnd.randrange(n)
            buf[pos:pos] = buf[pos : pos + rnd.randint(1, 32)]
        elif op == 8 and n:  # interesting byte
            buf[rnd.randrange(n)] = rnd.choice((0x00, 0xFF, 0x7F, 0x80, 0xC0, 0xC1, 0xDD, 0xDF))
    return bytes(buf)


def chunks(data: bytes, rnd: random.Random) -> list[bytes]:
    """Split ``data`` randomly (often whole)."""
    if rnd.random() < 0.5 or len(data) < 2:
        return [data]
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --------------------------------------------------------------------- targets


class Fuzzer:
    """Holds the seed corpora and one method per target."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.messages = [m.encode_message(random_record(cls, rnd))
                         for cls in m.MESSAGE_TYPES.values() for _ in range(8)]
        self.records = [(cls, m.encode_record(random_record(cls, rnd)))
                        for cls in RECORD_TYPES for _ in range(8)]
        bodies = [b for b in self.messages if len(b) <= 1024]
        self.plain_streams = [
            b"".join(FrameEncoder().encode_plain(b) for b in rnd.sample(bodies, rnd.randint(1, 3)))
            for _ in range(64)
        ]
        self.keyed_streams = []
        for i in range(64):
            enc = FrameEncoder(KEY, IV, padding=no_padding) if i % 2 else FrameEncoder(KEY, IV)
            self.keyed_streams.append(
                b"".join(enc.encode(b) for b in rnd.sample(bodies, rnd.randint(1, 4)))
            )
        self.transcripts = {name: handshake_transcript(name) for name in VARIANTS}
        self.pool = self.messages + self.plain_streams + self.keyed_streams
        for c2s, s2c in self.transcripts.values():
            self.pool += c2s + s2c

    def _input(self, seeds: list[bytes]) -> bytes:
        rnd = self.rnd
        if rnd.random() < 0.05:
            return rnd.randbytes(rnd.randint(0, 64))
        return mutate(rnd.choice(seeds), rnd, self.pool)

    def decode_message(self) -> None:
        """decode_message on a mutated encoding (sometimes padded, sometimes canonical)."""
        rnd = self.rnd
        try:
            m.decode_message(self._input(self.messages), padded=rnd.random() < 0.3,
                             canonical=rnd.random() < 0.3)
        except RemoteProtocolError:
            pass

    def decode_record(self) -> None:
        """decode_record on a mutated record encoding (sometimes for the wrong class)."""
        cls, data = self.rnd.choice(self.records)
        if self.rnd.random() < 0.1:
            cls = self.rnd.choice(RECORD_TYPES)
        try:
            m.decode_record(cls, mutate(data, self.rnd, self.pool))
        except RemoteProtocolError:
            pass

    def _drain(self, decoder: FrameDecoder, data: bytes) -> None:
        try:
            for piece in chunks(data, self.rnd):
                decoder.receive_data(piece)
                while decoder.next_payload() is not None:
                    pass
        except RemoteProtocolError:
            pass

    def frame_plain(self) -> None:
        """A plaintext FrameDecoder on a mutated plaintext stream."""
        self._drain(FrameDecoder(), self._input(self.plain_streams))

    def frame_keyed(self) -> None:
        """A keyed FrameDecoder (sometimes with low limits) on a mutated encrypted stream."""
        rnd = self.rnd
        if rnd.random() < 0.1:
            decoder = FrameDecoder(KEY, IV, max_body=rnd.randint(0, 200),
                                   max_frames=rnd.randint(0, 3))
        else:
            decoder = FrameDecoder(KEY, IV)
        self._drain(decoder, self._input(self.keyed_streams))

    def _stream(self, variant: str, upstream: bool) -> list[bytes]:
        """A mutated transcript, cut into pieces mostly at the original flush boundaries (the
        peer only sends its next flush after this side acted on the previous one)."""
        rnd = self.rnd
        if rnd.random() < 0.1:
            return chunks(rnd.randbytes(rnd.randint(0, 200)), rnd)
        if rnd.random() < 0.05:  # reflection: the other direction's bytes
            upstream = not upstream
        if rnd.random() < 0.05:  # another version's transcript
            variant = rnd.choice(list(VARIANTS))
        c2s, s2c = self.transcripts[variant]
        flushes = c2s if upstream else s2c
        # Often keep a valid prefix of k flushes so the mutations reach the later states.
        k = rnd.randrange(len(flushes)) if rnd.random() < 0.6 else 0
        prefix = b"".join(flushes[:k])
        data = prefix + mutate(b"".join(flushes[k:]), rnd, self.pool)
        if rnd.random() < 0.2:
            return chunks(data, rnd)
        cuts = set(itertools.accumulate(len(f) for f in flushes))
        if rnd.random() < 0.3:
            cuts.add(rnd.randint(0, len(data)))
        edges = sorted(c for c in cuts if 0 < c < len(data))
        return [data[a:b] for a, b in zip([0, *edges], [*edges, len(data)], strict=True)]

    def server(self) -> None:
        """ServerHandshake.receive_data on a mutated client transcript; a scripted server
        answers every request as in the original run."""
        variant = self.rnd.choice(list(VARIANTS))
        server = ServerHandshake(IDENTITY, rng=counter_rng(b"server"), **VARIANTS[variant][1])
        events: list[Any] = []
        try:
            for piece in self._stream(variant, True):
                if server.state is ServerState.DONE:
                    assert server.session is not None
                    server.session.receive_data(piece)
                    while server.session.next_message() is not None:
                        pass
                    continue
                if server.state is ServerState.FAILED:
                    break
                events += server.receive_data(piece)
                while True:
                    state = server.state
                    if state is ServerState.AWAIT_REGISTER_DECISION:
                        events += server.accept_register()
                    elif state is ServerState.AWAIT_SIGNIN_DECISION:
                        request = events[-1]
                        assert isinstance(request, CredentialsReceived)
                        if request.password == PASSWORD:
                            events += server.accept_signin()
                        else:
                            events += server.reject_signin(ErrorCode.AUTH_FAILED, "no")
                    elif state is ServerState.AWAIT_COMPLETION:
                        server.complete(bytes(16), 1)
                    else:
                        break
        except RemoteProtocolError:
            pass

    def client(self) -> None:
        """ClientHandshake.receive_data on a mutated server transcript; a scripted client
        accepts the identity, registers, signs in wrongly, then rightly."""
        variant = self.rnd.choice(list(VARIANTS))
        client = ClientHandshake(rng=counter_rng(b"client"), **VARIANTS[variant][0])
        client.start()
        script = iter([("register", PASSWORD), ("signin", WRONG), ("signin", PASSWORD)])
        try:
            for piece in self._stream(variant, False):
                if client.state is ClientState.DONE:
                    assert client.session is not None
                    client.session.receive_data(piece)
                    while client.session.next_message() is not None:
                        pass
                    continue
                if client.state is ClientState.FAILED:
                    break
                client.receive_data(piece)
                if client.state is ClientState.AWAIT_IDENTITY_DECISION:
                    client.accept_identity()
                if client.state is ClientState.READY:
                    action = next(script, None)
                    if action is None:
                        break
                    if action[0] == "register":
                        client.register(NAME, action[1])
                    else:
                        client.signin(NAME, action[1], DEVICE)
        except RemoteProtocolError:
            pass


def main(argv: list[str]) -> int:
    """Run the fuzzer; returns the exit status."""
    if len(argv) < 2:
        print(__doc__)
        return 2
    total = int(argv[1])
    seed_text = argv[2] if len(argv) > 2 else os.environ.get("FUZZ_SEED")
    seed = int(seed_text) if seed_text else int.from_bytes(os.urandom(8), "big")
    print(f"seed {seed}", flush=True)
    rnd = random.Random(seed)
    fuzzer = Fuzzer(rnd)
    # Weights: the handshake targets do real public-key crypto per input, so they get fewer
    # inputs; every target still gets thousands per 100k.
    targets: list[tuple[str, Callable[[], None]]] = [
        ("decode_message", fuzzer.decode_message),
        ("decode_record", fuzzer.decode_record),
        ("frame_plain", fuzzer.frame_plain),
        ("frame_keyed", fuzzer.frame_keyed),
        ("server", fuzzer.server),
        ("client", fuzzer.client),
    ]
    weights = [32, 12, 20, 28, 4, 4]  # per 100 inputs
    schedule = [t for t, w in enumerate(weights) for _ in range(w)]
    rnd.shuffle(schedule)
    counts = dict.fromkeys((name for name, _ in targets), 0)
    unexpected = 0
    start = time.perf_counter()
    for i in range(total):
        name, target = targets[schedule[i % 100]]
        counts[name] += 1
        try:
            target()
        except Exception:
            unexpected += 1
            if unexpected <= MAX_UNEXPECTED_SHOWN:
                print(f"--- unexpected exception in {name}, input {i} (seed {seed})")
                traceback.print_exc()
    elapsed = time.perf_counter() - start
    rate = total / elapsed if elapsed else float("inf")
    per_target = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"{per_target}; {elapsed:.1f} s, {rate:,.0f} inputs/s")
    print(f"ran {total} inputs, {unexpected} unexpected exceptions")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
