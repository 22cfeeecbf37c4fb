"""The ``twistd chatserver`` plugin (options and service in :mod:`chatproto.server.tap`)."""

from twisted.application.service import ServiceMaker

chatserver = ServiceMaker(
    "chatproto chat server", "chatproto.server.tap", "An encrypted chat server", "chatserver"
)
