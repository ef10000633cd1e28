"""Health routes of the worker (issue #11), served by FastStream's ASGI application (and, for the
records service, by a plain ASGI app).

`/livez` answers 204 while the event loop runs (cheap: no I/O). `/readyz` runs the process's checks,
each bounded by a timeout, and answers 204, or 503 with one line per thing missing: what an operator
reads in `kubectl describe` and what a probe needs. `/metrics` is Prometheus text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.asgi import AsgiResponse, get
from prometheus_client import CollectorRegistry, make_asgi_app

Check = Callable[[], Awaitable[str | None]]
"""Returns what is missing, or None when this part is ready."""
CHECK_TIMEOUT_SECONDS = 2.0


async def missing(checks: Sequence[Check]) -> list[str]:
    """What is not ready, every check run at once."""

    async def one(check: Check) -> str | None:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:  # a check that fails or hangs says so, named by its function
            return f"{getattr(check, '__name__', 'check')} failed ({type(exc).__name__})"

    return [m for m in await asyncio.gather(*(one(c) for c in checks)) if m]


def health_routes(checks: Sequence[Check], registry: CollectorRegistry | None) -> list[tuple[str, Any]]:
    """`/livez`, `/readyz` and (with a registry) `/metrics` for `AsgiFastStream(asgi_routes=...)`."""

    @get(include_in_schema=False)
    async def livez(scope: Any) -> AsgiResponse:
        return AsgiResponse(b"", status_code=204)

    @get(include_in_schema=False)
    async def readyz(scope: Any) -> AsgiResponse:
        lacking = await missing(checks)
        if not lacking:
            return AsgiResponse(b"", status_code=204)
        body = ("\n".join(lacking) + "\n").encode()
        return AsgiResponse(body, status_code=503, headers={"content-type": "text/plain; charset=utf-8"})

    routes: list[tuple[str, Any]] = [("/livez", livez), ("/readyz", readyz)]
    if registry is not None:
        routes.append(("/metrics", make_asgi_app(registry)))
    return routes


def health_app(checks: Sequence[Check], registry: CollectorRegistry | None) -> Any:
    """The same routes as a plain ASGI app, for a process without FastStream (the records service)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Mount, Route

    async def livez(_: Any) -> Response:
        return Response(status_code=204)

    async def readyz(_: Any) -> Response:
        lacking = await missing(checks)
        if not lacking:
            return Response(status_code=204)
        return PlainTextResponse("\n".join(lacking) + "\n", status_code=503)

    routes: list[Any] = [Route("/livez", livez), Route("/readyz", readyz)]
    if registry is not None:
        routes.append(Mount("/metrics", make_asgi_app(registry)))
    return Starlette(routes=routes)
