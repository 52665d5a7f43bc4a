"""The review page: a small Starlette app with server-rendered Jinja2 HTML over `review.*`.

Server-rendered so that every value goes through Jinja2's autoescaping once, on the server:
posting text, rationales, prompts and notes are untrusted and must render as text. The page
works without JavaScript (every decision is a form POST, a bulk accept asks on a confirmation
page); `static/review.js` adds keyboard shortcuts, saves decisions with fetch (the server sends
back the row re-rendered by the same template) and searches occupations. A Content-Security-
Policy allows scripts from this server only. Requests must name a loopback host (DNS
rebinding), POSTs must come from this origin, and carry a per-server token (cross-site forms):
see `review.guards`. There is no login: keep the server on loopback.

The store is opened per request and closed after it, so a `label` run can use the store
between page loads (DuckDB allows one writing process per file).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from onet_llm import __version__
from onet_llm.errors import InputError, OnetLLMError, StoreError
from onet_llm.review.decisions import bulk_accept, bulk_accept_rows, record_decision
from onet_llm.review.export import decisions_csv
from onet_llm.review.guards import LOOPBACK_HOSTS, HostAndOrigin, SecurityHeaders
from onet_llm.review.queries import (
    VIEWS,
    ReviewFilter,
    filter_counts,
    list_runs,
    load_rows,
    resolve_run,
    review_rows,
    run_occupations,
)
from onet_llm.review.queues import agreement_summary
from onet_llm.review.sampling import accuracy_estimates
from onet_llm.store import Store
from onet_llm.taxonomy import SOC_MAJOR_GROUPS, Taxonomy

T = TypeVar("T")
VIEW_HELP = {
    "all": "every row of the run",
    "disagree": "the LLM's top-1 is not the embedding's top-1",
    "low_confidence": "LLM confidence below the threshold, or embedding margin below the "
    "threshold, or LLM ≠ embedding",
    "problems": "LLM fallbacks and rows that failed",
    "unreviewed": "no decision of yours yet",
    "reviewed": "decided by you",
    "flagged": "your latest decision is unsure or flag",
    "reviewers_differ": "reviewers gave different labels and nobody adjudicated yet",
}
SORTS = {
    "row": "input order",
    "queue": "my queue order",
    "confidence_asc": "confidence, lowest first",
    "confidence_desc": "confidence, highest first",
    "margin_asc": "embedding margin, smallest first",
}


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

    def review_filter(self, query: dict[str, str]) -> ReviewFilter:
        review_filter = ReviewFilter.from_query(query)
        if not review_filter.reviewer:
            review_filter = replace(review_filter, reviewer=self.reviewer)
        return review_filter


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("onet_llm.review", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["score"] = lambda value: "" if value is None else f"{float(value):.3f}"
    return environment


TEMPLATES = _environment()


def _render_text(name: str, **context: Any) -> str:
    return TEMPLATES.get_template(name).render(version=__version__, **context)


def _render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_render_text(name, **context), status_code=status_code)


def _error(error: OnetLLMError, status_code: int, wants_json: bool) -> Response:
    if wants_json:
        return JSONResponse({"error": str(error)}, status_code=status_code)
    return _render("review_error.html", status_code=status_code, message=str(error))


def _safe_back(target: str) -> str:
    """Only same-page relative URLs are followed after a decision (no open redirect)."""
    if target.startswith("/?") or target == "/":
        return target
    return "/"


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _link(run_id: str, review_filter: ReviewFilter) -> Callable[..., str]:
    def link(**changes: Any) -> str:
        return "/?" + urlencode({"run": run_id, **review_filter.query(**changes)})

    return link


def _page_data(store: Store, context: ReviewContext, query: dict[str, str]) -> dict[str, Any]:
    review_filter = context.review_filter(query)
    run = resolve_run(store, query.get("run") or context.default_run)
    counts = filter_counts(store, run.run_id, review_filter)
    rows, matching = review_rows(store, run.run_id, review_filter, counts)
    return {
        "run": run,
        "runs": list_runs(store),
        "filter": review_filter,
        "counts": counts,
        "rows": rows,
        "matching": matching,
        "occupations": run_occupations(store, run.run_id),
        "agreement": agreement_summary(store, run.run_id),
        "estimates": accuracy_estimates(store, run.run_id),
        "bulk_page": sum(1 for row in rows if row.decision is None and row.current_code),
        "bulk_filter": counts["bulk"] if review_filter.reviewer else 0,
    }


def _context(request: Request) -> ReviewContext:
    return request.app.state.review


async def page(request: Request) -> Response:
    """The page: one run's rows in the chosen view, filter and order."""
    context = _context(request)
    query = dict(request.query_params)
    try:
        data = await run_in_threadpool(context.with_store, lambda s: _page_data(s, context, query))
    except StoreError as error:
        return _error(error, 503, False)
    link = _link(data["run"].run_id, data["filter"])
    pages = max(1, -(-data["matching"] // data["filter"].page_size))
    return _render(
        "review.html",
        **data,
        views=VIEWS,
        view_help=VIEW_HELP,
        sorts=SORTS,
        major_groups=SOC_MAJOR_GROUPS,
        link=link,
        here=link(),
        pages=pages,
        form_token=context.form_token,
        open_rows=(),
    )


async def decide(request: Request) -> Response:
    """One decision on one row: for fetch, JSON (the row re-rendered and the counts); else a
    redirect back."""
    context = _context(request)
    wants_json = _wants_json(request)
    values = {key: str(value) for key, value in (await request.form()).items()}
    if not secrets.compare_digest(values.get("token", ""), context.form_token):
        return _error(InputError("this form is stale: reload the page"), 403, wants_json)
    try:
        row_number = int(values.get("row_number", ""))
    except ValueError:
        return _error(InputError("a decision needs a row number"), 400, wants_json)
    back = _safe_back(values.get("back", "/"))
    query = dict(parse_qsl(urlsplit(back).query))

    def save(store: Store) -> dict[str, Any]:
        run = resolve_run(store, values.get("run"))
        decision = record_decision(
            store,
            context.taxonomy,
            run.run_id,
            row_number,
            values.get("action", ""),  # type: ignore[arg-type]
            reviewer=values.get("reviewer", ""),
            onet_code=values.get("onet_code"),
            note=values.get("note", ""),
            role=values.get("role", "review"),  # type: ignore[arg-type]
        )
        if not wants_json:
            return {}
        review_filter = replace(context.review_filter(query), reviewer=decision.reviewer)
        rows = load_rows(store, run.run_id, [row_number], decision.reviewer)
        html = _render_text(
            "review_row.html",
            row=rows[0],
            run=run,
            filter=review_filter,
            here=back,
            form_token=context.form_token,
            open_rows=(row_number,),
        )
        counts = filter_counts(store, run.run_id, review_filter)
        return {"action": decision.action, "html": html, "counts": counts}

    try:
        answer = await run_in_threadpool(context.with_store, save)
    except StoreError as error:
        return _error(error, 503, wants_json)
    except InputError as error:
        return _error(error, 400, wants_json)
    if wants_json:
        return JSONResponse(answer)
    return RedirectResponse(f"{back}#row-{row_number}", status_code=303)


async def bulk(request: Request) -> Response:
    """Bulk accept: unconfirmed, the count it would accept (or a confirmation page); confirmed,
    the decisions."""
    context = _context(request)
    wants_json = _wants_json(request)
    values = {key: str(value) for key, value in (await request.form()).items()}
    if not secrets.compare_digest(values.get("token", ""), context.form_token):
        return _error(InputError("this form is stale: reload the page"), 403, wants_json)
    back = _safe_back(values.get("filter", "/"))
    review_filter = context.review_filter(dict(parse_qsl(urlsplit(back).query)))
    scope = values.get("scope", "page")
    try:
        rows = [int(n) for n in values.get("rows", "").split(",") if n] if scope == "page" else None
        expected = int(values["expected"]) if values.get("expected") else None
    except ValueError:
        return _error(InputError("a bulk accept needs row numbers and a count"), 400, wants_json)

    def work(store: Store) -> tuple[bool, int]:
        """(written, rows): unconfirmed, only count the rows it would accept."""
        run = resolve_run(store, values.get("run"))
        if values.get("confirmed") != "1":
            return False, len(bulk_accept_rows(store, run.run_id, review_filter, rows))
        return True, bulk_accept(store, context.taxonomy, run.run_id, review_filter, rows, expected)

    try:
        written, outcome = await run_in_threadpool(context.with_store, work)
    except StoreError as error:
        return _error(error, 503, wants_json)
    except InputError as error:
        return _error(error, 400, wants_json)
    if not written and wants_json:
        return JSONResponse({"count": outcome})
    if not written:
        return _render(
            "review_confirm.html",
            count=outcome,
            reviewer=review_filter.reviewer,
            scope=scope,
            rows=values.get("rows", ""),
            run_id=values.get("run", ""),
            back=back,
            form_token=context.form_token,
        )
    if wants_json:
        return JSONResponse({"accepted": outcome})
    return RedirectResponse(back, status_code=303)


async def occupations(request: Request) -> Response:
    """The occupation search of the override box, over the whole taxonomy."""
    context = _context(request)
    hits = context.taxonomy.search_titles(request.query_params.get("q", "")[:100], limit=25)
    return JSONResponse([{"onet_code": hit.code, "onet_title": hit.title} for hit in hits])


async def export(request: Request) -> Response:
    """The reviewed labels as a CSV download, formula-like cells neutralised."""
    context = _context(request)
    run_id = request.query_params.get("run") or None
    only_overrides = request.query_params.get("only") == "overrides"

    def load(store: Store) -> str:
        if run_id:
            resolve_run(store, run_id)
        return decisions_csv(store, run_id, only_overrides)

    try:
        csv_text = await run_in_threadpool(context.with_store, load)
    except StoreError as error:
        return _error(error, 404, False)
    name = f"corrections-{run_id}.csv" if run_id else "corrections.csv"
    return Response(
        csv_text,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def create_app(
    context: ReviewContext, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
) -> Starlette:
    """The review app. Only requests naming one of `allowed_hosts` are answered."""
    static = StaticFiles(packages=[("onet_llm.review", "static")])
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/decide", decide, methods=["POST"]),
            Route("/bulk", bulk, methods=["POST"]),
            Route("/api/occupations", occupations),
            Route("/export.csv", export),
            Mount("/static", static, name="static"),
        ],
        middleware=[
            Middleware(HostAndOrigin, allowed_hosts=allowed_hosts),
            Middleware(SecurityHeaders),
        ],
    )
    app.state.review = context
    return app
