"""The ``chatproto-client`` program: a scripting command (:mod:`chatproto.terminal.cli`), or
the interactive client (:class:`chatproto.terminal.app.TerminalClient`) on the terminal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from twisted.logger import globalLogBeginner, textFileLogObserver

from chatproto.terminal.app import TerminalClient
from chatproto.terminal.cli import EXIT_CONNECTION, Settings, build_parser, run_command

__all__ = ["main", "run_interactive", "terminal_flow_control_off"]


@contextmanager
def terminal_flow_control_off(fd: int) -> Iterator[None]:
    """Turn the terminal's XON/XOFF flow control off while the client runs (so Ctrl-Q and
    Ctrl-S reach it), and restore the terminal's settings afterwards. Nothing happens if
    ``fd`` is not a terminal."""
    try:
        import termios

        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        yield
        return
    changed = list(saved)
    changed[0] = saved[0] & ~(termios.IXON | termios.IXOFF)
    termios.tcsetattr(fd, termios.TCSANOW, changed)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def _start_log(state_dir: Path) -> None:
    """Log to ``STATE_DIR/client.log`` (the screen belongs to the UI)."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_file = open(state_dir / "client.log", "a", encoding="utf-8")  # noqa: SIM115
    except OSError:
        return
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)],  # type: ignore[list-item]
                                      redirectStandardIO=False)


def run_interactive(args: argparse.Namespace) -> int:
    """Run the interactive client with parsed options; returns the exit status."""
    from twisted.internet import reactor

    settings = Settings.from_args(args)
    _start_log(settings.state_dir)
    app = TerminalClient(reactor, settings)
    try:
        with terminal_flow_control_off(sys.stdin.fileno()):
            return app.run()
    except KeyboardInterrupt:
        return EXIT_CONNECTION


def main(argv: Sequence[str] | None = None) -> None:
    """The ``chatproto-client`` entry point: a command, or the interactive client."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        sys.exit(run_interactive(args))
    run_command(args)
