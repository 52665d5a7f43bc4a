"""The review page: a small Starlette app with server-rendered Jinja2 HTML over `queries.py`.

Server-rendered so that every value goes through Jinja2's autoescaping once, on the server:
posting text, rationales and notes are untrusted and must render as text. The page works
without JavaScript; `static/review.js` only adds the occupation search box and remembers the
reviewer's name. A Content-Security-Policy allows scripts from this server only, so even a
missed escape could not run an inline script. Requests must name a loopback host (DNS
rebinding) and decisions carry a per-server token (cross-site form posts).

The store is opened per request and closed after it, so a `label` run can use the store
between page loads (DuckDB allows one writing process per file).
"""

from __future__ import annotations

import getpass
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import uvicorn
from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onet_llm import __version__
from onet_llm.errors import InputError, OnetLLMError, StoreError
from onet_llm.review.decisions import decisions_frame, record_decision
from onet_llm.review.queries import (
    VIEWS,
    ReviewFilter,
    filter_counts,
    list_runs,
    resolve_run,
    review_rows,
    run_occupations,
)
from onet_llm.store import Store
from onet_llm.taxonomy import SOC_MAJOR_GROUPS, Taxonomy, load_taxonomy

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
T = TypeVar("T")


@dataclass
class ReviewContext:
    """What every request needs: where the store is, the taxonomy, and the defaults."""

    store_path: Path
    taxonomy: Taxonomy
    default_run: str | None = None
    reviewer: str = ""
    form_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def with_store(self, work: Callable[[Store], T]) -> T:
        """Open the store, run `work`, close it: one request at a time holds the file."""
        with self.lock, Store(self.store_path) as store:
            return work(store)


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("onet_llm.review", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["score"] = lambda value: "" if value is None else f"{float(value):.3f}"
    environment.filters["major_group"] = lambda code: (code or "")[:2]
    return environment


TEMPLATES = _environment()


def _render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(name).render(version=__version__, **context)
    return HTMLResponse(html, status_code=status_code)


def _error_page(error: OnetLLMError, status_code: int) -> HTMLResponse:
    return _render("review_error.html", status_code=status_code, message=str(error))


def _safe_back(target: str) -> str:
    """Only same-page relative URLs are followed after a decision (no open redirect)."""
    if target.startswith("/?") or target == "/":
        return target
    return "/"


def _context(request: Request) -> ReviewContext:
    return request.app.state.review


async def page(request: Request) -> Response:
    """The page: one run's rows in the chosen view, filter and order."""
    context = _context(request)
    query = dict(request.query_params)
    review_filter = ReviewFilter.from_query(query)

    def load(store: Store) -> dict[str, Any]:
        run = resolve_run(store, query.get("run") or context.default_run)
        counts = filter_counts(store, run.run_id, review_filter)
        rows, matching = review_rows(store, run.run_id, review_filter, counts)
        return {
            "run": run,
            "runs": list_runs(store),
            "counts": counts,
            "rows": rows,
            "matching": matching,
            "occupations": run_occupations(store, run.run_id),
        }

    try:
        data = await run_in_threadpool(context.with_store, load)
    except StoreError as error:
        return _error_page(error, 503)
    run_id = data["run"].run_id

    def link(**changes: Any) -> str:
        return "/?" + urlencode({"run": run_id, **review_filter.query(**changes)})

    pages = max(1, -(-data["matching"] // review_filter.page_size))
    return _render(
        "review.html",
        **data,
        filter=review_filter,
        views=VIEWS,
        major_groups=SOC_MAJOR_GROUPS,
        link=link,
        here=link(),
        pages=pages,
        reviewer=context.reviewer,
        form_token=context.form_token,
    )


async def decide(request: Request) -> Response:
    """Record an accept or override, then go back to the same view at the same row."""
    context = _context(request)
    form = await request.form()
    values = {key: str(value) for key, value in form.items()}
    if not secrets.compare_digest(values.get("token", ""), context.form_token):
        return _error_page(InputError("this form is stale: reload the page"), 403)
    try:
        row_number = int(values.get("row_number", ""))
    except ValueError:
        return _error_page(InputError("a decision needs a row number"), 400)

    def save(store: Store) -> None:
        run = resolve_run(store, values.get("run"))
        record_decision(
            store,
            context.taxonomy,
            run.run_id,
            row_number,
            values.get("action", ""),  # type: ignore[arg-type]
            reviewer=values.get("reviewer", ""),
            onet_code=values.get("onet_code"),
            note=values.get("note", ""),
        )

    try:
        await run_in_threadpool(context.with_store, save)
    except StoreError as error:
        return _error_page(error, 503)
    except InputError as error:
        return _error_page(error, 400)
    back = _safe_back(values.get("back", "/"))
    return RedirectResponse(f"{back}#row-{row_number}", status_code=303)


async def occupations(request: Request) -> Response:
    """Occupation search for the override box."""
    hits = _context(request).taxonomy.search_titles(
        request.query_params.get("q", "")[:100], limit=25
    )
    return JSONResponse([{"onet_code": hit.code, "onet_title": hit.title} for hit in hits])


async def export(request: Request) -> Response:
    """The decisions as a corrections CSV download."""
    run_id = request.query_params.get("run") or None
    only_overrides = request.query_params.get("only") == "overrides"

    def load(store: Store) -> str:
        if run_id:
            resolve_run(store, run_id)
        return decisions_frame(store, run_id, only_overrides).to_csv(index=False)

    try:
        csv_text = await run_in_threadpool(_context(request).with_store, load)
    except StoreError as error:
        return _error_page(error, 404)
    name = f"corrections-{run_id}.csv" if run_id else "corrections.csv"
    return Response(
        csv_text,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def create_app(context: ReviewContext, extra_hosts: tuple[str, ...] = ()) -> Starlette:
    """The review app. Only requests naming a loopback host (or `extra_hosts`, for a server
    deliberately bound elsewhere) are answered."""
    static = StaticFiles(packages=[("onet_llm.review", "static")])
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/decide", decide, methods=["POST"]),
            Route("/api/occupations", occupations),
            Route("/export.csv", export),
            Mount("/static", static, name="static"),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, *extra_hosts]),
            Middleware(SecurityHeaders),
        ],
    )
    app.state.review = context
    return app


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


def open_review(
    store_path: Path, run_id: str | None = None, reviewer: str | None = None
) -> ReviewContext:
    """Check the store and run before serving, so a wrong path fails with one line."""
    if not store_path.is_file():
        raise StoreError(f"{store_path}: no such store (pass --store, or label something first)")
    context = ReviewContext(
        store_path=store_path,
        taxonomy=load_taxonomy(),
        reviewer=reviewer if reviewer is not None else _login_name(),
    )
    run = context.with_store(lambda store: resolve_run(store, run_id))
    context.default_run = run.run_id
    return context


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """The listening socket; port 0 picks a free one. A taken port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); pass another --port"
        ) from None
    sock.listen(128)
    return sock


class ReviewServer:
    """uvicorn serving the review app on an already bound socket, in this thread or another."""

    def __init__(self, context: ReviewContext, sock: socket.socket) -> None:
        self.context = context
        self.socket = sock
        host = sock.getsockname()[0]
        # Bound beyond loopback on purpose (--host): requests name this machine's own address.
        extra_hosts = () if host in ("127.0.0.1", "::1") else ("*",)
        config = uvicorn.Config(
            create_app(context, extra_hosts), log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> ReviewServer:
        """Serve in a background thread (tests, notebooks); returns once it accepts requests."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise StoreError("the review server stopped while starting")
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
        self.socket.close()
