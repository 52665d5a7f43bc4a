"""The fault server with OpenAI's files and batches endpoints, on 127.0.0.1.

Implements what `--llm-mode batch` uses, as https://platform.openai.com/docs/api-reference/batch
documents it: `POST /v1/files` (multipart, purpose=batch), `GET /v1/files`,
`GET /v1/files/{id}` and `/content`, `POST /v1/batches`, `GET /v1/batches` (newest first),
`GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`; and `/v1/chat/completions` as the
fault server answers it (the sync retries). Each retrieve of a batch moves it one state on:
validating -> in_progress -> completed (or `expired`, with only the first `expire_answered`
requests answered and the rest in the error file as `batch_expired`); a cancelled batch goes
cancelling -> cancelled. Every request line is answered by `FaultServer.respond`, so the
posting's `[[fault:NAME]]` marker scripts its reply (malformed, off the list, 500...): a 200
goes to the output file, anything else to the error file. An input file with a line that is
not a valid request makes the batch `failed`.

`hang_at` holds one request of a stage until `release` is set, with `reached` set when it
arrives: a test kills the client there. Stages: `list_files` (before the upload), `upload`
(file stored, reply not sent), `create` (batch created, reply not sent), `retrieve` (the first
status check), `content` (the first download).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import Counter
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tests.rerank.fault_server import FaultServer, _error

TOKENIZER = Path(__file__).resolve().parents[2] / "onet_llm/models/onet-minilm/tokenizer.json"
# A chat template's tokens around each message (ChatML: <|im_start|>role\n ... <|im_end|>\n),
# and the assistant turn opened for the reply.
TEMPLATE_TOKENS_PER_MESSAGE = 5
TEMPLATE_TOKENS_REPLY = 3


def wordpiece_counter():
    """Prompt tokens as a real tokenizer counts them (the shipped model's WordPiece, which
    counts within 1% of Qwen2.5's BPE on the dev-ads prompts), plus a chat template's."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    lock = threading.Lock()

    def count(messages: list[dict]) -> int:
        with lock:
            content = sum(
                len(tokenizer.encode(str(m.get("content") or ""), add_special_tokens=False).ids)
                for m in messages
            )
        return content + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_REPLY

    return count


class BatchServer(FaultServer):
    def __init__(
        self,
        expire: bool = False,
        expire_answered: int = 0,
        hang_at: str | None = None,
        **fault_options,
    ) -> None:
        self.expire = expire
        self.expire_answered = expire_answered
        self.hang_at = hang_at
        self.reached = threading.Event()
        self.release = threading.Event()
        self._hung = False
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.routes: Counter[str] = Counter()
        self._ids = itertools.count(1)
        super().__init__(**fault_options)

    @property
    def uploads(self) -> int:
        return self.routes["POST /files"]

    @property
    def creations(self) -> int:
        return self.routes["POST /batches"]

    @property
    def http_requests(self) -> int:
        return sum(self.routes.values())

    def hang(self, stage: str) -> None:
        """Hold this request (once) where a test wants the client killed."""
        if self.hang_at != stage or self._hung:
            return
        self._hung = True
        self.reached.set()
        self.release.wait(60)

    # -- files ------------------------------------------------------------------------------
    def upload(self, content_type: str, data: bytes) -> tuple[int, dict]:
        header = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = BytesParser(policy=default_policy).parsebytes(header + data)
        fields, content, filename = {}, b"", ""
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                filename, content = part.get_filename(), part.get_payload(decode=True)
            else:
                fields[name] = part.get_content().strip()
        if fields.get("purpose") != "batch" or not content:
            return 400, _error("purpose must be 'batch' and a file is required")
        file_id = f"file-{next(self._ids)}"
        self.contents[file_id] = content
        self.files[file_id] = self.file_object(file_id, filename, len(content), "batch")
        return 200, self.files[file_id]

    def file_object(self, file_id: str, filename: str, size: int, purpose: str) -> dict:
        return {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def output_file(self, lines: list[dict], kind: str) -> str | None:
        if not lines:
            return None
        file_id = f"file-{next(self._ids)}"
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        self.contents[file_id] = data
        self.files[file_id] = self.file_object(file_id, f"{kind}.jsonl", len(data), kind)
        return file_id

    # -- batches ----------------------------------------------------------------------------
    def create(self, body: dict) -> tuple[int, dict]:
        if body.get("input_file_id") not in self.contents:
            return 400, _error("input_file_id not found")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != (
            "24h"
        ):
            return 400, _error("endpoint must be /v1/chat/completions and completion_window 24h")
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        lines, errors = self.input_lines(self.contents[body["input_file_id"]])
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": body["input_file_id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "expires_at": int(time.time()) + 86400,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "_lines": lines,
        }
        return 200, self.public(self.batches[batch_id])

    def input_lines(self, content: bytes) -> tuple[list[dict], list[dict]]:
        """The request lines, and what is wrong with the file (each error names its line)."""
        lines, errors, seen = [], [], set()
        for number, text in enumerate(content.decode().splitlines(), start=1):
            try:
                line = json.loads(text)
                assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
                assert isinstance(line["body"]["messages"], list)
                assert line["custom_id"] not in seen
            except (ValueError, KeyError, TypeError, AssertionError):
                errors.append({"code": "invalid_request", "message": "bad line", "line": number})
                continue
            seen.add(line["custom_id"])
            lines.append(line)
        return lines, errors

    def advance(self, batch: dict) -> None:
        """One state on: validating -> in_progress -> completed | expired | failed."""
        status = batch["status"]
        if status == "validating":
            batch["status"] = "failed" if batch["errors"] else "in_progress"
        elif status == "in_progress":
            self.finish(batch, "expired" if self.expire else "completed")
        elif status == "cancelling":
            self.finish(batch, "cancelled")

    def finish(self, batch: dict, status: str) -> None:
        """Answer the lines (all, or the first `expire_answered` of an expired batch)."""
        answered = batch["_lines"]
        if status == "expired":
            answered = answered[: self.expire_answered]
        elif status == "cancelled":
            answered = []
        output, failed = [], []
        for line in answered:
            code, _, payload = self.respond(line["body"])
            if not isinstance(payload, dict):
                payload = {"error": {"message": str(payload)[:200]}}
            entry = {
                "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                "custom_id": line["custom_id"],
                "response": {"status_code": code, "request_id": uuid.uuid4().hex, "body": payload},
                "error": None,
            }
            (output if code == 200 else failed).append(entry)
        if status == "expired":
            failed += [
                {
                    "id": f"batch_req_{uuid.uuid4().hex[:8]}",
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {"code": "batch_expired", "message": "This request expired"},
                }
                for line in batch["_lines"][self.expire_answered :]
            ]
        batch["status"] = status
        batch["output_file_id"] = self.output_file(output, "batch_output")
        batch["error_file_id"] = self.output_file(failed, "batch_error")
        batch["request_counts"] = {
            "total": len(batch["_lines"]),
            "completed": len(output),
            "failed": len(failed),
        }

    @staticmethod
    def public(batch: dict) -> dict:
        return {key: value for key, value in batch.items() if not key.startswith("_")}

    # -- routing ----------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict, headers, data: bytes):
        """Status and JSON body (or raw bytes) for one request to the files/batches API."""
        parts = path.removeprefix("/v1").strip("/").split("/")
        with self._lock:
            self.routes[f"{method} /{parts[0]}{'/' + parts[2] if len(parts) > 2 else ''}"] += 1
        if method == "POST" and parts == ["files"]:
            status, body = self.upload(headers.get("Content-Type", ""), data)
            self.hang("upload")
            return status, body
        if method == "GET" and parts == ["files"]:
            self.hang("list_files")
            purpose = query.get("purpose", [None])[0]
            files = [f for f in self.files.values() if purpose in (None, f["purpose"])]
            return 200, {"object": "list", "data": files, "has_more": False}
        if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            self.hang("content")
            if parts[1] not in self.contents:
                return 404, _error("no such file")
            return 200, self.contents[parts[1]]
        if method == "POST" and parts == ["batches"]:
            status, body = self.create(json.loads(data or b"{}"))
            self.hang("create")
            return status, body
        if method == "GET" and parts == ["batches"]:
            listed = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
            return 200, {
                "object": "list",
                "data": [self.public(b) for b in listed],
                "has_more": False,
            }
        if len(parts) >= 2 and parts[0] == "batches" and parts[1] in self.batches:
            batch = self.batches[parts[1]]
            if method == "POST" and parts[2:] == ["cancel"]:
                if batch["status"] in ("validating", "in_progress"):
                    batch["status"] = "cancelling"
                return 200, self.public(batch)
            if method == "GET" and len(parts) == 2:
                self.hang("retrieve")
                self.advance(batch)
                return 200, self.public(batch)
        return 404, _error(f"no route {method} {path}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        chat = super()._handler()

        class Handler(chat):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                url = urlparse(self.path)
                self._reply(*server.route("GET", url.path, parse_qs(url.query), self.headers, b""))

            def do_POST(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                if url.path.endswith("/chat/completions"):
                    with server._lock:
                        server.routes["POST /chat/completions"] += 1
                    super().do_POST()
                    return
                length = int(self.headers.get("Content-Length", 0))
                data = self.rfile.read(length)
                self._reply(*server.route("POST", url.path, {}, self.headers, data))

            def _reply(self, status: int, payload: dict | bytes) -> None:
                if isinstance(payload, bytes):
                    try:
                        self.send_response(status)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                self._send(status, {}, payload)

        return Handler
