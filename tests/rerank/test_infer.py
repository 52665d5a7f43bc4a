"""`--llm-stages infer,rerank` against the fault server (real HTTP, openai client, DuckDB store,
the shipped model and its FAISS index): fusion only yields real codes, the fused shortlist is
what the rerank sees, a rerun makes no request, a failed infer call keeps the posting's own
shortlist (flagged), and the budget and concurrency are the rerank's."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pandas as pd
import pytest
from typer.testing import CliRunner

from onet_llm.cli import app
from onet_llm.errors import BudgetError
from onet_llm.rerank.fusion import fuse
from onet_llm.rerank.reranker import Reranker
from onet_llm.rerank.stages import INFER_FALLBACK, InferRerank
from onet_llm.settings import ENVIRONMENT_VARIABLES, Settings
from onet_llm.store import Store
from onet_llm.types import Candidate, Posting
from tests.rerank.fault_server import FaultServer
from tests.rerank.test_rerank import fault_settings

runner = CliRunner()
NURSE = "29-1141.00"  # Registered Nurses: far from a software posting's own shortlist


@pytest.fixture(autouse=True)
def no_user_llm_environment(monkeypatch: pytest.MonkeyPatch):
    for variable in ENVIRONMENT_VARIABLES.values():
        if variable not in {"ONET_LLM_HOME", "ONET_LLM_STORE"}:
            monkeypatch.delenv(variable, raising=False)


def infer_settings(server: FaultServer, **overrides) -> Settings:
    settings = fault_settings(server, llm_stages="infer,rerank", infer_examples=0)
    return replace(settings, **overrides)


def software_posting(marker: str = "[[infer:Registered_Nurse]]") -> Posting:
    return Posting("p1", f"Software Developer {marker}".strip(), "Build web applications.")


@pytest.mark.parametrize("method", ["rrf", "union"])
def test_fusion_keeps_the_length_and_yields_only_codes_of_the_searched_lists(method):
    own = [Candidate(f"15-12{i:02d}.00", "own", 0.8 - 0.01 * i) for i in range(20)]
    inferred = [[Candidate(NURSE, "nurse", 0.95), Candidate(own[5].onet_code, "own", 0.9)]]
    fused = fuse(own, inferred, method)
    assert len(fused) == 20 and len({c.onet_code for c in fused}) == 20
    assert {c.onet_code for c in fused} <= {c.onet_code for c in own} | {NURSE}
    assert NURSE in [c.onet_code for c in fused[:2]]  # first of an inferred list: near the top
    assert fuse(own, [], method) == own  # nothing inferred: the own list, unchanged
    by_code = {c.onet_code: c for c in fused}
    assert by_code[own[5].onet_code].score == 0.9  # a code keeps its best cosine


def test_reserve_fusion_keeps_the_own_head_and_adds_new_codes_rank_by_rank():
    own = [Candidate(f"15-12{i:02d}.00", "own", 0.8 - 0.01 * i) for i in range(20)]
    first = [Candidate(own[0].onet_code, "own", 0.99), Candidate(NURSE, "nurse", 0.7)]
    second = [Candidate("29-1171.00", "np", 0.6), Candidate("29-1122.00", "ot", 0.5)]
    third = [Candidate(own[18].onet_code, "own", 0.9)]  # in the own tail: taken up, not lost
    fused = fuse(own, [first, second, third], "reserve")
    codes = [c.onet_code for c in fused]
    assert codes[:17] == [c.onet_code for c in own[:17]]  # top-1 to top-17 never move
    # Rank 1 of each list first (own[18] is new to the head), then rank 2: NURSE.
    assert codes[17:] == ["29-1171.00", own[18].onet_code, NURSE]
    assert fused[0].score == 0.99  # a code keeps its best cosine
    assert fuse(own, [[Candidate(c.onet_code, "own", 0.1) for c in own]], "reserve") == own
    assert [c.onet_code for c in fuse(own[:2], [second], "reserve")] == [
        "29-1171.00", "29-1122.00",
    ]  # fmt: skip


def test_inferred_titles_add_candidates_the_rerank_then_sees(taxonomy, labeler, tmp_path):
    posting = software_posting()
    # The posting's own shortlist, as the embedding sees it without the server's marker.
    own = labeler.shortlist(["Software Developer"], [posting.body], 20)[0]
    assert NURSE not in [c.onet_code for c in own]
    with FaultServer() as server, Store(tmp_path / "s.duckdb") as store:
        stages = InferRerank(Reranker(infer_settings(server), store, taxonomy), labeler, None)
        [result] = stages.rerank([posting], [own], 5)
        assert server.requests["infer:Registered_Nurse"] == 1
        fused = [c.onet_code for c in result.shortlist]
        assert NURSE in fused and len(fused) == len(own) == 20
        assert set(fused) <= set(taxonomy.codes)
        assert result.infer.inference.titles == ("Registered Nurse",)
        assert result.source == "llm" and result.error is None
        # The rerank request listed the fused shortlist: its candidate 1 is the fused first.
        [rerank_text] = [
            b["messages"][1]["content"]
            for b in server.bodies
            if '"titles": [' not in b["messages"][1]["content"]
        ]
        assert f"1. {result.shortlist[0].onet_title}:" in rerank_text
        assert result.labels[0].onet_code == result.shortlist[0].onet_code
        before = server.total_requests
        [again] = stages.rerank([posting], [own], 5)
        assert server.total_requests == before == 2  # both calls cached
        assert again.cached and again.infer.cached and again.shortlist == result.shortlist
        calls = store.calls()
    assert sorted(calls["prompt_version"]) == ["infer_v1", "rerank_v1"]
    assert calls["prompt_hash"].nunique() == 2 and (calls["status"] == "ok").all()


def test_a_failed_infer_call_reranks_the_own_shortlist_and_says_so(taxonomy, labeler, tmp_path):
    postings = [software_posting("[[infer:fail]]"), software_posting("")]
    own = labeler.shortlist([p.title for p in postings], [p.body for p in postings], 20)
    with FaultServer() as server, Store(tmp_path / "s.duckdb") as store:
        stages = InferRerank(Reranker(infer_settings(server), store, taxonomy), labeler, None)
        failed, good = stages.rerank(postings, own, 3)
        assert server.requests["infer:fail"] == 3  # 1 + llm_max_retries, as for the rerank
    assert failed.source == "llm" and failed.error.startswith(INFER_FALLBACK)
    assert [c.onet_code for c in failed.shortlist] == [c.onet_code for c in own[0]]
    assert failed.infer.source == "fallback" and len(failed.labels) == 3
    assert good.error is None and good.infer.inference.titles == ("Software Developer",)


def test_the_budget_covers_both_calls_and_workers_run_concurrently(taxonomy, labeler, tmp_path):
    postings = [Posting(str(i), f"Software Developer {i}", "") for i in range(8)]
    own = labeler.shortlist([p.title for p in postings], [""] * 8, 20)
    priced = {"price_input_per_million": 1.0, "price_output_per_million": 2.0}
    with FaultServer() as server, Store(tmp_path / "s.duckdb") as store:
        # $0.0012 a call; the estimate before each call is higher, so a $0.005 budget stops
        # the run inside the infer stage, before any rerank call.
        settings = infer_settings(server, max_cost_usd=0.005, llm_concurrency=1, **priced)
        stages = InferRerank(Reranker(settings, store, taxonomy), labeler, None)
        with pytest.raises(BudgetError):
            stages.rerank(postings, own, 3)
        assert 0 < server.total_requests < 8
        assert all(key.startswith("infer:") for key in server.requests)
    active, peak, lock = [0], [0], threading.Lock()
    with FaultServer() as server, Store(tmp_path / "t.duckdb") as store:
        original = server.respond_infer

        def tracked(body, text):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                threading.Event().wait(0.2)
                return original(body, text)
            finally:
                with lock:
                    active[0] -= 1

        server.respond_infer = tracked
        stages = InferRerank(
            Reranker(infer_settings(server, llm_concurrency=4), store, taxonomy), labeler, None
        )
        results = stages.rerank(postings, own, 3)
    assert peak[0] == 4 and all(r.source == "llm" and r.error is None for r in results)


def test_label_with_infer_stages_writes_the_fused_shortlist_and_reruns_for_free(tmp_path):
    postings = tmp_path / "postings.csv"
    postings.write_text(
        "id,title,body\n"
        "a,Software Developer [[infer:Registered_Nurse|Nurse_Practitioner]],Build web apps.\n"
        "b,Software Developer [[infer:fail]],Build web apps.\n"
    )
    with FaultServer() as server:
        args = ["--llm", "--base-url", server.base_url, "--llm-model", "fault-model",
                "--llm-stages", "infer,rerank", "--infer-examples", "0",
                "--top-k", "3"]  # fmt: skip
        first = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "a.csv"), *args])
        assert first.exit_code == 0, first.output
        requests = dict(server.requests)
        second = runner.invoke(app, ["label", str(postings), "-o", str(tmp_path / "b.csv"), *args])
        assert second.exit_code == 0, second.output
        # Only the failed infer call is asked again (failures are never served from the cache).
        retried = {k: n - requests.get(k, 0) for k, n in server.requests.items()}
        assert {k: n for k, n in retried.items() if n} == {"infer:fail": requests["infer:fail"]}
    frame = pd.read_csv(tmp_path / "a.csv", dtype=str, keep_default_na=False)
    assert list(frame["id"]) == ["a", "b"] and (frame["source"] == "llm").all()
    assert frame.loc[0, "error"] == "" and frame.loc[1, "error"].startswith(INFER_FALLBACK)
    with Store(tmp_path / "store.duckdb") as store:
        rows = store.db.execute("SELECT shortlist FROM run_rows ORDER BY row_number").fetchall()
        ledger = store.ledger()
    first_shortlist = [c["onet_code"] for c in json.loads(rows[0][0])]
    assert NURSE in first_shortlist and len(first_shortlist) == 20
    assert list(ledger["cache_hits"])[-1] == 3  # a's infer and rerank, b's rerank


def test_label_warns_in_one_line_when_the_store_measured_the_model_lowering_top1(
    example_postings, tmp_path
):
    from onet_llm.eval.guard import measured_harm

    row = {"llm_model": "fault-model", "llm_stages": "rerank", "mode": "hybrid",
           "data_name": "dev_ads", "rows": 60, "top1": 0.733, "embedding_top1": 0.817,
           "difference_low": -0.183, "difference_high": 0.017}  # fmt: skip
    with Store(tmp_path / "store.duckdb") as store:
        store.record_eval([row])
        assert measured_harm(store, "fault-model", "infer,rerank") is None  # other stages
        assert measured_harm(store, "other-model", "rerank") is None
    with FaultServer() as server:
        result = runner.invoke(
            app,
            ["label", str(example_postings), "-o", str(tmp_path / "out.csv"), "--llm",
             "--base-url", server.base_url, "--llm-model", "fault-model"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.output
    assert "0.817" in warnings[0] and "0.733" in warnings[0] and "-8.4 points" in warnings[0]


def test_eval_scores_every_mode_against_embedding_and_a_rerun_makes_no_calls(tmp_path):
    data = tmp_path / "gold.csv"
    data.write_text(
        "id,title,onet_code\n"
        "1,Registered Nurse,29-1141.00\n"
        "2,Software Developer [[infer:Registered_Nurse]],15-1252.00\n"
        "3,Electrician [[infer:fail]],47-2111.00\n"
    )
    with FaultServer() as server:
        modes = "embedding,fused,hybrid,infer-hybrid,cascade"
        args = ["eval", "--data", str(data), "--modes", modes, "--base-url", server.base_url,
                "--llm-model", "fault-model", "--resamples", "200", "--infer-examples", "0",
                "--top-k", "1"]  # fmt: skip
        first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
        assert first.exit_code == 0, first.output
        requests = dict(server.requests)
        again = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
        assert again.exit_code == 0, again.output
        retried = {k: n - requests.get(k, 0) for k, n in server.requests.items()}
        assert {k: n for k, n in retried.items() if n} == {"infer:fail": requests["infer:fail"]}
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert list(metrics["modes"]) == ["embedding", "fused", "hybrid", "infer-hybrid", "cascade"]
    fused = metrics["shortlist"]["fused"]
    assert fused["mean_length"] == 20 and "difference" in fused
    llm = metrics["modes"]["infer-hybrid"]["llm"]
    assert llm["calls_per_1000_postings"] == 2000 and llm["fallbacks"] == 1
    assert metrics["modes"]["fused"]["llm"]["calls_per_1000_postings"] == 1000
    assert metrics["modes"]["infer-hybrid"]["sources"] == {"llm": 2, "fallback": 1}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "Against embedding-only" in report and "recall@20 - embedding's own" in report
    assert "fused shortlist recall@20" in first.output
    with Store(tmp_path / "store.duckdb") as store:
        stored = store.eval_results("fault-model")
    assert {(r["mode"], r["llm_stages"]) for r in stored} == {
        ("hybrid", "rerank"),
        ("infer-hybrid", "infer,rerank"),
    }


def test_examples_are_the_nearest_allowed_titles_and_never_a_held_out_one(taxonomy):
    from onet_llm.rerank.examples import ExamplePool, held_out_titles
    from onet_llm.shortlist.encoder import Encoder

    encoder = Encoder("default")
    held_out = sorted(held_out_titles())
    assert held_out  # the shipped reported_titles.csv has test titles
    # "Java Developer" itself is a held-out (validation) reported title: never an example.
    pairs = [("Staff Nurse", NURSE), ("RN", NURSE), ("Java Programmer", "15-1252.00"),
             ("Line Electrician", "47-2111.00"), (held_out[0], "47-2111.00"),
             ("Evaluated Title", "47-2111.00")]  # fmt: skip
    texts, codes = [t for t, _ in pairs], [c for _, c in pairs]
    pool = ExamplePool(
        taxonomy, encoder, texts, codes, encoder.encode(texts), blocked_titles=["evaluated title"]
    )
    assert held_out[0] not in pool.texts and "Evaluated Title" not in pool.texts
    assert "java developer" in held_out
    [examples] = pool.nearest(["Senior Java Software Developer"], 2)
    assert len(examples) == 2
    assert examples[-1] == {"title": "Java Programmer", "occupation": taxonomy.title("15-1252.00")}
    assert pool.nearest(["anything"], 0) == [[]]
