"""The one auth guard in front of every admin route (/prewarm/*, /metrics).

On loopback only local users can reach the proxy, so no token is needed; on any
other address the admin routes can read the request log (users, models), so a
token is required and `serve` refuses to start without one. Only admin routes pay
for the check: the proxy's own path is untouched by it.

A browser cannot send a bearer header from an address bar, so the status page
gives the token once through a login form and gets an HttpOnly session cookie
back. The cookie opens read-only routes (GET) only: a POST carried by a cookie is
what a cross-site form could forge, and nothing the page does needs one.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from prewarm.config import ConfigError, Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_COOKIE = "prewarm_session"
# Routes a client may call as well as an admin: off loopback an API key (api_keys) opens them too.
HINT_PATH = "/prewarm/hint"
CLIENT_ROUTES = frozenset({("POST", HINT_PATH)})
UI_PATH, LOGIN_PATH, LOGOUT_PATH = "/prewarm/ui", "/prewarm/login", "/prewarm/logout"
# Reachable without credentials even where the guard is on: the login form and its answer, logging out, and
# the page itself (it sends a browser without a session to the form rather than answering 401).
OPEN_ROUTES = frozenset({("GET", LOGIN_PATH), ("POST", LOGIN_PATH), ("POST", LOGOUT_PATH), ("GET", UI_PATH)})


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin_token(settings: Settings) -> None:
    """Refuse to expose admin routes beyond loopback without a token."""
    if settings.admin_token is not None and not settings.admin_token.strip():
        raise ConfigError("admin_token is empty or only whitespace: set a real token or leave it unset")
    if not is_loopback(settings.listen_host) and not settings.admin_token:
        raise ConfigError(
            f"listening on {settings.listen_host} (not loopback) needs admin_token "
            "(config file or PREWARM_ADMIN_TOKEN) to protect /prewarm/* and /metrics"
        )


class Guard:
    """Who may call an admin route: the admin token (bearer header), a browser session opened with it, or,
    for the client routes, a configured API key."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.needed = not is_loopback(settings.listen_host) or bool(settings.admin_token)
        self._expected = f"Bearer {settings.admin_token or ''}".encode()
        self._sessions: dict[str, float] = {}  # session -> expiry (monotonic); a restart asks for a new login

    def token_ok(self, token: str) -> bool:
        return bool(self.settings.admin_token) and hmac.compare_digest(
            token.encode(), (self.settings.admin_token or "").encode())

    def open_session(self, max_age_s: float) -> str:
        now = time.monotonic()
        self._sessions = {s: t for s, t in self._sessions.items() if t > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + max_age_s
        return session

    def close_session(self, request: web.Request) -> None:
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def _session_ok(self, request: web.Request) -> bool:
        expiry = self._sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        return expiry is not None and expiry > time.monotonic()

    def allows(self, request: web.Request, client_route: bool = False) -> bool:
        if not self.needed:
            return True
        given = request.headers.get("Authorization", "").encode()
        if self.settings.admin_token and hmac.compare_digest(given, self._expected):
            return True
        if client_route and given[:7].lower() == b"bearer " and self.settings.user_for_api_key(
                given[7:].decode("latin-1").strip()) is not None:
            return True
        return request.method in ("GET", "HEAD") and self._session_ok(request)

    def wrap(self, handler: Handler, client_route: bool = False) -> Handler:
        if not self.needed:
            return handler

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.allows(request, client_route):
                return await handler(request)
            return web.json_response(
                {"error": "admin token required: Authorization: Bearer <admin_token>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="prewarm"'},
            )

        return guarded

    def routes(self, routes: Iterable[web.RouteDef]) -> list[web.RouteDef]:
        """Every admin route behind the guard, in one place."""
        return [web.RouteDef(r.method, r.path, r.handler if (r.method, r.path) in OPEN_ROUTES else
                             self.wrap(r.handler, (r.method, r.path) in CLIENT_ROUTES), dict(r.kwargs))
                for r in routes]

    def management(self) -> Callable[[Handler], Handler]:
        """Off loopback, Ollama's management routes need the admin token unless open_management_routes says not.

        Anyone who can reach the proxy can send a prompt; deleting or pulling models
        is another matter. On loopback they pass as before (only local users get there).
        """
        if is_loopback(self.settings.listen_host) or self.settings.open_management_routes:
            return lambda handler: handler
        return self.wrap
