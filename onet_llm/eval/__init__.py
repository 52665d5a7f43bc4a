"""Evaluation: `datasets` (shipped and user gold data), `modes` (embedding, hybrid, cascade on
the same rows), `llm_stage` (the product's reranker as the evaluation's LLM stage), `metrics`
and `scoring` (figures with bootstrap intervals), `compare` (two saved runs), and `report`
(report.md, report.html and plots)."""
