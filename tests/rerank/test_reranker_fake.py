"""The fast tier: the real reranker, prompt, cache keys and DuckDB store, with a fake client
instead of an HTTP server (see fake_client.py). Each test runs in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from onet_llm.errors import BudgetError, LLMError
from onet_llm.eval.llm_stage import llm_row
from onet_llm.label import rerank_rows
from onet_llm.rerank.cache import failed_status
from onet_llm.rerank.client import (
    NOT_A_COMPLETION,
    Completion,
    CompletionError,
    completion_from_body,
)
from onet_llm.rerank.redact import Redactor
from onet_llm.rerank.reranker import Reranker
from onet_llm.settings import Settings
from onet_llm.store import Store
from onet_llm.types import Candidate, Label, LabelledRow, Posting
from tests.rerank.fake_client import FakeClient, answer, replies

CODES = ["29-1141.00", "29-1141.01", "29-2061.00", "31-1131.00", "11-9111.00"]
POSTING = Posting("p1", "Registered Nurse", "Care for patients on a busy ward.")
SETTINGS = Settings(llm_model="gpt-4o-mini", llm_validation_retries=2, llm_concurrency=1)


@pytest.fixture
def shortlist(taxonomy) -> list[Candidate]:
    return [
        Candidate(code, taxonomy.title(code), round(0.9 - 0.05 * i, 6))
        for i, code in enumerate(CODES)
    ]


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "fake.duckdb") as opened:
        yield opened


def reranker(store, taxonomy, *script, settings=SETTINGS) -> Reranker:
    return Reranker(settings, store, taxonomy, client=FakeClient(replies(*script)))


def test_the_answer_becomes_labels_and_travels_with_the_result(store, taxonomy, shortlist):
    result = reranker(store, taxonomy, answer(2, 1)).rerank([POSTING], [shortlist], 3)[0]
    assert result.source == "llm" and result.error is None and not result.cached
    assert [label.onet_code for label in result.labels] == [CODES[1], CODES[0], CODES[2]]
    assert [label.rationale for label in result.labels] == ["picked 2", "picked 1", None]
    assert all(isinstance(label, Label) and label.reranked for label in result.labels)
    assert result.answer is not None and result.answer.picks == [CODES[1], CODES[0]]
    assert (result.tokens_in, result.tokens_out, result.attempts) == (100, 10, 1)
    assert result.cost_usd == pytest.approx((100 * 0.15 + 10 * 0.60) / 1e6)
    calls = store.calls()
    assert list(calls["status"]) == ["ok"] and calls.loc[0, "call_key"] == result.call_key


def test_a_rerun_is_served_from_the_cache_without_asking(store, taxonomy, shortlist):
    first = reranker(store, taxonomy, answer(3)).rerank([POSTING], [shortlist], 2)[0]
    again = reranker(store, taxonomy, CompletionError("must not be asked"))
    second = again.rerank([POSTING], [shortlist], 2)[0]
    assert again.client.requests == []
    assert second.cached and second.cost_usd == 0.0 and second.call_key == first.call_key
    assert second.labels == first.labels and second.answer == first.answer
    assert second.first_call["tokens_in"] == 100
    ledger = store.ledger()
    assert (ledger["requests"].sum(), ledger["cache_hits"].sum()) == (2, 1)


def test_an_unusable_answer_is_asked_again_with_the_problem(store, taxonomy, shortlist):
    fake = reranker(store, taxonomy, answer(9), answer(1))
    result = fake.rerank([POSTING], [shortlist], 2)[0]
    assert result.source == "llm" and result.validation_retries == 1 and result.attempts == 2
    retry = fake.client.requests[1]
    assert retry[-2]["role"] == "assistant" and "not on the list" in retry[-1]["content"]


def test_answers_that_stay_unusable_fall_back_to_the_embedding_ranking(store, taxonomy, shortlist):
    result = reranker(store, taxonomy, answer(9)).rerank([POSTING], [shortlist], 2)[0]
    assert result.source == "fallback" and "not on the list" in result.error
    assert [label.onet_code for label in result.labels] == CODES[:2]
    assert result.answer is None and result.validation_retries == 2
    assert list(store.calls()["status"]) == ["invalid"]  # the same request buys the same reply
    again = reranker(store, taxonomy, answer(1)).rerank([POSTING], [shortlist], 2)[0]
    assert again.cached and (again.source, again.error, again.labels) == (
        result.source, result.error, result.labels,
    )  # fmt: skip


def test_only_a_reply_of_the_model_that_failed_validation_is_served_again():
    """The status is read from how the call ended, never from the wording of its error."""
    redact = Redactor(None)
    cut_off = completion_from_body(
        {"choices": [{"message": {"content": '{"choi'}, "finish_reason": "length"}]}, redact
    )
    assert failed_status(cut_off) == "invalid"
    assert failed_status(Completion('{"choices": [9]}')) == "invalid"  # a code off the list
    assert failed_status(Completion("")) == "invalid"  # an empty reply
    # No reply of the model: asked again on the next run.
    assert failed_status(None) == "error"  # the request failed (time-out, 5xx, ...)
    assert failed_status(completion_from_body({"choices": []}, redact)) == "error"
    refusal = {"choices": [{"message": {"content": "no", "refusal": "I can't"}}]}
    assert failed_status(completion_from_body(refusal, redact)) == "error"
    assert failed_status(Completion("<html>", None, NOT_A_COMPLETION, no_reply=True)) == "error"
    assert failed_status(Completion(None)) == "error"  # a message without text


def test_a_failed_request_falls_back_and_a_misconfiguration_stops(store, taxonomy, shortlist):
    failed = reranker(store, taxonomy, CompletionError("APITimeoutError: timed out"))
    result = failed.rerank([POSTING], [shortlist], 2)[0]
    assert result.source == "fallback"
    assert result.error == "LLM request failed: APITimeoutError: timed out"
    with pytest.raises(LLMError, match="refused"):
        reranker(store, taxonomy, LLMError("the LLM endpoint refused the key")).rerank(
            [POSTING], [shortlist], 2
        )
    with pytest.raises(BudgetError):
        reranker(store, taxonomy, BudgetError("stopped")).rerank([POSTING], [shortlist], 2)


def test_none_fits_keeps_the_embedding_order_and_says_so(store, taxonomy, shortlist):
    result = reranker(store, taxonomy, answer(none_fits=True)).rerank([POSTING], [shortlist], 2)[0]
    assert result.source == "llm" and result.answer.none_fits and result.answer.picks == []
    assert [label.onet_code for label in result.labels] == CODES[:2]
    assert "no shortlisted occupation fits" in result.labels[0].rationale
    assert result.labels[0].confidence == 0.0
    row = llm_row(result, reranker(store, taxonomy).prices, SETTINGS.llm_model)
    assert row.none_fits and row.predicted == []


def test_the_evaluation_reads_picks_and_first_call_figures_from_the_result(
    store, taxonomy, shortlist
):
    reranker(store, taxonomy, answer(2)).rerank([POSTING], [shortlist], 2)
    cached = reranker(store, taxonomy, answer(1)).rerank([POSTING], [shortlist], 2)[0]
    row = llm_row(cached, cached_prices(store, taxonomy), SETTINGS.llm_model)
    assert row.cached and row.predicted == [CODES[1]] and row.rationale == "picked 2"
    assert (row.tokens_in, row.tokens_out) == (100, 10) and row.cost_usd > 0


def cached_prices(store, taxonomy):
    return reranker(store, taxonomy).prices


def test_rerank_rows_replaces_labels_of_the_rows_sent_only(store, taxonomy, shortlist):
    rows = [
        LabelledRow(
            1, "a", "Registered Nurse", "", shortlist, [Label.embedding(shortlist[0])], "embedding"
        ),
        LabelledRow(2, "b", "", "", error="title and body are both empty"),
    ]
    uncertain = Settings(llm_model="gpt-4o-mini", llm_when="uncertain", llm_uncertain_margin=0.01)
    sure = rerank_rows(rows, reranker(store, taxonomy, answer(2), settings=uncertain), 2, "run")
    assert [row.source for row in sure] == ["embedding", "error"]  # margin 0.05: not sent
    sent = rerank_rows(rows, reranker(store, taxonomy, answer(2)), 2, "run")
    assert sent[0].source == "llm" and sent[0].labels[0].onet_code == CODES[1]
    assert sent[0].call_key and sent[1].source == "error" and sent[1].labels is None
