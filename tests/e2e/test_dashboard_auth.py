"""The dashboard with auth on: token -> session cookie, CSRF on actions, roles, revocation, open probes.

Plain HTTP against a real controller process (``--auth``): what is checked here is the exchange
between a browser and the server (cookie attributes, redirects, status codes), which needs no
rendering. The browser test (test_dashboard.py) covers the pages themselves.
"""

from __future__ import annotations

import http.client
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.controller.address_file import wait_for_address
from corral.controller.sdk import SyncClient
from tests.procs import start_controller, stop

pytestmark = pytest.mark.e2e

_SPEC = {"name": "guarded", "tasks": [{"name": "t", "agent_type": "shell", "payload": {"command": ["true"]}}]}


class Browser:
    """Just enough of a browser: one cookie jar for one host, no redirects followed."""

    def __init__(self, base: str) -> None:
        self.host = base.removeprefix("http://")
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection(self.host, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        text = response.read(200_000).decode("utf-8", "replace")  # an SSE stream: its start is enough
        for header in response.headers.get_all("Set-Cookie") or []:
            self.set_cookie_headers.append(header)
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in header:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        connection.close()
        return response.status, dict(response.headers.items()), text

    def stream_start(self, path: str) -> tuple[int, str, str]:
        """Open a server-sent-events stream with the cookie: its status, type and first line."""
        connection = http.client.HTTPConnection(self.host, timeout=30)
        connection.request("GET", path, headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())})
        response = connection.getresponse()
        first = response.read(11).decode() if response.status == 200 else ""  # ": connected"
        connection.close()
        return response.status, response.headers.get("Content-Type", ""), first

    def csrf(self) -> str:
        status, _, page = self.request("GET", "/ui/agents")
        assert status == 200, page
        found = re.search(r'name="csrf" value="([^"]+)"|"X-CSRF-Token": "([^"]+)"', page)
        assert found is not None
        return found.group(1) or found.group(2)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(gRPC address, HTTP base URL, admin token) of a controller with --auth and --http."""
    http_file = tmp_path / "http.addr"
    proc, address = start_controller(
        tmp_path, extra=["--auth", "--http", "127.0.0.1:0", "--http-address-file", str(http_file)]
    )
    try:
        base = "http://" + wait_for_address(http_file, exited=proc.poll)
        yield address, base, (tmp_path / "admin.token").read_text().strip()
    finally:
        stop(proc)


def test_sessions_csrf_and_roles(controller: tuple[str, str, str]) -> None:
    address, base, admin = controller
    with SyncClient(address, token=admin) as client:
        viewer = client.create_token("viewer", namespaces=["default"]).token
        submitter = client.create_token("submitter", namespaces=["default"])
        workflow_id = client.submit(_SPEC, start=True).workflow_id  # no agents: it waits, running

    anonymous = Browser(base)
    # The probes stay open; the dashboard sends a browser without a session to sign in.
    assert anonymous.request("GET", "/healthz")[0] == 200
    assert anonymous.request("GET", "/readyz")[0] == 200
    status, headers, _ = anonymous.request("GET", f"/ui/workflows/{workflow_id}")
    assert status == 303 and headers["Location"].startswith("/ui/login?next=")
    assert anonymous.request("GET", f"/ui/sse/workflows/{workflow_id}", headers={"HX-Request": "true"})[0] == 401
    assert anonymous.request("POST", f"/ui/workflows/{workflow_id}/cancel", form={"csrf": "x"})[0] == 403
    status, _, page = anonymous.request("POST", "/ui/login", form={"token": "corral_not-a-token"})
    assert status == 401 and "unknown, expired or revoked" in page and not anonymous.cookies

    # A viewer signs in: an HttpOnly, SameSite=Strict cookie (not Secure: this port is plain HTTP).
    reader = Browser(base)
    status, headers, _ = reader.request("POST", "/ui/login", form={"token": viewer, "next": "/ui/agents"})
    assert status == 303 and headers["Location"] == "/ui/agents"
    cookie = reader.set_cookie_headers[-1]
    assert cookie.startswith("corral_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie and viewer not in cookie  # the token never leaves the controller
    status, _, page = reader.request("GET", f"/ui/workflows/{workflow_id}")
    assert status == 200 and "guarded" in page
    assert reader.stream_start(f"/ui/sse/workflows/{workflow_id}") == (200, "text/event-stream", ": connected")
    csrf = reader.csrf()
    # Reading is allowed; cancelling needs the submitter's role, and every action the CSRF token.
    assert reader.request("POST", f"/ui/workflows/{workflow_id}/cancel", form={"csrf": "wrong"})[0] == 403
    status, _, page = reader.request("POST", f"/ui/workflows/{workflow_id}/cancel", form={"csrf": csrf})
    assert status == 403 and "needs role" in page

    actor = Browser(base)
    assert actor.request("POST", "/ui/login", form={"token": submitter.token})[0] == 303
    status, _, page = actor.request(
        "POST", f"/ui/workflows/{workflow_id}/cancel", headers={"HX-Request": "true", "X-CSRF-Token": actor.csrf()}
    )
    assert (status, page) == (200, "cancel: done")
    with SyncClient(address, token=admin) as client:
        assert client.status(workflow_id).state == "cancelled"
        # Revoking the token ends its sessions at the next request.
        client.revoke_token(submitter.info.token_id)
    status, headers, _ = actor.request("GET", "/ui/")
    assert status == 303 and headers["Location"].startswith("/ui/login")

    # Signing out needs the CSRF token too, and clears the session.
    csrf = reader.csrf()
    assert reader.request("POST", "/ui/logout", form={"csrf": csrf})[0] == 303
    assert reader.request("GET", "/ui/")[0] == 303
