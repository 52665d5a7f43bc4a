"""The fixed choices of CLI options, as enums so `--help` lists them and typos fail at once."""

from __future__ import annotations

from enum import Enum, StrEnum


class LlmWhen(StrEnum):
    always = "always"
    uncertain = "uncertain"


class CandidateOrder(StrEnum):
    embedding = "embedding"
    shuffle = "shuffle"


class EncoderBackend(StrEnum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"


class Engine(StrEnum):
    local = "local"
    ray = "ray"


class StdinFormat(StrEnum):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"


def value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)
