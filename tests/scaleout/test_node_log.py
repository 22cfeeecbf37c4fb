"""Every log line of a node carries the node's name (``chatproto.server.node_log``)."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    jsonFileLogObserver,
)

from chatproto.server.node_log import install


def test_the_node_name_leads_every_line() -> None:
    """New-style events get ``[NODE namespace#level]``; Twisted's legacy events (a system
    such as ``Proto,3,127.0.0.1``) get ``[NODE Proto,3,127.0.0.1]``; an event is labelled
    once however often it passes; the JSON log has the name as ``log_node``."""
    publisher = LogPublisher()
    install("node7", publisher)
    lines: list[str] = []
    publisher.addObserver(lambda e: lines.append(formatEventAsClassicLogText(e) or ""))
    out = io.StringIO()
    publisher.addObserver(jsonFileLogObserver(out))
    Logger(namespace="chatproto.server.bus", observer=publisher).info("bus: {what}",
                                                                     what="connected")
    legacy: dict[str, Any] = {"log_format": "accepted", "log_level": LogLevel.info,
                              "log_time": 0.0, "system": "Proto,3,127.0.0.1",
                              "log_system": "Proto,3,127.0.0.1"}
    publisher(legacy)
    publisher(legacy)  # again (e.g. through the legacy bridge): not labelled twice
    assert "[node7 chatproto.server.bus#info] bus: connected" in lines[0]
    assert "[node7 Proto,3,127.0.0.1] accepted" in lines[1]
    assert "[node7 Proto,3,127.0.0.1] accepted" in lines[2]
    assert legacy["system"] == "node7 Proto,3,127.0.0.1"
    records = [json.loads(r.strip("\x1e")) for r in out.getvalue().split("\x1e") if r.strip()]
    assert [r["log_node"] for r in records] == ["node7"] * 3
