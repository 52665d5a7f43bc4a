"""The `onet-llm` command line (`onet_llm.cli:app`): `app` puts together one module per command
group (`label`, `llm`, `train`, `evaluate`, `review`) over the shared options in `common`."""

from onet_llm.cli.app import app

__all__ = ["app"]
