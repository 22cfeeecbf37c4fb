"""The node's name on every log line of a node among several (``--bus``, ``--workers``).

:class:`NodeLogLabel` is a log observer that must run before the ones that write: ``twistd``
adds its own (the text log) when it starts logging, after ``makeService``, which installs the
label (:func:`install`). It puts the name in front of the event's system, so the text log
reads ``2026-12-01T17:00:00+0000 [node1 chatproto.server.bus#info] ...`` (and
``[node1 ChatServerProtocol,3,127.0.0.1]`` for Twisted's own lines), and stores it as
``log_node`` for the JSON log (``--log-json``).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from zope.interface import implementer

#: The event key holding the node's name (in the JSON log).
NODE_KEY = "log_node"


@implementer(ILogObserver)
class NodeLogLabel:
    """Labels every log event with ``node`` (once: an event it already labelled is left)."""

    def __init__(self, node: str) -> None:
        self.node = node

    def __call__(self, event: dict[str, Any]) -> None:
        if NODE_KEY in event:
            return
        event[NODE_KEY] = self.node
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
        event["log_system"] = f"{self.node} {system}"
        if "system" in event:  # a legacy event, for legacy observers
            event["system"] = f"{self.node} {event['system']}"


def install(node: str, publisher: LogPublisher = globalLogPublisher) -> NodeLogLabel:
    """Label every event ``publisher`` publishes from now on; call it before adding the
    observers that write (observers see an event in the order they were added)."""
    label = NodeLogLabel(node)
    publisher.addObserver(ILogObserver(label))
    return label
