"""``chatproto-client``: the terminal program built on the client library.

:mod:`chatproto.terminal.app` is the interactive, irssi-like client; :mod:`chatproto.terminal.cli`
holds the options and the non-interactive commands for scripts (``send``, ``tail``, ...).
Everything here uses only the public API of :mod:`chatproto.client`.
"""
