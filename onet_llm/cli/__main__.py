"""`python -m onet_llm.cli`: the same app as the `onet-llm` script."""

from onet_llm.cli.app import app

app()
