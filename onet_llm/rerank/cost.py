"""What a call costs, and the limit a run may not pass.

Prices are USD per million tokens; a model without a price has cost "unknown" (None), never 0.
The meter checks the limit *before* each request against a pessimistic estimate, so a run
stops before it overspends.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from onet_llm.errors import BudgetError, InputError
from onet_llm.settings import Settings

# USD per million tokens (input, output), as published by OpenAI in 2025. Override or extend
# with ONET_LLM_PRICES_FILE (JSON {"model": [input, output]}) or, for the model in use,
# ONET_LLM_PRICE_INPUT / ONET_LLM_PRICE_OUTPUT. A model with no price has cost "unknown".
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


class Prices:
    """Per-model prices; `cost()` is None for a model without a price (cost unknown)."""

    def __init__(self, settings: Settings) -> None:
        self.table: dict[str, tuple[float, float]] = dict(DEFAULT_PRICES)
        if settings.prices_file is not None:
            try:
                loaded = json.loads(Path(settings.prices_file).read_text())
                self.table.update({str(k): (float(v[0]), float(v[1])) for k, v in loaded.items()})
            except (OSError, ValueError, TypeError, IndexError, AttributeError) as error:
                raise InputError(
                    f"{settings.prices_file}: cannot read prices "
                    f'(want JSON {{"model": [input_usd_per_million, output_usd_per_million]}}): '
                    f"{error}"
                ) from None
        if (settings.price_input_per_million is None) != (
            settings.price_output_per_million is None
        ):
            raise InputError("set both ONET_LLM_PRICE_INPUT and ONET_LLM_PRICE_OUTPUT, or neither")
        if settings.price_input_per_million is not None:
            self.table[settings.llm_model] = (
                settings.price_input_per_million,
                float(settings.price_output_per_million or 0.0),
            )

    def known(self, model: str) -> bool:
        return model in self.table

    def cost(self, model: str, tokens_in: int | None, tokens_out: int | None) -> float | None:
        """USD, or None when the model has no price or the token counts are unknown."""
        if model not in self.table or tokens_in is None or tokens_out is None:
            return None
        price_in, price_out = self.table[model]
        return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


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
