"""The controller's HTTP port: health probes, Prometheus metrics and the web dashboard."""

from __future__ import annotations

from collections.abc import Sequence

from corral.controller.web.server import HttpServer, RouteInstaller, WebContext

__all__ = ["HttpServer", "RouteInstaller", "WebContext", "installers"]


def installers() -> Sequence[RouteInstaller]:
    """Every route installer beyond the built-in probes and metrics (the dashboard adds its own)."""
    from corral.controller.web.dashboard import install as dashboard

    return (dashboard,)
