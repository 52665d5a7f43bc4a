"""A deadline for a whole HTTP request, not only for each read.

httpx's timeout bounds each network operation: a server that trickles a few bytes a second
keeps a request open far past `ONET_LLM_TIMEOUT`. This transport checks a monotonic deadline
while the response body streams in and raises httpx's own `ReadTimeout` when it passes, which
the openai client reports as a time-out (and the transport policy retries like any other).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2 as httpx
import openai


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, deadline: float, request: httpx.Request):
        self.stream, self.deadline, self.request = stream, deadline, request

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            if time.monotonic() > self.deadline:
                raise httpx.ReadTimeout(
                    "the whole request ran past its deadline", request=self.request
                )
            yield chunk

    def close(self) -> None:
        self.stream.close()


class DeadlineTransport(httpx.BaseTransport):
    """Wraps a transport so that each request, body included, ends within `seconds`."""

    def __init__(self, seconds: float, inner: httpx.BaseTransport | None = None) -> None:
        self.seconds = seconds
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.seconds
        response = self.inner.handle_request(request)
        if time.monotonic() > deadline:
            response.close()
            raise httpx.ReadTimeout("the whole request ran past its deadline", request=request)
        response.stream = _DeadlineStream(response.stream, deadline, request)  # type: ignore[arg-type]
        return response

    def close(self) -> None:
        self.inner.close()


def deadline_http_client(seconds: float) -> httpx.Client:
    """The openai client's default http client, with the whole-request deadline."""
    return openai.DefaultHttpxClient(transport=DeadlineTransport(seconds), timeout=seconds)
