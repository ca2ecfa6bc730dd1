"""Live updates of the dashboard over server-sent events (SSE).

A page opens one ``EventSource`` (htmx's SSE extension, which rides the session cookie) and gets
fresh HTML fragments, named by event (``rows``; ``header``, ``tasks``, ``dag``, ``gantt``), each
sent only when it changed. A workflow page wakes on the workflow's own event stream (the
WatchWorkflow RPC, in process), so a task's new state shows within a fraction of a second, with a
slow re-render besides for what has no event (a retry of a finished workflow, an agent's name).
The workflows list and the agents page re-render every couple of seconds: there is no event
for "some workflow somewhere changed", and a poll per open page costs nothing on the task path.

Every render is a read through the same access checks as the page, so a revoked token ends its
streams at the next render (an ``signout`` event, then the end of the stream). Streams are
bounded (:data:`MAX_STREAMS`); the controller's shutdown ends them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from corral.controller.errors import CorralError
from corral.controller.rpc import identity
from corral.controller.web.dashboard import Dashboard
from corral.v1 import orchestrator_pb2

__all__ = ["MAX_STREAMS", "Live"]

MAX_STREAMS = 200
_LIST_EVERY_S = 2.0
_WORKFLOW_EVERY_S = 3.0
_COALESCE_S = 0.15  # events of one burst (a tick finishing many tasks) make one render
_KEEPALIVE_S = 15.0


def sse_message(event: str, html: str) -> bytes:
    """One SSE message: ``event:`` then the fragment, one ``data:`` line per line of it."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


class Live:
    """The SSE endpoints of one dashboard."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board
        self._streams: set[asyncio.Event] = set()

    async def shutdown(self, app: web.Application) -> None:
        """End every stream (the HTTP server waits for open handlers when it stops)."""
        for stop in list(self._streams):
            stop.set()

    async def _stream(
        self,
        request: web.Request,
        render: Callable[[], Awaitable[dict[str, str]]],
        wake: Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, None]] | None,
        every_s: float,
    ) -> web.StreamResponse:
        if len(self._streams) >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"more than {MAX_STREAMS} live pages are open; reload later")
        # Checked before the stream opens, so a browser without a session gets a plain 401/redirect.
        sent = await render()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b": connected\n\n")  # sends the headers now: the browser's "open"
        stop, dirty = asyncio.Event(), asyncio.Event()
        self._streams.add(stop)
        waker = asyncio.create_task(wake(stop, dirty)) if wake is not None else None
        try:
            idle = 0.0
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dirty.wait(), every_s)
                if stop.is_set():
                    break
                if dirty.is_set():
                    await asyncio.sleep(_COALESCE_S)
                    dirty.clear()
                try:
                    parts = await render()
                except CorralError as exc:
                    await response.write(sse_message("signout", str(exc)))
                    break
                changed = [name for name, html in parts.items() if sent.get(name) != html]
                for name in changed:
                    await response.write(sse_message(name, parts[name]))
                sent = parts
                idle = 0.0 if changed else idle + every_s
                if idle >= _KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")  # proxies close silent connections
                    idle = 0.0
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser went away (or the server is stopping)
        finally:
            self._streams.discard(stop)
            if waker is not None:
                waker.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waker
        return response

    async def workflows(self, request: web.Request) -> web.StreamResponse:
        filters = self.board.filters(request)

        async def render() -> dict[str, str]:
            return {"rows": await self.board.workflow_rows(request, filters)}

        return await self._stream(request, render, None, _LIST_EVERY_S)

    async def agents(self, request: web.Request) -> web.StreamResponse:
        async def render() -> dict[str, str]:
            return {"rows": await self.board.agent_rows(request)}

        return await self._stream(request, render, None, _LIST_EVERY_S)

    async def workflow(self, request: web.Request) -> web.StreamResponse:
        workflow_id = request.match_info["workflow_id"]

        async def render() -> dict[str, str]:
            return await self.board.workflow_parts(request, workflow_id)

        async def wake(stop: asyncio.Event, dirty: asyncio.Event) -> None:
            # The workflow's events as WatchWorkflow serves them, as the page's principal (checked
            # by the first render); each marks the page dirty. The watch ends with the workflow;
            # the slow re-render sees a retry, and the watch starts again while it runs.
            method = "/corral.v1.Orchestrator/WatchWorkflow"
            ask = orchestrator_pb2.WatchWorkflowRequest(workflow_id=workflow_id)
            while not stop.is_set():
                principal = self.board.sessions.principal(request, method)
                with identity.acting_as(principal):
                    async for _ in self.board.calls.orchestrator.WatchWorkflow(ask, None):
                        dirty.set()
                await asyncio.sleep(_WORKFLOW_EVERY_S)

        return await self._stream(request, render, wake, _WORKFLOW_EVERY_S)
