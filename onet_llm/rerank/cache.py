"""The call cache behind its own protocol (the store implements it: `store/calls.py`).

Every request is keyed by a hash of (model, prompt template hash, schema hash, rendered
messages, parameters): the same request is never paid twice, and a cached answer costs nothing
and is logged as a cache hit. The API key is never part of a key or a record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol


class CallCache(Protocol):
    def cached_call(self, call_key: str) -> dict | None:
        """The validated answer (`response_parsed`) and usage of an earlier ok call, or None."""
        ...

    def record_call(self, call: dict, run_id: str | None, cached: bool) -> None:
        """Log a request (and, unless `cached`, store the call)."""
        ...


def call_key(
    model: str,
    prompt_hash: str,
    schema_hash: str,
    messages: list[dict],
    parameters: dict[str, Any],
) -> str:
    return hashlib.sha256(
        json.dumps(
            {
                "model": model,
                "prompt_hash": prompt_hash,
                "schema_hash": schema_hash,
                "messages": messages,
                "parameters": parameters,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
