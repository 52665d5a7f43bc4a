"""Serving the review app: checking the store before the first request, binding the socket
(IPv4 or IPv6; a taken port is one line), and uvicorn in this thread or another."""

from __future__ import annotations

import getpass
import socket
import threading
from pathlib import Path

import uvicorn

from onet_llm.errors import InputError, StoreError
from onet_llm.review.guards import LOOPBACK_HOSTS
from onet_llm.review.queries import resolve_run
from onet_llm.review.web import ReviewContext, create_app
from onet_llm.taxonomy import load_taxonomy

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


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


def plain_host(host: str) -> str:
    """`[::1]` -> `::1`: the bracketed form of a URL is accepted for --host too."""
    host = host.strip()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """The listening socket; port 0 picks a free one. A taken port is a one-line error."""
    host = plain_host(host)
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
        allowed = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else ("*",)
        config = uvicorn.Config(create_app(context, allowed), log_level="warning", access_log=False)
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
