"""Secrets out of everything stored or written.

A misbehaving server or proxy can echo the request's Authorization header back, in an error
body or inside the model's answer. Whatever text arrives from the endpoint passes through a
`Redactor` before it reaches the store, the output file, the review page or a message: the
configured key and anything shaped like a bearer token or an OpenAI-style key are replaced.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# "Bearer <token>" in any case, and sk-/sk-proj- style keys, whoever's they are.
SECRET_PATTERNS = re.compile(
    r"(?i:bearer)\s+(?!\[redacted\])[A-Za-z0-9._~+/=-]{8,}|\bsk-[A-Za-z0-9_-]{8,}"
)


class Redactor:
    """`redactor(text)` -> text with the key and token-shaped strings replaced."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return SECRET_PATTERNS.sub(_keep_scheme, text)


def _keep_scheme(match: re.Match[str]) -> str:
    word = match.group(0).split()[0]
    return f"{word} {REDACTED}" if word.lower() == "bearer" else REDACTED
