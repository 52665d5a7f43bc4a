"""What a call costs, and the limit a run may not pass.

Prices are USD per million tokens; a model without a price has cost "unknown" (None), never 0.
A price has three rates: fresh input, cached input (prompt tokens the server served from its
prefix cache, `usage.prompt_tokens_details.cached_tokens`, billed at a discount) and output; a
request sent through the Batch API costs `batch` times those rates. The meter checks the limit
*before* each request against a pessimistic estimate, so a run stops before it overspends.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from onet_llm.errors import BudgetError, InputError
from onet_llm.settings import Settings


@dataclass(frozen=True)
class Price:
    """USD per million tokens. `cached_input` defaults to the input rate (no discount known);
    `batch` is the Batch API's factor on every rate (OpenAI: half price)."""

    input: float
    output: float
    cached_input: float | None = None
    batch: float = 0.5

    def cost(self, tokens_in: int, tokens_out: int, cached: int = 0, batch: bool = False) -> float:
        """USD for `tokens_in` prompt tokens (of which `cached` came from the prefix cache)
        and `tokens_out` completion tokens."""
        cached = min(max(cached, 0), tokens_in)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        usd = (tokens_in - cached) * self.input + cached * cached_rate + tokens_out * self.output
        return usd / 1_000_000 * (self.batch if batch else 1.0)


# OpenAI's list prices (USD per million tokens: input, output, cached input; Batch API at half
# of each), as published on https://openai.com/api/pricing on the date below. They change: pass
# ONET_LLM_PRICES_FILE to override or extend them without a release.
PRICES_CHECKED = "2025-08-01"
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60, cached_input=0.075),
    "gpt-4o": Price(2.50, 10.00, cached_input=1.25),
    "gpt-4.1": Price(2.00, 8.00, cached_input=0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, cached_input=0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, cached_input=0.025),
}
PRICES_FILE_FORM = (
    'JSON {"model": [input, output]} or {"model": {"input": ..., "output": ..., '
    '"cached_input": ..., "batch": 0.5}}, USD per million tokens'
)


def price_from_file(value: object) -> Price:
    """One model's entry of a prices file: `[input, output]`, `[input, output, cached_input]`
    or an object with those names (and `batch`, the Batch API's factor)."""
    if isinstance(value, dict):
        cached = value.get("cached_input")
        return Price(
            float(value["input"]),
            float(value["output"]),
            None if cached is None else float(cached),
            float(value.get("batch", 0.5)),
        )
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise ValueError(f"{value!r} is not [input, output] or [input, output, cached_input]")
    return Price(float(value[0]), float(value[1]), float(value[2]) if len(value) == 3 else None)


class Prices:
    """Per-model prices; `cost()` is None for a model without a price (cost unknown)."""

    def __init__(self, settings: Settings) -> None:
        self.table: dict[str, Price] = dict(DEFAULT_PRICES)
        self.checked = PRICES_CHECKED
        if settings.prices_file is not None:
            try:
                loaded = json.loads(Path(settings.prices_file).read_text())
                self.table.update({str(k): price_from_file(v) for k, v in loaded.items()})
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
                raise InputError(
                    f"{settings.prices_file}: cannot read prices (want {PRICES_FILE_FORM}): {error}"
                ) from None
            self.checked = f"{PRICES_CHECKED}, overridden by {settings.prices_file}"
        if (settings.price_input_per_million is None) != (
            settings.price_output_per_million is None
        ):
            raise InputError("set both ONET_LLM_PRICE_INPUT and ONET_LLM_PRICE_OUTPUT, or neither")
        if settings.price_input_per_million is not None:
            self.table[settings.llm_model] = Price(
                settings.price_input_per_million, float(settings.price_output_per_million or 0.0)
            )

    def known(self, model: str) -> bool:
        return model in self.table

    def cost(
        self,
        model: str,
        tokens_in: int | None,
        tokens_out: int | None,
        cached_tokens: int | None = 0,
        batch: bool = False,
    ) -> float | None:
        """USD, or None when the model has no price or the token counts are unknown."""
        if model not in self.table or tokens_in is None or tokens_out is None:
            return None
        return self.table[model].cost(tokens_in, tokens_out, cached_tokens or 0, batch)


class CostMeter:
    """Money spent by this reranker, with a limit checked *before* each request against a
    pessimistic estimate, so the run stops before it overspends (concurrent requests reserve
    their estimate until they settle)."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self._reserved = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate_usd: float) -> None:
        with self._lock:
            if (
                self.limit_usd is not None
                and self.spent_usd + self._reserved + estimate_usd > self.limit_usd
            ):
                raise BudgetError(
                    f"stopped before exceeding --max-cost-usd {self.limit_usd:g}: spent "
                    f"${self.spent_usd:.4f}, the next call may cost up to ${estimate_usd:.4f}; "
                    "labelled rows are kept, run again with a higher limit to resume"
                )
            self._reserved += estimate_usd

    def settle(self, estimate_usd: float, actual_usd: float | None) -> None:
        with self._lock:
            self._reserved -= estimate_usd
            self.spent_usd += actual_usd or 0.0
