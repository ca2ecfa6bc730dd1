"""The web dashboard on the controller's HTTP port: server-rendered pages, htmx, live over SSE.

``/ui/`` lists workflows (filters by state, name prefix and namespace), ``/ui/workflows/ID`` shows
one (its DAG coloured by state, a Gantt timeline per agent, the task table; a click on a task
loads its explain, result, attempts and logs), ``/ui/agents`` the fleet (capacity and usage bars,
labels, drain and cordon). Buttons post to ``/ui/.../ACTION`` with the session's CSRF token;
:mod:`corral.controller.web.live` pushes fresh fragments over server-sent events.

Templates are Jinja2 files in ``templates/``, htmx (and its SSE extension) a vendored file in
``static/``: no node build step, nothing fetched from a CDN. Every read and action is the RPC it
stands for, run in process as the signed-in principal (:mod:`corral.controller.web.views`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from corral.controller.core.model import WorkflowState
from corral.controller.errors import CorralError, Unauthenticated
from corral.controller.rpc.errors import code_name
from corral.controller.rpc.wire import WORKFLOW_STATE_TO_PB
from corral.controller.web import charts
from corral.controller.web.server import WebContext
from corral.controller.web.session import Sessions
from corral.controller.web.views import Calls, task_row
from corral.v1 import types_pb2

__all__ = ["Dashboard", "install"]

_HERE = Path(__file__).parent
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}
WORKFLOW_STATES = tuple(state.value for state in WorkflowState)
_MAX_FILTER = 128
MAX_TASKS_SHOWN = 2000  # tasks a workflow page lists (and re-renders live)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else ""


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} m {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} m"


def _exit(code: int | None) -> str:
    """An exit code as people read it: ``SIGTERM (-15)`` for a process killed by a signal."""
    if code is None:
        return ""
    if code < 0:
        try:
            return f"{signal.Signals(-code).name} ({code})"
        except ValueError:
            return str(code)
    return str(code)


def _percent(used: float, total: float) -> int:
    return 0 if total <= 0 else max(0, min(100, round(100 * used / total)))


class Dashboard:
    """The pages, fragments and actions of one controller's dashboard."""

    def __init__(self, context: WebContext) -> None:
        self.context = context
        self.sessions = Sessions(context)
        self.calls = Calls(self.sessions)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(clock=_clock, duration=_duration, percent=_percent, exit=_exit)

    # --- rendering ------------------------------------------------------------------------------

    def render(self, name: str, request: web.Request, **values: Any) -> str:
        return self.env.get_template(name).render(
            csrf=self.sessions.csrf(request), auth=self.sessions.auth, now=time.time(), **values
        )

    def page(self, name: str, request: web.Request, **values: Any) -> web.Response:
        return web.Response(text=self.render(name, request, **values), content_type="text/html")

    # --- the workflows list ---------------------------------------------------------------------

    @staticmethod
    def filters(request: web.Request) -> dict[str, str]:
        """The list's filters from the query string, bounded; an unknown state is a 400."""
        query = request.query
        state = query.get("state", "")
        if state and state not in WORKFLOW_STATES:
            raise web.HTTPBadRequest(text=f"state: unknown workflow state {state[:32]!r}")
        found = {"state": state}
        for key in ("prefix", "namespace", "page"):
            value = query.get(key, "")
            if len(value) > _MAX_FILTER:
                raise web.HTTPBadRequest(text=f"{key}: longer than {_MAX_FILTER} characters")
            found[key] = value
        return found

    async def workflow_rows(self, request: web.Request, filters: dict[str, str]) -> str:
        states = [WORKFLOW_STATE_TO_PB[WorkflowState(filters["state"])]] if filters["state"] else []
        rows, more = await self.calls.workflows(
            request, states, filters["prefix"], filters["namespace"], filters["page"]
        )
        next_page = urlencode({**filters, "page": more}) if more else ""
        return self.render("_workflow_rows.html", request, workflows=rows, next_page=next_page)

    async def workflows_page(self, request: web.Request) -> web.Response:
        filters = self.filters(request)
        rows = await self.workflow_rows(request, filters)
        return self.page(
            "workflows.html",
            request,
            rows=rows,
            filters=filters,
            states=WORKFLOW_STATES,
            stream="/ui/sse/workflows?" + urlencode(filters),
        )

    # --- one workflow ---------------------------------------------------------------------------

    async def workflow_parts(self, request: web.Request, workflow_id: str) -> dict[str, str]:
        """The live fragments of a workflow page: header (state and buttons), tasks, dag, gantt."""
        # The summary first: rendering every task of a huge workflow each few seconds per open
        # page would cost the controller's loop real time, so past MAX_TASKS_SHOWN the page keeps
        # its header live and sends the task list to the CLI.
        status = await self.calls.workflow(request, workflow_id, tasks=False)
        if status.task_total <= MAX_TASKS_SHOWN:
            status = await self.calls.workflow(request, workflow_id, tasks=True)
        names = await self.calls.agent_names(request)
        tasks = [task_row(t) for t in status.tasks]
        state = types_pb2.WorkflowState.Name(status.state).removeprefix("WORKFLOW_STATE_").lower()
        dag = charts.dag_layout([(t.task_id, t.name, t.state, t.dependencies) for t in tasks]) if tasks else None
        gantt = charts.gantt_layout(
            [(t.name, t.state, t.agent_id, t.started, t.finished or None) for t in tasks], names, time.time()
        )
        values = {"wf": status, "state": state, "tasks": tasks, "agent_names": names}
        return {
            "header": self.render("_workflow_header.html", request, **values),
            "tasks": self.render("_tasks.html", request, **values),
            "dag": self.render("_dag.html", request, dag=dag, workflow_id=status.workflow_id, count=status.task_total),
            "gantt": self.render("_gantt.html", request, gantt=gantt),
        }

    async def workflow_page(self, request: web.Request) -> web.Response:
        workflow_id = request.match_info["workflow_id"]
        parts = await self.workflow_parts(request, workflow_id)
        return self.page("workflow.html", request, parts=parts, workflow_id=workflow_id)

    async def task_panel(self, request: web.Request) -> web.Response:
        panel = await self.calls.task_panel(request, request.match_info["workflow_id"], request.match_info["task_id"])
        return self.page("_task_panel.html", request, panel=panel)

    # --- agents ---------------------------------------------------------------------------------

    async def agent_rows(self, request: web.Request) -> str:
        agents = await self.calls.agents(request)
        return self.render("_agent_rows.html", request, agents=agents, can_cordon=self.calls.can_cordon)

    async def agents_page(self, request: web.Request) -> web.Response:
        return self.page("agents.html", request, rows=await self.agent_rows(request))

    # --- actions --------------------------------------------------------------------------------

    async def action(self, request: web.Request) -> web.Response:
        form = await request.post()
        csrf = form.get("csrf", "")
        self.sessions.check_csrf(request, csrf if isinstance(csrf, str) else "")
        action = request.match_info["action"]
        if "workflow_id" in request.match_info:
            target = request.match_info["workflow_id"]
            await self.calls.workflow_action(request, action, target)
            back = f"/ui/workflows/{target}"
        else:
            target = request.match_info["agent_id"]
            await self.calls.agent_action(request, action, target)
            back = "/ui/agents"
        if request.headers.get("HX-Request"):
            return web.Response(text=f"{action}: done", content_type="text/html")
        raise web.HTTPSeeOther(back)

    # --- signing in -----------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        return self.page("login.html", request, error="", then=_safe_next(request.query.get("next", "")))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        token, then = form.get("token", ""), _safe_next(str(form.get("next", "")))
        response = web.HTTPSeeOther(then)
        try:
            self.sessions.check_origin(request)
            self.sessions.sign_in(token if isinstance(token, str) else "", request, response)
        except CorralError as exc:
            status = _HTTP_STATUS.get(code_name(exc), 400)
            page = self.render("login.html", request, error=str(exc), then=then)
            return web.Response(status=status, text=page, content_type="text/html")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        form = await request.post()
        csrf = form.get("csrf", "")
        self.sessions.check_csrf(request, csrf if isinstance(csrf, str) else "")
        response = web.HTTPSeeOther("/ui/login")
        self.sessions.sign_out(request, response)
        raise response

    # --- errors ---------------------------------------------------------------------------------

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Domain errors of /ui/ requests as pages: 401 sends a browser to sign in, the rest say why."""
        if not request.path.startswith("/ui/") or request.path.startswith("/ui/static/"):
            return await handler(request)
        try:
            return await handler(request)
        except CorralError as exc:
            if isinstance(exc, Unauthenticated) and request.method == "GET" and not request.headers.get("HX-Request"):
                raise web.HTTPSeeOther("/ui/login?" + urlencode({"next": request.path_qs})) from None
            status = _HTTP_STATUS.get(code_name(exc), 500)
            if request.headers.get("HX-Request"):
                return web.Response(status=status, text=str(exc), content_type="text/plain")
            page = self.render("error.html", request, status=status, message=str(exc))
            return web.Response(status=status, text=page, content_type="text/html")


def _safe_next(value: str) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    return value if value.startswith("/ui/") and not value.startswith("//") and len(value) <= 512 else "/ui/"


def install(app: web.Application, context: WebContext) -> None:
    """Add the dashboard's routes to the controller's HTTP server (its ``installers`` hook)."""
    from corral.controller.web.live import Live

    board = Dashboard(context)
    live = Live(board)
    app.middlewares.append(board.errors)
    app.on_shutdown.append(live.shutdown)
    r = app.router
    r.add_get("/", _to_dashboard)
    r.add_get("/ui", _to_dashboard)
    r.add_get("/ui/", board.workflows_page)
    r.add_get("/ui/workflows/{workflow_id}", board.workflow_page)
    r.add_get("/ui/workflows/{workflow_id}/tasks/{task_id}", board.task_panel)
    r.add_post("/ui/workflows/{workflow_id}/{action}", board.action)
    r.add_get("/ui/agents", board.agents_page)
    r.add_post("/ui/agents/{agent_id}/{action}", board.action)
    r.add_get("/ui/login", board.login_page)
    r.add_post("/ui/login", board.login)
    r.add_post("/ui/logout", board.logout)
    r.add_get("/ui/sse/workflows", live.workflows)
    r.add_get("/ui/sse/workflows/{workflow_id}", live.workflow)
    r.add_get("/ui/sse/agents", live.agents)
    r.add_static("/ui/static/", _HERE / "static", append_version=False)


async def _to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")
