"""Account self-service: CHANGE_PASSWORD (every other session of the account is signed out),
DELETE_ACCOUNT (the name is held back for a while), DEVICE_LIST and SIGN_OUT_DEVICE.

Both password checks cost one Argon2id verification in the hasher's queue, like a sign-in.
Sessions are signed out with a SIGNED_OUT message, then their connection is closed: those on
this node at once, those on the other nodes of a deployment (``--bus``) when the sign-out
poke reaches them (:meth:`AccountHandlers.join`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.server.feature_settings import FeatureSettings
from chatproto.server.limits import address_key
from chatproto.server.passwords import (
    HasherBusy,
    PasswordHasher,
    Priority,
    password_policy_error,
)
from chatproto.server.refusals import RequestError
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode

log = Logger()


class OtherNodes(Protocol):
    """The other nodes of a deployment, as the account requests need them: they carry
    sign-outs and know their sessions' devices (the Redis router implements it)."""

    def sign_out_elsewhere(self, name: str, device_id: bytes | None, reason: str) -> None:
        """Have the other nodes close the user's sessions (of ``device_id`` only, if
        given)."""
        ...

    def sign_outs(self, signed_out: Callable[[str, bytes | None, str], None]) -> None:
        """Call ``signed_out(name, device_id, reason)`` when another node signs a user
        out."""
        ...

    def devices_online(self, name: str) -> Deferred[frozenset[bytes]]:
        """The devices of ``name`` with a session on any node."""
        ...


class AccountHandlers:
    """The account's own requests; ``hasher`` checks and makes password hashes."""

    def __init__(self, chat: ChatHandlers, hasher: PasswordHasher,
                 settings: FeatureSettings) -> None:
        self.chat = chat
        self.store = chat.store
        self.hasher = hasher
        self.settings = settings
        self.dispatch = {f.ChangePassword: self.change_password,
                         f.DeleteAccount: self.delete_account, f.DeviceList: self.device_list,
                         f.SignOutDevice: self.sign_out_device}
        #: The other nodes (None: this process serves everybody).
        self.relay: OtherNodes | None = None

    def join(self, relay: OtherNodes) -> None:
        """Sign users out on the other nodes too, close this node's sessions when another
        node signs a user out, and list the devices signed in on any node."""
        self.relay = relay
        relay.sign_outs(self.signed_out_elsewhere)

    async def _check_password(self, conn: Connection, password: str) -> None:
        phc = await self.store.get_password_hash(conn.name)
        try:
            ok = await self.hasher.verify(password, phc, key=address_key(conn.ip))
        except HasherBusy:
            raise RequestError(ErrorCode.TRY_LATER, "the server is busy; try later") from None
        if not ok:
            log.info("{name}: wrong current password from {ip}", name=conn.name, ip=conn.ip)
            raise RequestError(ErrorCode.AUTH_FAILED, "the password is not right")

    def sign_out(self, conn: Connection, device_id: bytes | None, reason: str) -> int:
        """Sign out the account's other sessions (only those of ``device_id`` if given) on
        this node, and have the other nodes sign out theirs; how many on this node."""
        count = self._close(conn.name, conn, device_id, reason)
        if self.relay is not None:
            self.relay.sign_out_elsewhere(conn.name, device_id, reason)
        return count

    def signed_out_elsewhere(self, name: str, device_id: bytes | None, reason: str) -> None:
        """Another node signed ``name`` out: close this node's sessions of it."""
        count = self._close(name, None, device_id, reason)
        if count:
            log.info("{name}: {n} sessions signed out by another node", name=name, n=count)

    def _close(self, name: str, keep: Connection | None, device_id: bytes | None,
               reason: str) -> int:
        payload = m.encode_message(f.SignedOut(reason))
        count = 0
        for session in self.chat.router.sessions(name):
            if (session is keep or not isinstance(session, Connection)
                    or (device_id is not None and session.device_id != device_id)):
                continue
            session.push(payload)
            session.link.close()
            count += 1
        return count

    # --- requests ----------------------------------------------------------------------------

    def change_password(self, conn: Connection, msg: f.ChangePassword) -> Deferred[Any]:
        problem = password_policy_error(msg.new)
        if problem is not None:
            raise RequestError(ErrorCode.INVALID_PASSWORD, problem)
        return defer.ensureDeferred(self._change_password(conn, msg))

    async def _change_password(self, conn: Connection, msg: f.ChangePassword) -> None:
        await self._check_password(conn, msg.current)
        try:
            phc = await self.hasher.hash(msg.new, key=address_key(conn.ip),
                                         priority=Priority.SIGNIN)
        except HasherBusy:
            raise RequestError(ErrorCode.TRY_LATER, "the server is busy; try later") from None
        await self.store.set_password_hash(conn.name, phc)
        signed_out = self.sign_out(conn, None, "the password was changed on another device")
        log.info("{name} changed their password; {n} other sessions signed out",
                 name=conn.name, n=signed_out)
        conn.send(m.Ok(msg.req))

    def delete_account(self, conn: Connection, msg: f.DeleteAccount) -> Deferred[Any]:
        return defer.ensureDeferred(self._delete_account(conn, msg))

    async def _delete_account(self, conn: Connection, msg: f.DeleteAccount) -> None:
        await self._check_password(conn, msg.password)
        # Leave every group first, so its members see it (and an owner hands over).
        for group in await self.store.user_groups(conn.name):
            appended = await self.store.change_group(conn.name, group[0], m.GroupAction.LEFT,
                                                     (), None, self.chat.now_ms())
            for event in (appended, *appended.followed_by):
                self.chat.fan_out(event, event.entry.body or b"" if event.entry else b"")
        await self.store.features.accounts.delete_account(
            conn.name, self.chat.now_ms(), self.settings.name_hold_ms)
        log.info("{name} deleted their account", name=conn.name)
        self.sign_out(conn, None, "the account was deleted")
        conn.send(m.Ok(msg.req))
        conn.link.close()

    def device_list(self, conn: Connection, msg: f.DeviceList) -> Deferred[Any]:
        return defer.ensureDeferred(self._device_list(conn, msg))

    async def _device_list(self, conn: Connection, msg: f.DeviceList) -> None:
        rows = await self.store.features.accounts.devices(conn.name)
        online = {s.device_id for s in self.chat.router.sessions(conn.name)
                  if isinstance(s, Connection)}
        if self.relay is not None:  # the devices signed in on the other nodes too
            online |= await self.relay.devices_online(conn.name)
        known = {row.device_id: row.acked_seq for row in rows}
        for device in online - known.keys():
            known[device] = 0  # signed in, nothing acknowledged yet
        conn.send(f.Devices(msg.req, tuple(
            f.DeviceInfo(device, device in online, device == conn.device_id, seq)
            for device, seq in sorted(known.items())[: f.MAX_DEVICES])))

    def sign_out_device(self, conn: Connection, msg: f.SignOutDevice) -> Deferred[Any]:
        if msg.device_id == conn.device_id:
            raise RequestError(ErrorCode.INVALID_REQUEST, "sign this device out with QUIT")
        self.sign_out(conn, msg.device_id, "signed out by another device of the account")
        d = self.store.features.accounts.forget_device(conn.name, msg.device_id)
        d.addCallback(lambda _: conn.send(m.Ok(msg.req)))
        return d
