"""Serving the application: uvicorn on ``[http] listen``, with the guards
uvicorn lacks for a port anyone on the network may reach (a request head's
deadline, a cap on connections)."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Any

import structlog

from .. import config
from .app import create_app

logger = structlog.get_logger("edi_inbox.web")

# A connection must send a request's head (its line and headers) within this
# long of opening, or of its last answer.
HEAD_SECONDS = 5.0


def guarded(base: type[Any], max_connections: int, head_seconds: float = HEAD_SECONDS) -> Any:
    """uvicorn's HTTP protocol ``base`` (h11's or httptools') with two guards
    uvicorn lacks: a deadline for a request's head, and a cap on connections.

    uvicorn times out only a connection idle after an answer (keep-alive),
    and that timer stops at the first byte of the next request: a connection
    that sends half a request head (slowloris), or nothing, is kept for ever,
    and enough of them take every file descriptor (new connections are then
    refused by ``accept``, the database and files fail). So a connection
    waiting for a head (just opened, or answered and kept alive) is closed
    ``head_seconds`` after it began waiting. Past ``max_connections``, a new
    connection closes the one that has waited longest for its head; if none is
    waiting, every connection being answered, its request gets uvicorn's 503
    (``limit_concurrency``, set by ``serve``; alone that limit would not do: it
    looks at requests, so it never sees a slowloris' connections, which send
    none, and accepts them all). Past ``max_connections`` there are then only
    newcomers: one waiting for its head (the next closes it) and those being
    turned away.

    Both hooks are the protocols' own: ``self.cycle`` is the request being
    answered (``response_complete`` once answered), ``on_response_complete``
    runs after each answer, ``connection_made``/``data_received``/
    ``connection_lost`` are asyncio's."""
    waiting: dict[Any, None] = {}  # connections waiting for a head, longest first

    class Guarded(base):  # type: ignore[misc, valid-type]
        head_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections and waiting:
                next(iter(waiting)).drop()
            self.watch_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.watch_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.watch_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_watching()
            super().connection_lost(exc)

        def watch_head(self) -> None:
            """Waiting for a head: the deadline runs from when the wait began."""
            answering = self.cycle is not None and not self.cycle.response_complete
            if answering or self.transport.is_closing():
                self.stop_watching()
            elif self.head_timer is None:
                self.head_timer = self.loop.call_later(head_seconds, self.drop)
                waiting[self] = None

        def stop_watching(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None
            waiting.pop(self, None)

        def drop(self) -> None:
            self.stop_watching()
            self.transport.close()

    return Guarded


# Descriptors neither connections nor the thread pool's: standard streams,
# the listening socket, the event loop's, the log, the metrics' connection,
# templates and folders read for ``/metrics``.
RESERVED_FDS = 16
# A thread of the pool: its SQLite connection (the database and its WAL: the
# shared memory is one a process) and a file or socket a request opens.
FDS_A_THREAD = 3
MAX_THREADS = 40  # anyio's default


@dataclass(frozen=True)
class Budget:
    """How serve spends its file descriptors (``RLIMIT_NOFILE``)."""

    connections: int  # at most this many open (``guarded``)
    backlog: int  # accepted at once, before the cap closes any
    threads: int  # the pool answering requests, each its own database connection


def budget() -> Budget:
    """Half the descriptors are connections; a quarter of that (the listen
    backlog) is what asyncio accepts at once before the cap applies; a few are
    reserved; the rest is the thread pool's, three a thread, at most 40
    threads (at 64 descriptors 2 threads, at 128 10, at the unit's 16384 40)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    connections = max(8, soft // 2)
    backlog = max(8, min(2048, connections // 4))
    left = soft - RESERVED_FDS - connections - backlog
    return Budget(connections, backlog, max(1, min(MAX_THREADS, left // FDS_A_THREAD)))


def serve(settings: config.Settings) -> None:
    """Run the application on ``[http] listen`` under uvicorn until SIGTERM/SIGINT,
    each connection's request head due within ``HEAD_SECONDS``, the connections,
    the accept backlog and the thread pool within the file descriptors
    (``budget``, ``guarded``)."""
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    host, port = settings.http.address()
    fds = budget()
    app = create_app(settings, threads=fds.threads)
    logger.info(
        "serving",
        listen=f"{host}:{port}",
        database=config.safe_url(settings.database_url),
        max_connections=fds.connections,
        threads=fds.threads,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        http=guarded(AutoHTTPProtocol, fds.connections),
        limit_concurrency=fds.connections + 1,  # uvicorn counts the connection asking
        backlog=fds.backlog,
    )
