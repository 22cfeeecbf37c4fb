"""Fixtures of the scale-out tests: the terminal tests' server and client environment."""

from tests.terminal.conftest import chat_server, client_env  # noqa: F401 - fixtures
