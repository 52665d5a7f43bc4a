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

DEFAULT_HOME = Path("~/.cache/onet-llm")

# Setting name -> environment variable. Every entry is documented in .env.example.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    "home": "ONET_LLM_HOME",
    "embedding_model": "ONET_LLM_EMBEDDING_MODEL",
    "store_path": "ONET_LLM_STORE",
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one command."""

    home: Path = field(default_factory=lambda: DEFAULT_HOME.expanduser())
    embedding_model: str = "default"
    store_path: Path | None = None

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
            values[setting.name] = _coerce(setting.name, raw)
        return cls(**values)


def _coerce(name: str, raw: Any) -> Any:
    if name in {"home", "store_path"}:
        return Path(str(raw)).expanduser()
    return raw
