"""Schema changes as numbered migrations, in the manner of simonw/llm's `migrations.py`.

Each `mNNN_*` function runs once, in order, inside a transaction, and is recorded in
`_migrations`, so a store written by an older version still opens. Never edit a migration that
has shipped; add a new one.
"""

from __future__ import annotations

from collections.abc import Callable

from onet_llm.store.db import Connection, now, transaction


def m001_runs(db: Connection) -> None:
    db.execute(
        """
        CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY,
            run_key VARCHAR NOT NULL,
            command VARCHAR NOT NULL,
            input_path VARCHAR,
            output_path VARCHAR,
            settings JSON,
            model_id VARCHAR,
            index_key VARCHAR,
            status VARCHAR NOT NULL,      -- running | done | failed
            rows_done BIGINT NOT NULL DEFAULT 0,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP
        )
        """
    )
    db.execute(
        """
        CREATE TABLE run_rows (
            run_id VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,   -- 1-based position in the input
            posting_id VARCHAR,
            title VARCHAR,
            body VARCHAR,
            shortlist JSON,               -- [{onet_code, onet_title, score}] best first
            labels JSON,                  -- [{onet_code, onet_title, score, ...}] best first
            source VARCHAR,               -- embedding | llm | fallback | error
            error VARCHAR,
            call_key VARCHAR,             -- the LLM call that chose the labels, if any
            PRIMARY KEY (run_id, row_number)
        )
        """
    )


def m002_llm_calls(db: Connection) -> None:
    """LLM calls, one row per distinct request (the cache), and a log of every request a run
    made, cache hits included (the ledger). Neither ever holds an API key."""
    db.execute(
        """
        CREATE TABLE calls (
            call_key VARCHAR PRIMARY KEY,  -- sha256 of model, prompt hash, schema hash, messages,
                                           -- parameters: the same request is never paid twice
            model VARCHAR NOT NULL,
            prompt_version VARCHAR NOT NULL,
            prompt_hash VARCHAR NOT NULL,
            schema_hash VARCHAR NOT NULL,
            request JSON,                  -- messages and parameters as sent (no secrets)
            response_raw VARCHAR,          -- the last response body's message content
            response_parsed JSON,          -- the validated answer, numbers mapped to codes
            tokens_in BIGINT,              -- summed over every attempt
            tokens_out BIGINT,
            cost_usd DOUBLE,               -- NULL: the model has no price, cost unknown
            latency_s DOUBLE,              -- summed over every attempt, waits included
            status VARCHAR NOT NULL,       -- ok | error; only ok rows are served from the cache
            error VARCHAR,
            attempts INTEGER,              -- HTTP requests made for this call
            validation_retries INTEGER,
            transport_retries INTEGER,
            created_at TIMESTAMP NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE call_log (
            request_id VARCHAR PRIMARY KEY,
            run_id VARCHAR,                -- NULL outside a labelling run
            call_key VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            cached BOOLEAN NOT NULL,       -- served from `calls` without any HTTP request
            status VARCHAR NOT NULL,       -- ok | error
            tokens_in BIGINT,
            tokens_out BIGINT,
            cost_usd DOUBLE,               -- 0 for a cache hit; NULL when unknown
            latency_s DOUBLE,
            attempts INTEGER,
            created_at TIMESTAMP NOT NULL
        )
        """
    )


def m003_review_decisions(db: Connection) -> None:
    """An auditor's accept or override of one row's top label. Rows are never updated: a later
    decision on the same row supersedes the earlier one, so the history stays auditable."""
    db.execute("CREATE SEQUENCE review_decision_ids START 1")
    db.execute(
        """
        CREATE TABLE review_decisions (
            decision_id BIGINT PRIMARY KEY DEFAULT nextval('review_decision_ids'),
            run_id VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,
            posting_id VARCHAR,
            action VARCHAR NOT NULL,          -- accept | override
            onet_code VARCHAR NOT NULL,       -- the label the reviewer settled on
            onet_title VARCHAR NOT NULL,
            previous_onet_code VARCHAR,       -- the label it replaces (NULL: the row had none)
            previous_onet_title VARCHAR,
            reviewer VARCHAR NOT NULL,
            note VARCHAR,
            decided_at TIMESTAMP NOT NULL
        )
        """
    )


def m004_kept_columns(db: Connection) -> None:
    """The input columns a run was asked to keep (`label --keep-columns`), as a JSON object
    per row, so that the output, rebuilt from the store, can carry them."""
    db.execute("ALTER TABLE run_rows ADD COLUMN kept JSON")


def m005_review_queues_and_samples(db: Connection) -> None:
    """Auditor workflow: per-reviewer queues (with overlap for agreement), seeded audit samples,
    and decisions that can be undone or mark an adjudication, still append-only.

    `undoes` names the decision an `undo` retracts; `role` is `review` for a queue decision and
    `adjudication` for the one that settles a disagreement. Older decisions read as reviews."""
    db.execute("ALTER TABLE review_decisions ADD COLUMN undoes BIGINT")
    db.execute("ALTER TABLE review_decisions ADD COLUMN role VARCHAR DEFAULT 'review'")
    db.execute("UPDATE review_decisions SET role = 'review' WHERE role IS NULL")
    db.execute("CREATE SEQUENCE review_assignment_ids START 1")
    db.execute(
        """
        CREATE TABLE review_queues (
            assignment_id BIGINT NOT NULL,    -- one `review assign`: the newest one counts
            run_id VARCHAR NOT NULL,
            reviewer VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,
            position BIGINT NOT NULL,         -- order in the reviewer's queue, from 1
            overlap BOOLEAN NOT NULL,         -- the row is also in another reviewer's queue
            assigned_at TIMESTAMP NOT NULL
        )
        """
    )
    db.execute("CREATE SEQUENCE review_sample_ids START 1")
    db.execute(
        """
        CREATE TABLE review_samples (
            sample_id BIGINT NOT NULL,        -- one `review sample`: the newest one counts
            run_id VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,
            stratify VARCHAR NOT NULL,        -- none | confidence | source
            stratum VARCHAR NOT NULL,         -- 'all' when not stratified
            stratum_rows BIGINT NOT NULL,     -- rows of the run in the stratum (N_h)
            stratum_sample BIGINT NOT NULL,   -- rows drawn from it (n_h)
            seed BIGINT NOT NULL,
            drawn_at TIMESTAMP NOT NULL
        )
        """
    )
    # Derived, rebuilt whenever a run has rows it lacks (store/reviews.py): the narrow columns
    # every review filter reads, so filters over a large run scan numbers instead of JSON.
    db.execute(
        """
        CREATE TABLE review_facts (
            run_id VARCHAR NOT NULL,
            row_number BIGINT NOT NULL,
            label_code VARCHAR,               -- the run's top-1 label
            label_title VARCHAR,
            embedding_code VARCHAR,           -- the embedding's top-1 (shortlist position 1)
            confidence DOUBLE,                -- the LLM's stated confidence in its top-1
            margin DOUBLE,                    -- embedding score of top-1 minus top-2
            PRIMARY KEY (run_id, row_number)
        )
        """
    )


def m006_eval_results(db: Connection) -> None:
    """One row per LLM mode of an `onet-llm eval`: its top-1 against embedding-only on the same
    rows, so `label` can warn when the model in use was measured to lower top-1."""
    db.execute(
        """
        CREATE TABLE eval_results (
            eval_id VARCHAR NOT NULL,
            llm_model VARCHAR NOT NULL,
            llm_stages VARCHAR NOT NULL,      -- rerank | infer,rerank
            mode VARCHAR NOT NULL,            -- hybrid | infer-hybrid | cascade | fused
            data_name VARCHAR NOT NULL,
            rows BIGINT NOT NULL,
            top1 DOUBLE NOT NULL,
            embedding_top1 DOUBLE NOT NULL,
            difference_low DOUBLE,
            difference_high DOUBLE,
            report VARCHAR,
            created_at TIMESTAMP NOT NULL
        )
        """
    )


def m007_batches_and_cached_tokens(db: Connection) -> None:
    """Cost at scale (issue 19): prompt tokens served from the server's prefix cache, and
    whether a call went synchronously or through the Batch API (priced at its own rate), on
    both the cache and the ledger; the batches a label run submitted and their requests, so a
    killed run resumes the same batch instead of uploading and paying again."""
    for table in ("calls", "call_log"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN cached_tokens BIGINT DEFAULT 0")
        db.execute(f"ALTER TABLE {table} ADD COLUMN mode VARCHAR DEFAULT 'sync'")  # sync | batch
        db.execute(f"UPDATE {table} SET cached_tokens = 0, mode = 'sync'")
    db.execute(
        """
        CREATE TABLE batches (
            batch_key VARCHAR PRIMARY KEY,    -- sha256 of the run id and the sorted custom_ids
            run_id VARCHAR,                   -- the label run that submitted it
            model VARCHAR NOT NULL,
            endpoint VARCHAR,                 -- base URL (never a key)
            requests BIGINT NOT NULL,
            bytes BIGINT NOT NULL,            -- size of the uploaded JSONL
            file_id VARCHAR,                  -- set once uploaded
            batch_id VARCHAR,                 -- set once created
            status VARCHAR NOT NULL,          -- prepared | uploaded | the server's status
                                              -- (validating ... completed, expired, cancelled)
                                              -- | processed (answers stored)
            completed BIGINT DEFAULT 0,       -- the server's request_counts
            failed BIGINT DEFAULT 0,
            output_file_id VARCHAR,
            error_file_id VARCHAR,
            answered BIGINT,                  -- lines stored as valid answers when processed
            cost_usd DOUBLE,                  -- of the answered lines, at the batch rate
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE batch_requests (
            batch_key VARCHAR NOT NULL,
            call_key VARCHAR NOT NULL,        -- the line's custom_id
            position BIGINT NOT NULL,         -- line number in the input file, from 0
            line VARCHAR NOT NULL,            -- the JSONL line as uploaded (no key)
            call JSON NOT NULL,               -- the `calls` identity columns and parameters
            status VARCHAR NOT NULL,          -- pending | ok | error
            error VARCHAR,                    -- why the line gave no usable answer
            PRIMARY KEY (batch_key, call_key)
        )
        """
    )


def m008_run_shards(db: Connection) -> None:
    """`label --engine ray`: the shards of a distributed run, one row each once its rows are
    committed (in the same transaction), so a killed run skips them when started again."""
    db.execute(
        """
        CREATE TABLE run_shards (
            run_id VARCHAR NOT NULL,
            shard INTEGER NOT NULL,
            first_row BIGINT NOT NULL,
            rows BIGINT NOT NULL,
            finished_at TIMESTAMP NOT NULL,
            PRIMARY KEY (run_id, shard)
        )
        """
    )


MIGRATIONS: list[Callable[[Connection], None]] = [
    m001_runs,
    m002_llm_calls,
    m003_review_decisions,
    m004_kept_columns,
    m005_review_queues_and_samples,
    m006_eval_results,
    m007_batches_and_cached_tokens,
    m008_run_shards,
]


def apply_migrations(db: Connection) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}
    applied = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        with transaction(db):
            migration(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", [migration.__name__, now()])
        applied.append(migration.__name__)
    return applied
