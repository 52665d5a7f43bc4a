"""One exception family. The CLI turns these into a one-line message and a non-zero exit;
anything else that escapes is a bug and keeps its traceback."""


class OnetLLMError(Exception):
    """Base class for every error a user can cause and fix."""


class InputError(OnetLLMError):
    """The input file or one of its rows cannot be used as given."""


class ModelError(OnetLLMError):
    """The embedding model cannot be found or loaded."""


class StoreError(OnetLLMError):
    """The DuckDB store cannot be opened or is in use."""
