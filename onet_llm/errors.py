"""One exception family. The CLI turns these into a one-line message and a non-zero exit;
anything else that escapes is a bug and keeps its traceback."""


class OnetLLMError(Exception):
    """Base class for every error a user can cause and fix."""

    exit_code = 1


class Interrupted(OnetLLMError):
    """Ctrl-C during a run: what is committed stays, and the message says how to resume."""

    exit_code = 130


class InputError(OnetLLMError):
    """The input file or one of its rows cannot be used as given."""


class ModelError(OnetLLMError):
    """The embedding model cannot be found or loaded."""


class StoreError(OnetLLMError):
    """The DuckDB store cannot be opened or is in use."""


class LLMError(OnetLLMError):
    """The LLM endpoint is misconfigured (bad key, unknown model, unreachable settings): the
    run stops rather than falling back row after row."""


class BudgetError(LLMError):
    """The next LLM call would take the run past --max-cost-usd; the run stops cleanly and
    resumes (cached calls are free) when started again with a higher limit."""
