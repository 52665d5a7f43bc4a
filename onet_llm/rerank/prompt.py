"""The prompt: a versioned template, the candidates as the model sees them, and their order.

Templates are `prompts/<version>.md` files (shipped as `onet_llm.prompts`) with `## system` and
`## user` sections; the hash of the whole file is part of every cache key, so editing a prompt
never serves answers to the old one.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2

from onet_llm.errors import InputError
from onet_llm.resources import prompts_folder
from onet_llm.types import Candidate

PROMPTS_DIR = prompts_folder()
DESCRIPTION_CHARACTERS = 150
# What a posting must not carry into the prompt: the fence's own markers (runs of 3+ angle
# brackets) and the turn markers of common chat templates (ChatML <|...|>, Llama [INST] and
# <<SYS>>, Gemma <start_of_turn>, <s>/</s>), which some servers pass to the model as tokens.
FORGERIES = re.compile(
    r"<{3,}|>{3,}|<\|[^|<>]{0,40}\|>|\[/?INST\]|<</?SYS>>|</?s>|<(?:start|end)_of_turn>",
    re.I,
)


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned template file `prompts/<version>.md` with `## system` and `## user`
    sections; its hash (of the whole file) is part of every cache key."""

    version: str
    system: str
    user: jinja2.Template
    hash: str

    @classmethod
    def load(cls, version: str) -> PromptTemplate:
        path = PROMPTS_DIR / f"{version}.md"
        if not path.is_file():
            names = (entry.name for entry in PROMPTS_DIR.iterdir())
            known = ", ".join(sorted(n.removesuffix(".md") for n in names if n.endswith(".md")))
            raise InputError(f"unknown prompt version {version!r} (known: {known})")
        text = path.read_text(encoding="utf-8")
        match = re.search(r"^## system\n(.*?)^## user\n(.*)\Z", text, re.S | re.M)
        if match is None:
            raise InputError(f"{path}: needs a '## system' and a '## user' section")
        environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        return cls(
            version=version,
            system=match.group(1).strip(),
            user=environment.from_string(match.group(2).strip()),
            hash=hashlib.sha256(text.encode()).hexdigest()[:16],
        )

    def messages(self, title: str, body: str, candidates: list[dict], top_k: int) -> list[dict]:
        """The chat messages. The posting's fields are made fence-safe here, for every
        template: whatever a posting contains, the prompt has exactly one fence pair."""
        return self.render(
            title=fence_safe(title), body=fence_safe(body), candidates=candidates, top_k=top_k
        )

    def render(self, **values: object) -> list[dict]:
        """System and user messages with the user section rendered from `values` (a template
        that uses a name not given fails: StrictUndefined). Posting text in `values` must be
        passed through `fence_safe` first."""
        user = self.user.render(**values)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def fence_safe(text: str) -> str:
    """Posting text on one line, without fence markers or chat-template tokens: a title cannot
    close the fence and write its own candidate list, nor open a new chat turn."""
    return " ".join(FORGERIES.sub(" ", text).split())


def one_line_description(description: str, limit: int = DESCRIPTION_CHARACTERS) -> str:
    """First sentence of an O*NET description, cut at a word boundary."""
    sentence = description.split(". ")[0].strip().rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + "..."
    return sentence


def trim_body(body: str, limit: int) -> str:
    body = " ".join(body.split())
    return body if len(body) <= limit else body[:limit].rsplit(" ", 1)[0] + " ..."


def candidate_order(
    shortlist: Sequence[Candidate], order: str, seed: int, posting_text: str
) -> list[int]:
    """Positions of the shortlist in the order shown to the model. 'shuffle' is seeded by the
    seed and the posting, so a rerun renders the same prompt (and hits the cache)."""
    positions = list(range(len(shortlist)))
    if order == "shuffle":
        digest = hashlib.sha256(f"{seed}\n{posting_text}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(positions)
    return positions


def numbered_candidates(shown: Sequence[Candidate], descriptions: dict[str, str]) -> list[dict]:
    """The candidates as the template lists them: number, title, one-line description."""
    return [
        {
            "number": number,
            "title": candidate.onet_title,
            "description": descriptions.get(candidate.onet_code, ""),
        }
        for number, candidate in enumerate(shown, start=1)
    ]
