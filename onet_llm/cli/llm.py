"""`onet-llm ledger`: what the LLM stage asked, what it cost."""

from __future__ import annotations

from typing import Annotated

import typer

from onet_llm.cli.common import HomeOption, StoreOption, print_ledger
from onet_llm.errors import OnetLLMError
from onet_llm.settings import Settings


def ledger(
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    store: StoreOption = None,
    home: HomeOption = None,
) -> None:
    """LLM requests by run and model: calls made, cache hits, tokens, cost and latency."""
    from onet_llm.store import Store

    settings = Settings.load(home=home, store_path=store)
    path = settings.resolved_store_path
    if not path.is_file():
        raise OnetLLMError(f"no store at {path} (nothing has been labelled with it yet)")
    with Store(path) as run_store:
        table = run_store.ledger(run)
    print_ledger(table, title=f"LLM ledger ({path})")
