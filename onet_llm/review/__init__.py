"""Auditing a labelling run: `queries` (filter rows, record decisions, export them) and `web`
(the Starlette page over them, with its `templates/` and `static/`)."""
