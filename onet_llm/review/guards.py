"""What keeps the review page to this machine's own browser: the Host check (DNS rebinding), the
Origin check on every POST (a page on another site cannot post a decision, even with the form
token leaked), and the security headers (scripts from this server only, no framing).

The page has no login: anyone who can reach it can read the postings and record decisions,
which is why it binds loopback by default.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on form
    # POSTs, which the Origin check must refuse; other sites still get no referrer.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def host_name(host_header: str) -> str:
    """The host of a Host header without its port: `[::1]:8765` -> `::1`, `a:80` -> `a`."""
    host_header = host_header.strip().lower()
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class HostAndOrigin:
    """400 unless the Host header names an allowed host (loopback, or any when bound elsewhere
    on purpose); 403 for a POST whose Origin is not this very server."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.allowed = {host.strip("[]").lower() for host in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if "*" not in self.allowed and host_name(host) not in self.allowed:
            await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
            return
        origin = headers.get("origin")
        if scope["method"] == "POST" and origin is not None and origin != f"http://{host}":
            response = PlainTextResponse("cross-origin request refused", status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
