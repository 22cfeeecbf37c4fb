"""``--workers N``: N server processes on one machine sharing the listening sockets.

The parent binds every ``--listen`` and ``--listen-web`` socket once, then starts N
``twistd chatserver`` workers that inherit them the way systemd hands sockets over
(``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``; Twisted's ``systemd:`` endpoint adopts
them). The kernel spreads the connections over the workers' ``accept`` calls. Each worker is
a node of its own (``NODE.1``, ``NODE.2``, ...) on the shared PostgreSQL database and Redis
bus. A worker that dies is started again (after 0.5 s, doubling up to 30 s while it keeps
dying within 10 s of its start); SIGTERM to the parent stops every worker cleanly (SIGKILL
after :data:`STOP_TIMEOUT` seconds).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, error, protocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

#: Seconds a worker has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0
#: The first and the longest delay before a dead worker is started again (seconds).
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
#: A worker that ran at least this long (seconds) is restarted after RESTART_DELAY again.
STABLE_AFTER = 10.0

#: The worker's bootstrap: LISTEN_PID must be the worker's own pid, known only once it runs.
_BOOTSTRAP = (
    "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); "
    "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)


def tcp_address(endpoint: Any, option: str) -> tuple[int, str, int, int]:
    """(address family, interface, port, backlog) of a ``tcp:`` / ``tcp6:`` server endpoint
    (ValueError for any other kind: workers share plain TCP sockets; put TLS in front)."""
    if isinstance(endpoint, endpoints.TCP6ServerEndpoint):
        family = socket.AF_INET6
    elif isinstance(endpoint, endpoints.TCP4ServerEndpoint):
        family = socket.AF_INET
    else:
        raise ValueError(f"{option} with --workers must be a tcp: endpoint (plain TCP; "
                         "terminate TLS in a balancer or run one process per TLS listener)")
    return (family, endpoint._interface, endpoint._port, endpoint._backlog)  # noqa: SLF001


def bind(family: int, interface: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))  # noqa: S104
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = supervisor.reactor.seconds()
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor.worker_ended(self, reason)


class WorkerSupervisor(service.Service):
    """Binds the shared sockets and keeps ``count`` workers running.

    Args:
        reactor: the reactor.
        count: how many workers.
        sockets: (address family, interface, port, backlog) of every socket to share, in the
            order the workers' ``systemd:`` endpoints name them (``listen0``, ...).
        worker_args: ``worker_args(index, names)``: the ``twistd`` arguments of worker
            ``index`` (1-based) given the names of the shared sockets.
    """

    def __init__(self, reactor: Any, count: int, sockets: Sequence[tuple[int, str, int, int]],
                 worker_args: Any) -> None:
        self.reactor = reactor
        self.count = count
        self.addresses = list(sockets)
        self.worker_args = worker_args
        self.sockets: list[socket.socket] = []
        self.workers: dict[int, _Worker] = {}
        self.processes: dict[int, Any] = {}
        self.delays: dict[int, float] = {}
        self.restarts = 0
        self.stopping = False

    @property
    def names(self) -> list[str]:
        return [f"listen{i}" for i in range(len(self.sockets))]

    def startService(self) -> None:
        super().startService()
        self.sockets = [bind(*address) for address in self.addresses]
        for sock in self.sockets:
            host = sock.getsockname()
            log.info("workers share {host}:{port}", host=host[0], port=host[1])
        for index in range(1, self.count + 1):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        if self.stopping:
            return
        worker = _Worker(self, index)
        fds: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        for i, sock in enumerate(self.sockets):
            fds[3 + i] = sock.fileno()
        env = dict(os.environ)
        env.update(LISTEN_FDS=str(len(self.sockets)), LISTEN_FDNAMES=":".join(self.names))
        args = [sys.executable, "-c", _BOOTSTRAP, *self.worker_args(index, self.names)]
        self.workers[index] = worker
        self.processes[index] = self.reactor.spawnProcess(worker, sys.executable, args,
                                                          env=env, childFDs=fds)
        log.info("worker {index} started (pid {pid})", index=index,
                 pid=self.processes[index].pid)

    def worker_ended(self, worker: _Worker, reason: Any) -> None:
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        self.processes.pop(worker.index, None)
        if self.stopping:
            return
        ran = self.reactor.seconds() - worker.started
        delay = self.delays.get(worker.index, RESTART_DELAY)
        delay = RESTART_DELAY if ran >= STABLE_AFTER else delay
        self.delays[worker.index] = min(delay * 2, MAX_RESTART_DELAY)
        log.warn("worker {index} ended ({why}); starting it again in {delay} s",
                 index=worker.index, why=reason.getErrorMessage(), delay=delay)
        self.restarts += 1
        self.reactor.callLater(delay, self.spawn, worker.index)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.stopping = True
        ended = [w.ended for w in self.workers.values()]
        for index, process in list(self.processes.items()):
            self._signal(process, signal.SIGTERM)
            self.reactor.callLater(STOP_TIMEOUT, self._kill_if_running, index, process)
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        return defer.DeferredList(ended, consumeErrors=True)

    def _kill_if_running(self, index: int, process: Any) -> None:
        if self.processes.get(index) is process:
            log.warn("worker {index} did not stop within {t} s: killing it", index=index,
                     t=STOP_TIMEOUT)
            self._signal(process, signal.SIGKILL)

    @staticmethod
    def _signal(process: Any, signum: int) -> None:
        try:
            process.signalProcess(signum)
        except error.ProcessExitedAlready:
            pass


#: Options the supervisor sets itself for each worker.
_PER_WORKER = frozenset({"listen", "listen-web", "metrics", "workers", "node-name"})


def worker_arguments(options: Any, index: int, names: Sequence[str], node: str,
                     web_count: int) -> list[str]:
    """The ``twistd chatserver`` arguments of worker ``index`` (1-based): every option the
    parent was given, its listeners replaced by the shared sockets (``names``: the
    ``--listen`` ones first, then the last ``web_count`` for ``--listen-web``), its own
    node name ``NODE.index``, and ``--metrics`` on the parent's port + index - 1."""
    args = ["-n", "--pidfile=", "chatserver"]
    for flag in options.optFlags:
        if flag[0] not in _PER_WORKER and options[flag[0]]:
            args.append(f"--{flag[0]}")
    for param in options.optParameters:
        name, default = param[0], param[2]
        value = options[name]
        if name not in _PER_WORKER and value is not None and value != default:
            args.append(f"--{name}={value}")
    for name in ("trusted-proxy", "web-origin"):
        args.extend(f"--{name}={value}" for value in options[name])
    chat, web = names[:len(names) - web_count], names[len(names) - web_count:]
    args.extend(f"--listen=systemd:domain=INET:name={n}" for n in chat)
    args.extend(f"--listen-web=systemd:domain=INET:name={n}" for n in web)
    if options.metrics_endpoint is not None:
        family, interface, port, _ = tcp_address(options.metrics_endpoint, "--metrics")
        where = f":interface={interface}" if interface else ""
        args.append(f"--metrics=tcp:{port + index - 1}{where}")
    args.append(f"--node-name={node}.{index}")
    return args
