"""What the model saw and said, for the row's LLM panel: the messages exactly as sent (the
posting and its numbered candidates; retries show the model's invalid answer and the
correction), the parameters, the raw and the parsed answer, tokens, cost, latency, attempts.

The store's `calls.request` holds messages and parameters only, never a key or a header; the
panel still drops any parameter whose name looks secret and blanks key- or token-shaped text,
in case a provider echoed one back.
"""

from __future__ import annotations

import json
import re
from typing import Any

from onet_llm.store import Store

SECRET_NAME = re.compile(r"key|token|secret|password|authorization|header", re.IGNORECASE)
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")
FACT_COLUMNS = [
    "model",
    "prompt_version",
    "status",
    "error",
    "attempts",
    "validation_retries",
    "transport_retries",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "latency_s",
    "created_at",
]
READ_COLUMNS = [*FACT_COLUMNS, "request", "response_parsed", "response_raw"]


def redact(text: str) -> str:
    """Blank out API-key and bearer-token shaped strings before anything reaches the page."""
    return SECRET_VALUE.sub("(redacted)", text)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def format_fact(name: str, value: Any) -> str:
    """One call fact as an auditor reads it: seconds to 2 decimals, dollars to 6."""
    if name == "latency_s":
        return f"{float(value):.2f} s"
    if name == "cost_usd":
        return f"${float(value):.6f}"
    if name in ("attempts", "validation_retries", "transport_retries", "tokens_in", "tokens_out"):
        return f"{int(value):,}"
    if name == "created_at" and hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return redact(str(value))


def _request(raw: Any) -> tuple[list[dict[str, str]], dict[str, str]]:
    try:
        request = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return [], {}
    if not isinstance(request, dict):
        return [], {}
    messages = [
        {"role": str(m.get("role", "")), "content": redact(str(m.get("content", "")))}
        for m in request.get("messages") or []
        if isinstance(m, dict)
    ]
    parameters = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
    if request.get("structured_output"):
        parameters = {**parameters, "structured_output": request["structured_output"]}
    shown = {
        str(name): redact(json.dumps(value) if not isinstance(value, str) else value)
        for name, value in parameters.items()
        if not SECRET_NAME.search(str(name))
    }
    return messages, shown


def _parsed(raw: Any) -> str:
    if _missing(raw):
        return ""
    try:
        return redact(json.dumps(json.loads(raw), indent=2, ensure_ascii=False))
    except (TypeError, json.JSONDecodeError):
        return redact(str(raw))


def call_panel(store: Store, call_keys: list[str]) -> dict[str, dict[str, Any]]:
    """{call_key: {"facts": {name: text}, "messages": [...], "parameters": {...},
    "response_raw": text, "response_parsed": text}} for the calls the store has."""
    panels: dict[str, dict[str, Any]] = {}
    for record in store.call_records(call_keys, READ_COLUMNS):
        messages, parameters = _request(record.get("request"))
        raw = record.get("response_raw")
        panels[record["call_key"]] = {
            "facts": {
                name: format_fact(name, record[name])
                for name in FACT_COLUMNS
                if name in record and not _missing(record[name])
            },
            "messages": messages,
            "parameters": parameters,
            "response_raw": "" if _missing(raw) else redact(str(raw)),
            "response_parsed": _parsed(record.get("response_parsed")),
        }
    return panels
