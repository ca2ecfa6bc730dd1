"""The controller's HTTP server (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``, plus installed routes.

It runs on the controller's event loop next to the gRPC server, and only when ``--http`` is
given. The probes never need a token: ``/healthz`` answers while the process serves requests at
all, ``/readyz`` while the store takes writes (a controller in degraded mode is alive but not
ready, so a load balancer sends its traffic elsewhere). ``/metrics`` renders prometheus-client's
default registry in the Prometheus text format, for whatever registered metrics there.

Route installers (``installers=``) add the rest: each gets the application and a
:class:`WebContext` and adds its routes and middlewares. They run once, before the server starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from corral.controller import metrics
from corral.controller.rpc.tls import listen_host
from corral.controller.runtime import Runtime

__all__ = ["HttpServer", "RouteInstaller", "WebContext"]

log = logging.getLogger("corral.controller.web")


@dataclass(frozen=True)
class WebContext:
    """What route installers may use: the runtime, and whether callers must authenticate."""

    runtime: Runtime
    auth: bool  # tokens are required (TLS or --auth)
    tls: bool  # the controller serves TLS (cookies are then Secure)


RouteInstaller = Callable[[web.Application, WebContext], None]


class HttpServer:
    """The HTTP port of one controller."""

    def __init__(self, context: WebContext, *, installers: Sequence[RouteInstaller] = ()) -> None:
        self.context = context
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        metrics.register()  # the controller's own metrics, kept out of REGISTRY until served
        for install in installers:
            install(self.app, context)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, listen: str) -> str:
        """Bind ``host:port`` (port 0: any free one) and serve; returns the bound ``host:port``."""
        host = listen_host(listen)
        try:
            port = int(listen.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            raise ValueError(f"--http wants host:port, got {listen!r}") from None
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or None, port)
        await site.start()
        server = site._server  # aiohttp keeps the asyncio server private; the bound port is on it
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        bound = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        log.info("http (probes, metrics) on %s", bound)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        degraded = self.context.runtime.degraded
        if degraded is not None:
            return web.Response(status=503, text=f"not ready: the store refuses writes ({degraded.message})\n")
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
