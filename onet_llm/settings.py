"""Configuration: CLI flags, then the environment (and `.env`), then defaults.

Every module reads its settings from one `Settings` object so that the order of precedence is
decided in one place. CLI code builds it with `Settings.load(**flags)`; flags left as None fall
through to the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from onet_llm.errors import InputError
from onet_llm.shortlist.encoder import DEFAULT_BATCH_SIZE

DEFAULT_HOME = Path("~/.cache/onet-llm")

# Setting name -> environment variable. Every entry is documented in .env.example.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    "home": "ONET_LLM_HOME",
    "embedding_model": "ONET_LLM_EMBEDDING_MODEL",
    "encoder_backend": "ONET_LLM_ENCODER_BACKEND",
    "encoder_threads": "ONET_LLM_ENCODER_THREADS",
    "encoder_batch_size": "ONET_LLM_ENCODER_BATCH_SIZE",
    "store_path": "ONET_LLM_STORE",
    # LLM rerank (issue 6)
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "llm_model": "ONET_LLM_MODEL",
    "llm_when": "ONET_LLM_WHEN",
    "llm_uncertain_margin": "ONET_LLM_UNCERTAIN_MARGIN",
    "llm_concurrency": "ONET_LLM_CONCURRENCY",
    "max_cost_usd": "ONET_LLM_MAX_COST_USD",
    "candidate_order": "ONET_LLM_CANDIDATE_ORDER",
    "order_seed": "ONET_LLM_ORDER_SEED",
    "prompt_version": "ONET_LLM_PROMPT",
    "llm_body_characters": "ONET_LLM_BODY_CHARACTERS",
    "llm_max_tokens": "ONET_LLM_MAX_TOKENS",
    "llm_temperature": "ONET_LLM_TEMPERATURE",
    "llm_timeout_s": "ONET_LLM_TIMEOUT",
    "llm_fail_fast_after": "ONET_LLM_FAIL_FAST_AFTER",
    "llm_max_retries": "ONET_LLM_MAX_RETRIES",
    "llm_rate_limit_retries": "ONET_LLM_RATE_LIMIT_RETRIES",
    "llm_validation_retries": "ONET_LLM_VALIDATION_RETRIES",
    "llm_backoff_initial_s": "ONET_LLM_BACKOFF_INITIAL",
    "llm_backoff_max_s": "ONET_LLM_BACKOFF_MAX",
    "structured_output": "ONET_LLM_STRUCTURED_OUTPUT",
    "price_input_per_million": "ONET_LLM_PRICE_INPUT",
    "price_output_per_million": "ONET_LLM_PRICE_OUTPUT",
    "prices_file": "ONET_LLM_PRICES_FILE",
    # LLM infer -> retrieve -> rerank (issue 14)
    "llm_stages": "ONET_LLM_STAGES",
    "infer_prompt_version": "ONET_LLM_INFER_PROMPT",
    "infer_examples": "ONET_LLM_INFER_EXAMPLES",
    "fusion": "ONET_LLM_FUSION",
    # LLM cost at scale (issue 19)
    "llm_mode": "ONET_LLM_MODE",
    "batch_poll_s": "ONET_LLM_BATCH_POLL",
    "batch_max_requests": "ONET_LLM_BATCH_MAX_REQUESTS",
    "batch_max_bytes": "ONET_LLM_BATCH_MAX_BYTES",
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one command."""

    home: Path = field(default_factory=lambda: DEFAULT_HOME.expanduser())
    embedding_model: str = "default"
    # auto | torch | onnx | onnx-int8 (issue 18; see shortlist/onnx.py). auto: fp32 ONNX where
    # it can run, else torch: torch's vectors to float tolerance, and on 2 cores 1.7x its
    # titles/s and 1.8x its postings/s (benchmarks/throughput.py, README "Encoder backends").
    encoder_backend: str = "auto"
    encoder_threads: int = 0  # compute threads of the encoder; 0: one per core
    encoder_batch_size: int = DEFAULT_BATCH_SIZE  # texts per forward pass
    store_path: Path | None = None
    # -- LLM rerank (issue 6); see .env.example for what each one does ----------------------
    # The key is excluded from repr and from `llm_fingerprint()`: it never reaches the store.
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None  # None: the openai client's default (api.openai.com)
    llm_model: str = "gpt-4o-mini"
    llm_when: str = "always"  # always | uncertain
    llm_uncertain_margin: float = 0.05
    llm_concurrency: int = 4
    max_cost_usd: float | None = None
    candidate_order: str = "embedding"  # embedding | shuffle
    order_seed: int = 13
    prompt_version: str = "rerank_v1"
    llm_body_characters: int = 1500
    llm_max_tokens: int = 400
    llm_temperature: float = 0.0
    llm_timeout_s: float = 120.0  # bounds each request as a whole, body included
    # Stop the run when the first N LLM requests all fail (connection, key, 429s or 5xx that
    # outlast their retries): a dead endpoint must not fall back row after row. 0: never stop.
    llm_fail_fast_after: int = 3
    llm_max_retries: int = 3
    llm_rate_limit_retries: int = 8
    llm_validation_retries: int = 2
    llm_backoff_initial_s: float = 1.0
    llm_backoff_max_s: float = 30.0
    structured_output: str = "auto"  # auto | json_schema | json_object
    price_input_per_million: float | None = None
    price_output_per_million: float | None = None
    prices_file: Path | None = None
    # -- LLM infer -> retrieve -> rerank (issue 14) ------------------------------------------
    llm_stages: str = "rerank"  # rerank | infer,rerank
    infer_prompt_version: str = "infer_v1"
    infer_examples: int = 3  # nearest O*NET titles shown in the infer prompt
    fusion: str = "reserve"  # reserve | rrf | union (rerank/fusion.py)
    # -- LLM cost at scale (issue 19) --------------------------------------------------------
    llm_mode: str = "sync"  # sync | batch (OpenAI's Batch API: half price, within 24 h)
    batch_poll_s: float = 30.0  # seconds between status checks of a running batch
    # The Batch API's limits per batch (OpenAI: 50,000 requests, 200 MB input file); larger
    # inputs are split into several batches.
    batch_max_requests: int = 50_000
    batch_max_bytes: int = 200_000_000

    @property
    def infer_enabled(self) -> bool:
        return "infer" in self.llm_stages.split(",")

    def llm_fingerprint(self) -> dict[str, Any]:
        """The LLM settings that change labels, for run identity; never the API key."""
        return {
            "llm_model": self.llm_model,
            "prompt_version": self.prompt_version,
            "llm_when": self.llm_when,
            "llm_uncertain_margin": self.llm_uncertain_margin,
            "candidate_order": self.candidate_order,
            "order_seed": self.order_seed,
            "llm_body_characters": self.llm_body_characters,
            "llm_max_tokens": self.llm_max_tokens,
            "llm_temperature": self.llm_temperature,
            # Only when the infer stage runs, so earlier runs keep their identity.
            **(
                {
                    "llm_stages": self.llm_stages,
                    "infer_prompt_version": self.infer_prompt_version,
                    "infer_examples": self.infer_examples,
                    "fusion": self.fusion,
                }
                if self.infer_enabled
                else {}
            ),
        }

    def encoder_options(self) -> dict[str, Any]:
        """The `Encoder` keywords these settings choose (model aside)."""
        return {
            "backend": self.encoder_backend,
            "threads": self.encoder_threads or None,
            "batch_size": self.encoder_batch_size,
        }

    @property
    def index_cache_dir(self) -> Path:
        return self.home / "index"

    @property
    def resolved_store_path(self) -> Path:
        return self.store_path or self.home / "store.duckdb"

    @classmethod
    def load(cls, env_file: Path | None = Path(".env"), **flags: Any) -> Settings:
        """Merge flags (non-None win), environment, `.env` and defaults."""
        file_values = dotenv_values(env_file) if env_file and env_file.is_file() else {}
        values: dict[str, Any] = {}
        for setting in fields(cls):
            flag = flags.get(setting.name)
            variable = ENVIRONMENT_VARIABLES.get(setting.name)
            from_env = os.environ.get(variable) if variable else None
            if from_env is None and variable:
                from_env = file_values.get(variable)
            raw = flag if flag is not None else (from_env or None)
            if raw is None:
                continue
            values[setting.name] = _coerce(setting.name, raw, from_flag=flag is not None)
        return cls(**values)


_INTEGERS = {
    "encoder_threads",
    "encoder_batch_size",
    "llm_concurrency",
    "llm_fail_fast_after",
    "order_seed",
    "llm_body_characters",
    "llm_max_tokens",
    "llm_max_retries",
    "llm_rate_limit_retries",
    "llm_validation_retries",
    "infer_examples",
    "batch_max_requests",
    "batch_max_bytes",
}
_FLOATS = {
    "llm_uncertain_margin",
    "max_cost_usd",
    "llm_temperature",
    "llm_timeout_s",
    "llm_backoff_initial_s",
    "llm_backoff_max_s",
    "price_input_per_million",
    "price_output_per_million",
    "batch_poll_s",
}
_CHOICES = {
    "encoder_backend": ("auto", "torch", "onnx", "onnx-int8"),
    "llm_when": ("always", "uncertain"),
    "candidate_order": ("embedding", "shuffle"),
    "structured_output": ("auto", "json_schema", "json_object"),
    "llm_stages": ("rerank", "infer,rerank"),
    "fusion": ("reserve", "rrf", "union"),
    "llm_mode": ("sync", "batch"),
}


# The smallest value each number may take (a negative concurrency or budget is a mistake, not
# a setting), and the flag that sets it, for the message.
_MINIMUMS: dict[str, float] = {
    "encoder_threads": 0,
    "encoder_batch_size": 1,
    "llm_concurrency": 1,
    "max_cost_usd": 0,
    "llm_timeout_s": 0.001,
    "llm_max_tokens": 1,
    "llm_body_characters": 0,
    "llm_max_retries": 0,
    "llm_rate_limit_retries": 0,
    "llm_validation_retries": 0,
    "llm_fail_fast_after": 0,
    "llm_backoff_initial_s": 0,
    "llm_backoff_max_s": 0,
    "llm_temperature": 0,
    "llm_uncertain_margin": 0,
    "price_input_per_million": 0,
    "price_output_per_million": 0,
    "batch_poll_s": 0,
    "batch_max_requests": 1,
    "batch_max_bytes": 1000,
}
_FLAGS = {
    "llm_concurrency": "--concurrency",
    "max_cost_usd": "--max-cost-usd",
    "llm_mode": "--llm-mode",
    "encoder_backend": "--encoder-backend",
}


def _coerce(name: str, raw: Any, from_flag: bool = False) -> Any:
    """Flag and environment values: convert and bound them, with a one-line error naming the
    flag or variable when one cannot be used."""
    source = _FLAGS.get(name, name) if from_flag else ENVIRONMENT_VARIABLES.get(name, name)
    if name in {"home", "store_path", "prices_file"}:
        return Path(str(raw)).expanduser()
    try:
        if name in _INTEGERS:
            value: Any = int(raw)
        elif name in _FLOATS:
            value = float(raw)
        else:
            value = raw
    except ValueError:
        raise InputError(f"{source}: expected a number, got {raw!r}") from None
    if name in _MINIMUMS and not value >= _MINIMUMS[name]:  # also refuses NaN
        raise InputError(f"{source} must be at least {_MINIMUMS[name]:g}, got {raw}")
    if name in _INTEGERS or name in _FLOATS:
        return value
    if name == "llm_stages":
        raw = ",".join(part.strip() for part in str(raw).split(",") if part.strip())
    if name in _CHOICES and raw not in _CHOICES[name]:
        raise InputError(f"{source}: expected one of {', '.join(_CHOICES[name])}, got {raw!r}")
    return raw
