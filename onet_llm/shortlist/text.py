"""What text of a posting the encoder sees.

The title carries most of the signal and the model reads at most 256 word pieces, so the
variants below are measured against each other (`eval/representations_base.md`,
`eval/representations_finetuned.md`) and the best one is the default.
"""

from __future__ import annotations

import re
from typing import Literal

TextVariant = Literal[
    "title", "title_body", "title_body_head", "clean_title", "clean_title_body_head"
]
TEXT_VARIANTS: tuple[str, ...] = (
    "title",
    "clean_title",
    "title_body_head",
    "clean_title_body_head",
    "title_body",
)
DEFAULT_TEXT_VARIANT: TextVariant = "title_body_head"
# Characters of the body kept by the *_body_head variants (about 60-80 word pieces).
BODY_HEAD_CHARACTERS = 300

_REQUISITION = re.compile(r"\b(?:req(?:uisition)?\.?\s*#?\s*|#|R-?|JR-?)\d{3,}\b", re.IGNORECASE)
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_BRACKETS = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_LEVEL_SUFFIX = re.compile(r"\s+(?:I{1,3}|IV|V|[1-5])$")
_AFTER_SEPARATOR = re.compile(r"\s+[-|–—]\s+.*$")


def clean_title(title: str) -> str:
    """Drop the noise postings add around a job title: requisition numbers, years, bracketed
    notes, level numerals, and anything after ' - ' or a comma's company-like tail."""
    text = _REQUISITION.sub(" ", title)
    text = _YEAR.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _AFTER_SEPARATOR.sub("", text)
    text = " ".join(text.split())
    text = _LEVEL_SUFFIX.sub("", text)
    return text.strip(" ,-/|") or title.strip()


def posting_text(title: str, body: str, variant: TextVariant = DEFAULT_TEXT_VARIANT) -> str:
    """The single string the encoder embeds for one posting."""
    title = title.strip()
    body = " ".join(body.split())
    if variant.startswith("clean_"):
        title = clean_title(title)
    if variant in {"title", "clean_title"} or not body:
        return title
    if variant.endswith("body_head"):
        body = body[:BODY_HEAD_CHARACTERS]
    return f"{title}. {body}" if title else body
