"""Not code: this file makes the folder importable as a package (`onet_llm.eval_data`), so that
importlib.resources finds its files in a wheel and in an editable checkout alike (see
onet_llm/resources.py and pyproject.toml)."""
