"""One way to run an HTTP server inside a process that owns its lifecycle (the worker's health routes,
the gateway): uvicorn serves; the process, not uvicorn, handles SIGTERM/SIGINT, so that a graceful
shutdown runs to its end and the exit status is the process's own (uvicorn would re-raise the
signal once it stops serving, ending the process before its shutdown and with status -15)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Iterator
from typing import Any

import uvicorn


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def start_server(
    app: Any, host: str, port: int, **options: Any
) -> tuple[QuietServer, asyncio.Task[None]]:
    """Serve `app` until `server.should_exit`; returns once it listens (or failed to: the task is done)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, **options)
    server = QuietServer(config)
    serving = asyncio.create_task(server.serve(), name="http")
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no started event)
        await asyncio.sleep(0.01)
    return server, serving


async def wait_started(start: Awaitable[Any], stop: asyncio.Event, seconds: float) -> bool | None:
    """Await `start` until it is done (True), a stop signal comes first (False) or `seconds` pass
    (None); an unfinished start is cancelled, and an exception of `start` propagates."""
    starting = asyncio.ensure_future(start)
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait(
            {starting, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        if starting in done:
            starting.result()
            return True
        return False if done else None
    finally:
        for task in (starting, stopping):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def not_ready(log: logging.Logger, seconds: float, missing: str) -> int:
    """Say why a process did not become ready within WORKER_STARTUP_TIMEOUT_SECONDS; its exit status."""
    log.critical("not ready after %.0f s (WORKER_STARTUP_TIMEOUT_SECONDS): %s", seconds, missing)
    return 1


def bound_port(server: QuietServer) -> int:
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port
