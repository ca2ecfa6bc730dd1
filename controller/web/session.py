"""Who is looking at the dashboard: session cookies, CSRF tokens and the controller's access checks.

With auth on, a browser signs in by posting a client token to ``/ui/login``; the token is checked
exactly as a gRPC call's bearer token is (the auth interceptor's :meth:`AuthInterceptor.admit`),
and exchanged for a session: a random id in a cookie (HttpOnly, SameSite=Strict, Secure when the
controller serves TLS, so the cookie never leaves for another site and scripts cannot read it).
The token itself stays in this process's memory, never in the cookie: every request authenticates
it afresh, so a revoked or expired token ends its sessions at once, and each page or action is
checked against the permission table under the RPC it stands for (reading needs a viewer token,
cancel the role that may cancel, drain the operator's). Sessions live in memory: a controller
restart signs everybody out, which is the safe direction.

Every action is a POST carrying the session's CSRF token (``X-CSRF-Token`` header, sent by htmx,
or a ``csrf`` form field), compared in constant time. Auth off (the loopback default) still asks
for one — a per-process token — so a page on another site cannot make a browser on this machine
cancel workflows through a dashboard nobody logged into.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from corral.controller.errors import PermissionDenied, Unauthenticated
from corral.controller.rpc import identity
from corral.controller.rpc.auth import AuthInterceptor
from corral.controller.rpc.identity import Principal
from corral.controller.web.server import WebContext

__all__ = ["COOKIE", "CSRF_HEADER", "Session", "Sessions"]

COOKIE = "corral_session"
CSRF_HEADER = "X-CSRF-Token"
_SESSION_TTL_S = 12 * 3600.0
_MAX_SESSIONS = 10_000  # the oldest is dropped beyond this (sign-ins cannot exhaust memory)
_MAX_TOKEN = 512  # longer than any token corral issues


class _NoPeer:
    """The gRPC context the interceptor reads a client certificate from: a browser has none."""

    def auth_context(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser: the token it signed in with, its CSRF token and when it expires."""

    token: str
    csrf: str
    expires: float


class Sessions:
    """The sessions of one controller, and the access check of every dashboard request."""

    def __init__(self, context: WebContext) -> None:
        self.context = context
        self._door = AuthInterceptor(context.runtime, enabled=True)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._dev_csrf = secrets.token_urlsafe(24)  # auth off: one per process

    @property
    def auth(self) -> bool:
        return self.context.auth

    def _session(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(COOKIE, "")
        session = self._sessions.get(sid) if sid else None
        if session is not None and session.expires < time.time():
            del self._sessions[sid]
            return None
        return session

    def csrf(self, request: web.Request) -> str:
        """The CSRF token pages embed for their actions ("" when not signed in)."""
        if not self.auth:
            return self._dev_csrf
        session = self._session(request)
        return session.csrf if session is not None else ""

    def principal(self, request: web.Request, method: str) -> Principal:
        """The caller of ``request`` if it may call ``method`` (a full RPC name), else an error.

        Unauthenticated (no session, or its token was revoked or expired) or PermissionDenied,
        from the same checks as a gRPC call with that token.
        """
        if not self.auth:
            return identity.DEV_ADMIN
        session = self._session(request)
        if session is None:
            raise Unauthenticated("sign in with a token to see the dashboard")
        return self._door.admit(method, [("authorization", f"Bearer {session.token}")], _NoPeer())

    @staticmethod
    def check_origin(request: web.Request) -> None:
        """PermissionDenied for a POST a browser sent from another site (its ``Origin`` header).

        The CSRF token already stops those for actions; this also covers the sign-in form, where
        another site could otherwise sign a browser in with the other site's own token.
        """
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise PermissionDenied(f"cross-site request from {origin[:128]!r} refused")

    def check_csrf(self, request: web.Request, form_value: str = "") -> None:
        """PermissionDenied unless the request carries this session's CSRF token (and comes from this site)."""
        self.check_origin(request)
        expected = self.csrf(request)
        given = request.headers.get(CSRF_HEADER, "") or form_value
        if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
            raise PermissionDenied("missing or wrong CSRF token: reload the page and try again")

    def sign_in(self, token: str, request: web.Request, response: web.StreamResponse) -> Principal:
        """Check ``token`` like a gRPC bearer token; on success set a new session's cookie."""
        token = token.strip()
        if not token or len(token) > _MAX_TOKEN:
            raise Unauthenticated("paste a corral token (corral token create --role viewer)")
        principal = self._door.principal("/corral.v1.Admin/WhoAmI", [("authorization", f"Bearer {token}")], _NoPeer())
        if principal.kind == "agent" or principal.role in ("", "join", "agent"):
            raise PermissionDenied(f"{principal.describe()} cannot use the dashboard; sign in with a client token")
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(token, secrets.token_urlsafe(24), time.time() + _SESSION_TTL_S)
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            # Under TLS a browser keeps it only over HTTPS (a proxy in front of --http) or on localhost.
            secure=self.context.tls or request.secure,
            path="/",
            max_age=int(_SESSION_TTL_S),
        )
        return principal

    def sign_out(self, request: web.Request, response: web.StreamResponse) -> None:
        """End the request's session (if any) and clear its cookie."""
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)
        response.del_cookie(COOKIE, path="/")
