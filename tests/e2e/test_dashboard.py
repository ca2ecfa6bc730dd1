"""The web dashboard in a real headless Chromium against a real controller and agents.

Loads every page, checks the DOM (the workflow list, the DAG coloured by state, the Gantt bars,
the task table, a task's explain, attempts and logs, the agents' bars and labels), watches a task
change state with no reload (server-sent events), clicks cancel on a running workflow and sees it
cancelled, drains an agent. Screenshots go under the test's temp dir; their paths are printed
(``pytest -s`` shows them). Without a system Chromium or Playwright the test skips and says why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from corral.controller.address_file import wait_for_address
from corral.controller.sdk import SyncClient
from corral.v1 import agent_pb2, types_pb2
from tests.e2e.browser import open_browser
from tests.e2e.conftest import Cluster, eventually
from tests.procs import start_controller, stop

pytestmark = pytest.mark.e2e

_SPEC = {
    "name": "dashboard-demo",
    "tasks": [
        {"name": "extract", "agent_type": "shell", "payload": {"command": ["sh", "-c", "echo extracted; sleep 2"]}},
        {
            "name": "broken",
            "agent_type": "shell",
            "dependencies": ["extract"],
            "payload": {"command": ["sh", "-c", "echo 'no such table' >&2; exit 3"]},
            "allow_failure": True,
        },
        {
            "name": "train",
            "agent_type": "shell",
            "dependencies": ["extract"],
            "payload": {"command": ["sh", "-c", "echo training; sleep 120"]},
        },
        {
            "name": "report",
            "agent_type": "shell",
            "dependencies": ["train", "broken"],
            "payload": {"command": ["true"]},
        },
    ],
}


def _shot(page: Any, directory: Path, name: str, shots: list[Path]) -> None:
    path = directory / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shots.append(path)
    print(f"screenshot: {path}")


@pytest.mark.timeout(300)
def test_dashboard_pages_live_updates_and_buttons_in_chromium(cluster: Cluster, tmp_path: Path) -> None:
    http_file = tmp_path / "http.addr"
    api = cluster.start(
        {"alpha": 3, "beta": 1},
        controller_flags=["--http", "127.0.0.1:0", "--http-address-file", str(http_file)],
        agent_flags=["--label", "zone=a"],
    )
    base = "http://" + wait_for_address(http_file, timeout=30)
    shots: list[Path] = []
    with open_browser(tmp_path) as browser:
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the cancel button asks first
        workflow_id = api.submit(_SPEC)

        # The workflow page, opened while extract still runs: its node turns completed live.
        page.goto(f"{base}/ui/workflows/{workflow_id}")
        assert page.locator("#workflow-state").inner_text() == "running"
        assert page.locator("svg.dag g.node").count() == 4
        assert page.locator("svg.dag path.edge").count() == 4
        page.evaluate("window.__noReload = true")  # gone if the page were loaded again
        page.wait_for_selector('svg.dag g.node[data-task="train"][data-state="running"]')
        page.wait_for_selector('svg.dag g.node[data-task="extract"][data-state="completed"]')
        page.wait_for_selector('#task-table tr[data-task="broken"] [data-state="failed"]')
        assert page.evaluate("window.__noReload") is True, "the state changed by a reload, not over SSE"
        page.wait_for_selector('svg.gantt rect.bar[data-task="extract"]')
        assert page.locator("svg.gantt text.agent").count() >= 1  # a row per agent that ran something
        _shot(page, tmp_path, "workflow-running", shots)

        # A task's panel: explain, attempts (exit code 3) and its stderr.
        page.click('#task-table tr[data-task="broken"]')
        page.wait_for_selector('#task-panel[data-task="broken"]')
        assert "exit code 3" in page.locator("#explain").inner_text()
        assert page.locator("#attempts tbody tr").count() == 1
        assert "no such table" in page.locator("#stderr").inner_text()
        page.click('#task-table tr[data-task="extract"]')
        page.wait_for_selector('#task-panel[data-task="extract"]')
        assert "extracted" in page.locator("#stdout").inner_text()
        _shot(page, tmp_path, "task-panel", shots)

        # The list, with its filters.
        page.goto(f"{base}/ui/")
        row = page.locator(f'#workflows tr[data-workflow="{workflow_id}"]')
        assert "running" in row.inner_text() and "dashboard-demo" in row.inner_text()
        page.select_option('select[name="state"]', "completed")
        page.click('#filters button[type="submit"]')
        page.wait_for_selector("#workflows td.empty")  # nothing completed yet
        page.goto(f"{base}/ui/?state=running&prefix=dash")
        assert page.locator(f'#workflows tr[data-workflow="{workflow_id}"]').count() == 1
        _shot(page, tmp_path, "workflows", shots)

        # Pause and resume, then cancel: each button, then the state changes on the page.
        page.goto(f"{base}/ui/workflows/{workflow_id}")
        page.click("#btn-pause")
        page.wait_for_selector('#workflow-state:text-is("paused")')
        page.click("#btn-resume")
        page.wait_for_selector('#workflow-state:text-is("running")')
        page.click("#btn-cancel")
        page.wait_for_selector('#workflow-state:text-is("cancelled")')
        page.wait_for_selector('#task-table tr[data-task="train"] [data-state="cancelled"]')
        assert page.locator("#btn-retry").is_enabled()
        assert "cancelled from the dashboard by dev" in page.locator("#header").inner_text()
        killed = page.locator('#task-table tr[data-task="train"]').inner_text()
        assert re.search(r"SIG(TERM|KILL) \(-(15|9)\)", killed), killed  # a signal name, not a bare -15
        assert api.status(workflow_id, tasks=False).state == types_pb2.WORKFLOW_STATE_CANCELLED
        _shot(page, tmp_path, "workflow-cancelled", shots)
        page.click("#btn-retry")  # a new run of what did not complete
        page.wait_for_selector('#workflow-state:text-is("running")')
        page.wait_for_selector('#task-table tr[data-task="train"] [data-state="running"]')
        assert api.status(workflow_id, tasks=False).run == 2
        api.cancel(workflow_id)  # nothing left running for the teardown
        api.wait_done(workflow_id, 60)

        # Agents: bars, labels, and drain.
        page.goto(f"{base}/ui/agents")
        assert page.locator("#agents tbody tr").count() == 2
        assert "zone=a" in page.locator('#agents tr[data-agent="alpha"]').inner_text()
        assert (
            page.locator('#agents tr[data-agent="alpha"] .bar').count() == 5
        )  # slots; cpu and memory: allocated, used
        if hasattr(agent_pb2, "CordonAgentRequest"):  # the fleet part's manual cordon (issue 11)
            page.click('#agents tr[data-agent="alpha"] button[data-action="cordon"]')
            page.wait_for_selector('#agents tr[data-agent="alpha"] .state-cordoned')
            page.click('#agents tr[data-agent="alpha"] button[data-action="uncordon"]')
            page.wait_for_selector('#agents tr[data-agent="alpha"] button[data-action="cordon"]:enabled')
            assert page.locator('#agents tr[data-agent="alpha"] .state-cordoned').count() == 0
        else:
            assert page.locator('button[data-action="cordon"]').count() == 0  # no button that cannot work
        page.click('#agents tr[data-agent="beta"] button[data-action="drain"]')
        page.wait_for_selector(
            '#agents tr[data-agent="beta"] :is(.state-draining, .state-drained, .state-disconnected)'
        )
        _shot(page, tmp_path, "agents", shots)
    eventually(lambda: all(p.exists() and p.stat().st_size > 0 for p in shots) or None, 5, "screenshots")
    print("screenshots:\n" + "\n".join(str(p) for p in shots))


@pytest.mark.timeout(300)
def test_signing_in_with_a_token_in_chromium_and_acting_over_the_session(tmp_path: Path) -> None:
    """Auth on: the sign-in form, the cookie the browser keeps, live updates and a cancel over it."""
    http_file = tmp_path / "http.addr"
    proc, address = start_controller(
        tmp_path, extra=["--auth", "--http", "127.0.0.1:0", "--http-address-file", str(http_file)]
    )
    try:
        base = "http://" + wait_for_address(http_file, exited=proc.poll)
        with SyncClient(address, token=(tmp_path / "admin.token").read_text().strip()) as client:
            token = client.create_token("submitter", namespaces=["default"]).token
            workflow_id = client.submit(_SPEC, start=True).workflow_id  # no agents: it stays running
        shots: list[Path] = []
        with open_browser(tmp_path) as browser:
            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{base}/ui/workflows/{workflow_id}")
            assert page.url.startswith(f"{base}/ui/login?next=")  # sent to sign in first
            page.fill('#login input[name="token"]', "corral_wrong")
            page.click('#login button[type="submit"]')
            assert "unknown, expired or revoked" in page.locator("#login-error").inner_text()
            page.fill('#login input[name="token"]', token)
            page.click('#login button[type="submit"]')
            page.wait_for_url(f"{base}/ui/workflows/{workflow_id}")
            (cookie,) = [c for c in browser.cookies() if c["name"] == "corral_session"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and token not in cookie["value"]
            assert page.evaluate("document.cookie") == ""  # scripts cannot read the session
            _shot(page, tmp_path, "signed-in", shots)
            page.click("#btn-cancel")
            page.wait_for_selector('#workflow-state:text-is("cancelled")')  # the SSE stream rode the cookie
            assert "by token:" in page.locator("#header").inner_text()
            page.click('nav button:text-is("Sign out")')
            page.wait_for_url(f"{base}/ui/login")
            page.goto(f"{base}/ui/")
            assert page.url.startswith(f"{base}/ui/login")
    finally:
        stop(proc)
