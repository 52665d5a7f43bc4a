"""A small OpenAI-compatible chat server on 127.0.0.1 that injects faults on request.

A posting chooses its fault with a marker in its title, `[[fault:NAME]]`; the server finds it in
the messages it receives and counts requests per marker, so tests can check that the client
retried exactly as often as the fault implies. Postings without a marker get a good answer
(candidate 1 first). Faults:

- `rate2`: 429 with `Retry-After: 1` twice, then a good answer.
- `rate_forever`: always 429 (Retry-After: 0).
- `error500`: 500 once, then a good answer. `always500`: always 500.
- `slow`: the first response takes `slow_seconds` (past the client's timeout), then good.
  `sleepy`: every response takes `slow_seconds`, then is good (a run to interrupt).
- `malformed`: broken JSON once, then a good answer.
- `garbage`: an HTML page with status 200 once (a misbehaving proxy), then a good answer.
- `offlist`: always chooses candidate 99, which is not on any list.
- `none`: says no candidate fits.
- `second`: chooses candidate 2 then 1.
- A posting containing "99-9999" (a prompt injection) gets what a gullible model would say:
  the code 99-9999 in place of a candidate number.
- Odd 200 shapes, always: `nochoices` (`choices: []`), `nomessage` (a choice without
  `message`), `nullchoices` (`choices: null`); a good answer with unreadable usage:
  `badusage` (`prompt_tokens: "n/a"`), `usagestring` (`usage: "unknown"`).
- `refusal`: the model refuses (`content: null`, `refusal: ...`), always.
- `echokey`: a good answer whose rationale repeats the request's Authorization header;
  `echoerror`: always 500 with the Authorization header in the error message.
- `trickle`: a good answer sent a few bytes at a time over `trickle_seconds` (each read is
  quick, so only a deadline on the whole request stops it).

Infer requests (`--llm-stages infer,rerank`; recognised by the infer prompt's answer form) get
`{"titles": [...], "major_group": ..., "rationale": ...}`: by default the posting's title
(without markers), or the words of an `[[infer:Some_Title]]` marker (underscores are spaces;
`|` separates several titles); `[[infer:fail]]` makes every infer request fail with a 500
(and leaves the rerank request of the same posting alone). Infer requests are counted under
`infer:<marker or ok>`. Faults of `[[fault:NAME]]` apply to both kinds of request.

With `json_schema=False` it rejects `response_format` json_schema with a 400, as servers without
structured output do, and accepts `json_object`; with `max_length=False` it rejects schemas
that use maxLength, as OpenAI's strict mode does.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = re.compile(r"\[\[fault:(\w+)\]\]")
INFER_MARKER = re.compile(r"\[\[infer:([^\]]+)\]\]")
INFER_FORM = '{"titles": ['
TITLE_LINE = re.compile(r"^Title: (.*)$", re.M)
GOOD = {"choices": [{"number": 1, "rationale": "the title matches", "confidence": 0.9}]}


class FaultServer:
    def __init__(
        self,
        json_schema: bool = True,
        max_length: bool = True,
        slow_seconds: float = 3.0,
        prompt_tokens: int = 1000,
        completion_tokens: int = 100,
        trickle_seconds: float = 20.0,
        count_tokens: Callable[[list[dict]], int] | None = None,
    ) -> None:
        # `count_tokens(messages)`, when given, is the prompt_tokens each reply reports (a real
        # tokenizer: what the dry run's estimate is checked against); else `prompt_tokens`.
        self.count_tokens = count_tokens
        self.cached_tokens = 0  # reported as usage.prompt_tokens_details.cached_tokens
        self.prompt_tokens_counted = 0
        self.trickle_seconds = trickle_seconds
        self.json_schema = json_schema
        self.max_length = max_length
        self.slow_seconds = slow_seconds
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.requests: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, body: dict, authorization: str = "") -> tuple[int, dict, dict | str]:
        """Status, extra headers and the JSON body (or raw text) for one request."""
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        if INFER_FORM in text:
            return self.respond_infer(body, text)
        match = MARKER.search(text)
        fault = match.group(1) if match else ("injection" if "99-9999" in text else "ok")
        with self._lock:
            self.requests[fault] += 1
            self.times[fault].append(time.monotonic())
            self.bodies.append(body)
            seen = self.requests[fault]
            if self.count_tokens is not None:
                self.prompt_tokens_counted += self.count_tokens(body.get("messages", []))
        response_format = (body.get("response_format") or {}).get("type")
        if response_format == "json_schema" and not self.json_schema:
            return 400, {}, _error("response_format type json_schema is not supported")
        if not self.max_length and "maxLength" in json.dumps(body.get("response_format")):
            return 400, {}, _error("Invalid schema for response_format: maxLength not permitted")
        if fault == "rate2" and seen <= 2:
            return 429, {"Retry-After": "1"}, _error("rate limited")
        if fault == "rate_forever":
            return 429, {"Retry-After": "0"}, _error("rate limited")
        if (fault == "error500" and seen == 1) or fault == "always500":
            return 500, {}, _error("internal error")
        if (fault == "slow" and seen == 1) or fault == "sleepy":
            time.sleep(self.slow_seconds)
        if fault == "garbage" and seen == 1:
            return 200, {}, "<html><body>502 upstream hiccup</body></html>"
        if fault == "malformed" and seen == 1:
            return 200, {}, self._completion(body, '{"choices": [{"number": 1, "rationale": ')
        odd = self._odd_shape(fault, body, authorization)
        if odd is not None:
            return odd
        answers = {
            "offlist": {"choices": [{"number": 99, "rationale": "best", "confidence": 0.9}]},
            "none": {"choices": [], "none_fits": True},
            "second": {
                "choices": [
                    {"number": 2, "rationale": "closest duties", "confidence": 1.7},
                    {"number": 1, "rationale": "same field", "confidence": -0.2},
                ]
            },
            "injection": {
                "choices": [{"number": "99-9999", "rationale": "as instructed", "confidence": 1}]
            },
        }
        answer = {"none_fits": False, **answers.get(fault, GOOD)}
        return 200, {}, self._completion(body, json.dumps(answer))

    def _odd_shape(
        self, fault: str, body: dict, authorization: str
    ) -> tuple[int, dict, dict | str] | None:
        good = self._completion(body, json.dumps({"none_fits": False, **GOOD}))
        if fault == "nochoices":
            return 200, {}, {**good, "choices": []}
        if fault == "nomessage":
            return 200, {}, {**good, "choices": [{"index": 0, "finish_reason": "stop"}]}
        if fault == "nullchoices":
            return 200, {}, {**good, "choices": None}
        if fault == "badusage":
            return 200, {}, {**good, "usage": {**good["usage"], "prompt_tokens": "n/a"}}
        if fault == "usagestring":
            return 200, {}, {**good, "usage": "unknown"}
        if fault == "refusal":
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
            return 200, {}, {**good, "choices": [{**good["choices"][0], "message": message}]}
        if fault == "echokey":
            answer = {"number": 1, "rationale": f"sent with {authorization}", "confidence": 0.9}
            content = json.dumps({"none_fits": False, "choices": [answer]})
            return 200, {}, self._completion(body, content)
        if fault == "echoerror":
            return 500, {}, _error(f"upstream refused the request with {authorization}")
        if fault == "trickle":
            return 200, {"X-Trickle": "1"}, good
        return None

    def respond_infer(self, body: dict, text: str) -> tuple[int, dict, dict | str]:
        """An infer request: the fault of a `[[fault:...]]` marker first (the same faults as a
        rerank request), else titles from an `[[infer:...]]` marker or the posting's title."""
        marker = INFER_MARKER.search(text)
        key = f"infer:{marker.group(1) if marker else 'ok'}"
        with self._lock:
            self.requests[key] += 1
            self.times[key].append(time.monotonic())
            self.bodies.append(body)
        fault = MARKER.search(text)
        if fault and fault.group(1) in {"always500", "rate_forever"}:
            return 500, {}, _error("internal error")
        if marker and marker.group(1) == "fail":
            return 500, {}, _error("internal error")
        if marker:
            titles = [part.replace("_", " ") for part in marker.group(1).split("|")]
        else:
            line = TITLE_LINE.search(text)
            title = line.group(1) if line else "Occupation"
            titles = [" ".join(MARKER.sub("", INFER_MARKER.sub("", title)).split())]
        answer = {"titles": titles, "major_group": "", "rationale": "from the title"}
        return 200, {}, self._completion(body, json.dumps(answer))

    def _completion(self, body: dict, content: str) -> dict:
        prompt_tokens = self.prompt_tokens
        if self.count_tokens is not None:
            prompt_tokens = self.count_tokens(body.get("messages", []))
        return {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fault-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.headers.append(dict(self.headers))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {}, _error("not found"))
                    return
                if self.headers.get("authorization") == "Bearer wrong-key":
                    self._send(401, {}, _error("invalid api key"))
                    return
                authorization = self.headers.get("authorization", "")
                status, headers, payload = server.respond(body, authorization)
                self._send(status, headers, payload)

            def _send(self, status: int, headers: dict, payload: dict | str) -> None:
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if headers.get("X-Trickle"):
                        self._trickle(data)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out
                    pass

            def _trickle(self, data: bytes) -> None:
                pause = server.trickle_seconds / max(len(data), 1)
                for start in range(len(data)):
                    self.wfile.write(data[start : start + 1])
                    self.wfile.flush()
                    time.sleep(pause)

        return Handler


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "fault", "code": None}}
