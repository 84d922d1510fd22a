"""``rarefit api --workers N``: N uvicorn processes, each accepting on its own ``SO_REUSEPORT`` socket.

uvicorn's own ``--workers`` shares one listening socket, and the kernel hands
each new connection to whichever process is waiting in ``accept()`` first. A
few keep-alive clients can then mostly land on one process while the other
idles, and polling capacity follows that split from run to run
(``benchmarks/RESULTS.md``, "Polling"). With
one socket per process bound with ``SO_REUSEPORT``, the kernel spreads
connections over the processes by a hash of their addresses (as nginx's
``reuseport``).

The parent binds every socket itself, so a taken port fails at once with a
clear message and ``--port 0`` gives all processes one port. It starts each
child with its socket, restarts a child that dies (after a second, so a
child that cannot start does not spin), and on SIGINT/SIGTERM asks every
child to stop (uvicorn finishes in-flight requests) and kills any that has
not within the grace period.

Metrics: the parent makes a fresh directory and names it in
``PROMETHEUS_MULTIPROC_DIR`` before it starts any child, so every child's
prometheus-client writes its samples there and ``GET /metrics`` on any child
reports the sum over all of them (restarted children included); the parent
removes the directory when it stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

APP_FACTORY = "service.main:asgi"
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
STOP_GRACE_SECONDS = 30.0
RESTART_DELAY_SECONDS = 1.0
_BACKLOG = 2048


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one ``host:port`` (``port`` 0: one free port for all)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
            address = (address[0], sock.getsockname()[1], *address[2:])  # port 0 → the port just chosen
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _serve_on(sock: socket.socket) -> None:
    """A child: the API on the inherited socket until SIGINT/SIGTERM."""
    import uvicorn

    # The app factory sets up logging (RAREFIT_LOG_FORMAT, RAREFIT_LOG_LEVEL); uvicorn's loggers propagate to it.
    uvicorn.Server(uvicorn.Config(APP_FACTORY, factory=True, log_config=None)).run(sockets=[sock])


def run_api_processes(*, host: str, port: int, workers: int) -> None:
    """Serve the API from ``workers`` processes until SIGINT/SIGTERM (see the module docstring)."""
    try:
        sockets = bind_sockets(host, port, workers)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = sockets[0].getsockname()
    logger.info("API on %s:%d in %d processes (one SO_REUSEPORT socket each)", bound[0], bound[1], workers)
    context = multiprocessing.get_context("spawn")  # a clean interpreter per child: no inherited threads
    stopping = threading.Event()
    metrics_dir = tempfile.mkdtemp(prefix="rarefit-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir  # read by prometheus-client as each spawned child imports it

    def start(index: int) -> BaseProcess:
        process = context.Process(target=_serve_on, args=(sockets[index],), name=f"rarefit-api-{index}")
        process.start()
        logger.info("API process %d started (pid %d)", index, process.pid)
        return process

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received signal %d; stopping the API processes", signum)
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(index) for index in range(workers)]
    try:
        while not stopping.is_set():
            wait([process.sentinel for process in processes], timeout=0.5)
            for index, process in enumerate(processes):
                if process.exitcode is not None and not stopping.is_set():
                    logger.error("API process %d exited with code %s; restarting it", index, process.exitcode)
                    stopping.wait(RESTART_DELAY_SECONDS)
                    if not stopping.is_set():
                        processes[index] = start(index)
    finally:
        _stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _stop_all(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.exitcode is None:
            process.terminate()  # SIGTERM: uvicorn's graceful shutdown
    for process in processes:
        process.join(STOP_GRACE_SECONDS)
        if process.exitcode is None:
            logger.warning("API process pid %d did not stop within %.0f s; killing it", process.pid, STOP_GRACE_SECONDS)
            process.kill()
            process.join()
