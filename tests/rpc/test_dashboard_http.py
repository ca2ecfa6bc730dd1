"""The dashboard's HTTP edge in process: a real Runtime, the real HTTP server on a real socket.

Bad input gets a precise 4xx and changes nothing; under TLS the session cookie is Secure; the
charts and SSE framing are checked as plain functions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from corral.controller.core import requests as rq
from corral.controller.runtime import Runtime
from corral.controller.secretbox import hash_token, new_token, new_token_id
from corral.controller.store.sqlite import SqliteStore
from corral.controller.web import HttpServer, WebContext, dashboard, installers
from corral.controller.web.charts import MAX_NODES, dag_layout, gantt_layout
from corral.controller.web.live import sse_message
from corral.v1 import orchestrator_pb2
from tests.rpc.conftest import Controller, shell_task, workflow_spec


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(SqliteStore(tmp_path / "c.db"))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


async def _serve(runtime: Runtime, *, auth: bool, tls: bool) -> tuple[HttpServer, str]:
    server = HttpServer(WebContext(runtime, auth=auth, tls=tls), installers=installers())
    return server, "http://" + await server.start("127.0.0.1:0")


async def _token(runtime: Runtime, role: str) -> str:
    text = new_token()
    await runtime.handle(rq.CreateTokenRequest(new_token_id(), hash_token(text), role, (), "test"))
    return text


async def test_bad_input_gets_a_precise_answer(runtime: Runtime) -> None:
    server, base = await _serve(runtime, auth=False, tls=False)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/ui/?state=bogus") as r:
                assert r.status == 400 and "state: unknown workflow state 'bogus'" in await r.text()
            async with http.get(base + "/ui/?prefix=" + "x" * 500) as r:
                assert r.status == 400 and "prefix: longer than" in await r.text()
            async with http.get(base + "/ui/workflows/wf-nope") as r:
                assert r.status == 404
            async with http.get(base + "/ui/?page=notanumber") as r:
                assert r.status == 400 and "page_token" in await r.text()
            async with http.get(base + "/ui/") as r:
                page = await r.text()
                csrf = page.split('"X-CSRF-Token": "', 1)[1].split('"', 1)[0]
            headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
            async with http.post(base + "/ui/workflows/wf-nope/explode", headers=headers) as r:
                assert r.status == 404 and "no workflow action 'explode'" in await r.text()
            async with http.post(base + "/ui/workflows/wf-nope/cancel", headers=headers) as r:
                assert r.status == 404
            async with http.post(base + "/ui/workflows/wf-nope/cancel", headers={"HX-Request": "true"}) as r:
                assert r.status == 403 and "CSRF" in await r.text()
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
    finally:
        await server.stop()


async def test_under_tls_the_session_cookie_is_secure_and_long_tokens_are_refused(runtime: Runtime) -> None:
    viewer = await _token(runtime, "viewer")
    server, base = await _serve(runtime, auth=True, tls=True)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/ui/login", data={"token": "x" * 10_000}, allow_redirects=False) as r:
                assert r.status == 401 and "Set-Cookie" not in r.headers
            async with http.post(base + "/ui/login", data={"token": viewer}, allow_redirects=False) as r:
                assert r.status == 303
                cookie = r.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            async with http.post(
                base + "/ui/login", data={"token": viewer, "next": "//evil.example/"}, allow_redirects=False
            ) as r:
                assert r.headers["Location"] == "/ui/"  # never a redirect to another site
            # Another site cannot sign this browser in (with its own token), nor act with a stolen token.
            evil = {"Origin": "https://evil.example"}
            async with http.post(base + "/ui/login", data={"token": viewer}, headers=evil) as r:
                assert r.status == 403 and "cross-site" in await r.text() and "Set-Cookie" not in r.headers
    finally:
        await server.stop()


def test_dag_columns_follow_the_longest_chain_and_big_graphs_are_not_drawn() -> None:
    dag = dag_layout(
        [
            ("1", "a", "completed", ()),
            ("2", "b", "running", ("a",)),
            ("3", "c", "ready", ("a", "b")),
            ("4", "d", "pending", ()),
        ]
    )
    assert dag is not None
    x = {n.name: n.x for n in dag.nodes}
    assert x["a"] == x["d"] < x["b"] < x["c"]
    assert len(dag.edges) == 3
    long_chain = [(str(i), f"t{i}", "pending", (f"t{i - 1}",) if i else ()) for i in range(MAX_NODES)]
    chain = dag_layout(long_chain)
    assert chain is not None and len({n.x for n in chain.nodes}) == MAX_NODES
    assert dag_layout([*long_chain, ("x", "x", "pending", ())]) is None


def test_gantt_has_a_row_per_agent_and_running_bars_reach_now() -> None:
    gantt = gantt_layout(
        [("a", "completed", "ag1", 100.0, 110.0), ("b", "running", "ag2", 105.0, None), ("c", "ready", "", 0.0, None)],
        {"ag1": "alpha", "ag2": "beta"},
        now=120.0,
    )
    assert gantt is not None
    assert [name for name, _ in gantt.rows] == ["alpha", "beta"]
    a, b = gantt.bars
    assert a.x == gantt.label_w and b.x + b.width == gantt.width - 10  # b runs until now, the right edge
    assert gantt_layout([("c", "ready", "", 0.0, None)], {}, now=1.0) is None


def test_sse_messages_frame_every_line() -> None:
    assert sse_message("rows", "<a>\n<b>") == b"event: rows\ndata: <a>\ndata: <b>\n\n"
    assert sse_message("rows", "") == b"event: rows\ndata: \n\n"


async def test_a_huge_workflow_keeps_a_live_header_and_sends_its_tasks_to_the_cli(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "MAX_TASKS_SHOWN", 2)  # "huge" = more than 2 tasks, for the test
    spec = workflow_spec("wide", [shell_task("a"), shell_task("b", "a"), shell_task("c", "a")])
    submitted = await controller.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=spec))
    small = workflow_spec("small", [shell_task("a"), shell_task("b", "a")])
    shown = await controller.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=small))
    server, base = await _serve(controller.runtime, auth=False, tls=False)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/ui/workflows/{submitted.workflow_id}") as r:
                page = await r.text()
            assert r.status == 200 and 'id="workflow-state"' in page
            assert 'id="too-many"' in page and "3 tasks" in page and "data-task=" not in page
            async with http.get(f"{base}/ui/workflows/{shown.workflow_id}") as r:
                page = await r.text()
            assert 'id="too-many"' not in page and page.count('<tr data-task="') == 2
    finally:
        await server.stop()
