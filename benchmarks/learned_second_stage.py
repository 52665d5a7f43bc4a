"""Three learned second stages over the fusion shortlist, measured on whole-taxonomy validation
(issue 13). None is shipped: `eval/taxonomy.md` ("Learned second stages") has the figures.

    python benchmarks/learned_second_stage.py cross-encoder --out DIR [--groups 6400] [--json F]
    python benchmarks/learned_second_stage.py occupation-bias [--json F]
    python benchmarks/learned_second_stage.py prototypes [--json F]

1. `cross-encoder`: a cross-encoder that reads the query and one candidate occupation
   ("Title. Description") together and scores the pair. It starts from the shipped model's
   transformer with a new one-logit head, and is trained listwise (softmax over the gold and 4
   wrong candidates). Anchors are train-split reported titles, one noisy rewrite of each,
   8,000 alternate titles and the train-split dev ads (x3). Wrong candidates come from the
   shipped fusion shortlist, built without the held-out (validation and test) titles.
   Occupations that list the anchor as one of their titles are never negatives. On the
   validation sets it then reranks the top 20 of the fusion shortlist: alone, and as a
   weighted sum of the two scores after each is standardised within the row.
2. `occupation-bias`: one number per occupation, added to the fused score, so that
   occupations the shortlist systematically over- or under-ranks move. It costs nothing at
   search time. The biases are fitted (with a temperature, by softmax cross-entropy with an L2
   penalty) on train-split reported titles and one noisy rewrite of each. They are scored
   leave-one-out: the query's own title is masked from every occupation's exemplars, as
   evaluated titles are left out of the index.
3. `prototypes`: a learned correction to every occupation's centroid (1,016 x 384 numbers) and
   a bias, fitted the same way on every index title but the O*NET titles (each masked from the
   exemplars leave-one-out) and a noisy rewrite of 15,000 of them. It costs nothing at search
   time either: the corrected centroids replace the index's own.

Only validation splits are read; each set is searched in an index without its evaluated
titles (`taxonomy_representations.validation_sets`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from onet_llm.eval.metrics import ranking_summary
from onet_llm.resources import eval_data_file
from onet_llm.settings import Settings
from onet_llm.shortlist.encoder import Encoder, resolve_model_path
from onet_llm.shortlist.fusion import FusionIndex
from onet_llm.shortlist.index import load_or_build_index, normalise_title, occupation_entries
from onet_llm.shortlist.text import posting_text
from onet_llm.taxonomy import Taxonomy, load_taxonomy
from onet_llm.train.data import codes_listing_titles, held_out_reported_titles
from onet_llm.train.title_noise import noise_titles

REPO = Path(__file__).resolve().parent.parent
DEPTH = 20
MINING_DEPTH = 30
MINED_NEGATIVES = 7
NEGATIVES = 4
PAIR_TOKENS = 40
ALTERNATE_ANCHORS = 8000
AD_REPEATS = 3
CROSS_WEIGHTS = (0.25, 0.5, 0.75)
BIAS_PENALTIES = (1e-4, 1e-3, 1e-2)
BIAS_SCALES = (0.5, 1.0)
PROTOTYPE_PENALTIES = (1e-5, 1e-4, 1e-3)
PROTOTYPE_EPOCHS = 8
NOISY_PROTOTYPE_QUERIES = 15000


@cache
def representations():
    """`benchmarks/taxonomy_representations.py`, whose validation sets and top-codes ranking
    every route here is scored with (loaded once: `sys.path` gets the folder once)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import taxonomy_representations

    return taxonomy_representations


def validation_sets() -> list[tuple[str, list[str], list[str], list[str], list[str]]]:
    return representations().validation_sets()


def route_figures(
    name: str, routes: dict[str, np.ndarray], codes: list[str], golds: list[str]
) -> list[dict]:
    """Each route's figures on one validation set (its (queries x occupations) scores ranked
    to a shortlist of 20), printed as they come."""
    results = []
    for route, scores in routes.items():
        summary = ranking_summary(representations().top_codes(scores, codes, DEPTH), golds)
        print_row(name, route, summary)
        results.append({"data": name, "route": route, **summary})
    return results


def train_split_titles() -> pd.DataFrame:
    reported = pd.read_csv(eval_data_file("reported_titles.csv"), dtype=str, keep_default_na=False)
    return reported[reported["split"] == "train"]


def candidate_text(taxonomy: Taxonomy, code: str) -> str:
    occupation = taxonomy.occupation(code)
    return f"{occupation.title}. {occupation.description}"


def print_row(data: str, route: str, summary: dict) -> None:
    print(
        f"{data:30s} {route:30s} top1 {summary['top1']:.3f} top5 {summary['top5']:.3f} "
        f"r20 {summary['top20']:.3f} mrr10 {summary['mrr10']:.3f}",
        flush=True,
    )


# -- 1. cross-encoder ---------------------------------------------------------------------------


def cross_encoder_anchors(taxonomy: Taxonomy) -> list[tuple[str, str]]:
    held_out = {normalise_title(title) for title in held_out_reported_titles(taxonomy)}
    train = train_split_titles()
    anchors = list(zip(train["title"], train["onet_code"], strict=True))
    noisy = noise_titles(list(train["title"]), seed=7, variant=3)
    anchors += [(n.title, code) for n, code in zip(noisy, train["onet_code"], strict=True)]
    alternates = taxonomy.alternate_titles
    alternates = alternates[~alternates["title"].map(normalise_title).isin(held_out)]
    picked = alternates.sample(n=min(ALTERNATE_ANCHORS, len(alternates)), random_state=1)
    anchors += list(zip(picked["title"], picked["onet_code"], strict=True))
    ads = pd.read_csv(eval_data_file("dev_ads.csv"), dtype=str, keep_default_na=False)
    ads = ads[ads["split"] == "train"]
    rows = zip(ads["title"], ads["body"], ads["onet_code"], strict=True)
    anchors += [(posting_text(title, body), code) for title, body, code in rows] * AD_REPEATS
    return anchors


def cross_encoder_groups(
    taxonomy: Taxonomy, encoder: Encoder, cache_dir: Path, rng: random.Random
) -> list[tuple[str, str, list[str]]]:
    """(anchor, gold code, wrong codes by shortlist rank), shuffled."""
    anchors = cross_encoder_anchors(taxonomy)
    index = load_or_build_index(
        encoder, taxonomy, cache_dir, "fusion", held_out_reported_titles(taxonomy)
    )
    positions, _ = index.search(encoder.encode([anchor for anchor, _ in anchors]), MINING_DEPTH)
    listed = codes_listing_titles(taxonomy)
    groups = []
    for (anchor, code), row in zip(anchors, positions, strict=True):
        allowed = listed.get(normalise_title(anchor), set()) | {code}
        wrong = [taxonomy.codes[p] for p in row if taxonomy.codes[p] not in allowed]
        if len(wrong) < MINED_NEGATIVES:
            continue
        weights = [1.0 / (rank + 1) ** 0.5 for rank in range(len(wrong))]
        chosen: set[int] = set()
        while len(chosen) < MINED_NEGATIVES:
            chosen.add(rng.choices(range(len(wrong)), weights=weights)[0])
        negatives = [wrong[rank] for rank in sorted(chosen)][:NEGATIVES]
        groups.append((anchor, code, negatives))
    rng.shuffle(groups)
    print(f"groups: {len(groups)} from {len(anchors)} anchors", flush=True)
    return groups


def tokenized_pairs(tokenizer, queries: list[str], candidates: list[str]):
    """Query and candidate side by side, cut to `PAIR_TOKENS` together (the longer one first)."""
    return tokenizer(
        queries,
        candidates,
        truncation="longest_first",
        max_length=PAIR_TOKENS,
        padding=True,
        return_tensors="pt",
    )


def pair_scores(model, tokenizer, queries: list[str], candidates: list[str]) -> np.ndarray:
    scores = []
    with torch.inference_mode():
        for start in range(0, len(queries), 128):
            batch = tokenized_pairs(
                tokenizer, queries[start : start + 128], candidates[start : start + 128]
            )
            scores.append(model(**batch).logits[:, 0].float().numpy())
    return np.concatenate(scores)


def train_cross_encoder(groups: list, texts: dict[str, str], out: Path, batch: int, rate: float):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(42)
    path = resolve_model_path("default")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32
    )
    steps = -(-len(groups) // batch)
    warmup = max(1, steps // 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup)),
    )
    model.train()
    started, losses = time.perf_counter(), []
    for step in range(steps):
        part = groups[step * batch : (step + 1) * batch]
        queries = [anchor for anchor, _, negatives in part for _ in range(len(negatives) + 1)]
        candidates = [texts[c] for _, code, negatives in part for c in [code, *negatives]]
        encoded = tokenized_pairs(tokenizer, queries, candidates)
        logits = model(**encoded).logits[:, 0].view(len(part), NEGATIVES + 1)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(part), dtype=torch.long))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step == steps - 1:
            per_step = (time.perf_counter() - started) / (step + 1)
            print(
                f"step {step + 1}/{steps} loss {np.mean(losses[-50:]):.3f} {per_step:.2f} s/step",
                flush=True,
            )
    minutes = (time.perf_counter() - started) / 60
    print(f"trained {steps} steps in {minutes:.1f} min", flush=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.eval()
    return model, tokenizer


def standardised(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, keepdims=True) + 1e-6)


def cross_encoder(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(2)
    taxonomy = load_taxonomy()
    encoder = Encoder("default")
    cache_dir = Settings.load().index_cache_dir
    groups = cross_encoder_groups(taxonomy, encoder, cache_dir, random.Random(42))
    texts = {code: candidate_text(taxonomy, code) for code in taxonomy.codes}
    model, tokenizer = train_cross_encoder(
        groups[: args.groups], texts, args.out, args.batch, args.learning_rate
    )
    results = []
    for name, queries, golds, excluded, _ in validation_sets():
        index = load_or_build_index(encoder, taxonomy, cache_dir, "fusion", excluded)
        positions, fused = index.search(encoder.encode(queries), DEPTH)
        flat_queries = [query for query in queries for _ in range(DEPTH)]
        flat_candidates = [texts[taxonomy.codes[p]] for row in positions for p in row]
        started = time.perf_counter()
        cross = pair_scores(model, tokenizer, flat_queries, flat_candidates)
        pairs_per_second = len(flat_queries) / (time.perf_counter() - started)
        cross = cross.reshape(positions.shape)
        routes = {"fusion (shipped)": fused, "cross-encoder alone": cross}
        for weight in CROSS_WEIGHTS:
            routes[f"{weight} cross + {1 - weight} fusion (z)"] = weight * standardised(cross) + (
                1 - weight
            ) * standardised(fused)
        codes = np.array(taxonomy.codes)[positions]
        for route, scores in routes.items():
            order = np.argsort(-scores, axis=1, kind="stable")
            predictions = [list(row[o]) for row, o in zip(codes, order, strict=True)]
            summary = ranking_summary(predictions, golds)
            print_row(name, route, summary)
            results.append({"data": name, "route": route, **summary})
        print(f"  cross-encoder: {pairs_per_second:.0f} pairs/s", flush=True)
        results.append({"data": name, "cross_encoder_pairs_per_second": pairs_per_second})
    return results


# -- 2. per-occupation bias ---------------------------------------------------------------------


def title_rows(
    taxonomy: Taxonomy, entries
) -> tuple[dict[str, list[int]], list[tuple[str, int, int]]]:
    """Each normalised non-O*NET title's entry rows (to mask it leave-one-out), and every such
    entry as a (title, occupation position, row) training query. O*NET titles are left out of
    both: every index keeps them, and no evaluated title is one."""
    n = len(taxonomy)
    masked_rows: dict[str, list[int]] = {}
    queries: list[tuple[str, int, int]] = []
    pairs = zip(entries.texts[:-n], entries.positions[:-n], strict=True)
    for row, (text, position) in enumerate(pairs):
        title = normalise_title(text)
        if title != normalise_title(taxonomy.occupations[position].title):
            masked_rows.setdefault(title, []).append(row)
            queries.append((text, int(position), row))
    return masked_rows, queries


def leave_one_out_exemplar(
    index: FusionIndex, masked_rows: dict[str, list[int]], queries, query_titles
) -> np.ndarray:
    """Best-exemplar scores with each query's own title masked from every occupation's
    exemplars (`masked_rows`: normalised title -> its entry rows, O*NET titles left out, since
    every index keeps those)."""
    exemplar = np.empty((len(queries), index.n_occupations), dtype=np.float32)
    for start in range(0, len(queries), 256):
        similarities = queries[start : start + 256] @ index.entry_vectors.T
        for row, title in enumerate(query_titles[start : start + 256]):
            similarities[row, masked_rows.get(title, [])] = -1.0
        exemplar[start : start + 256] = np.maximum.reduceat(similarities, index.starts, axis=1)
    return exemplar


def leave_one_out_scores(
    index: FusionIndex, masked_rows: dict[str, list[int]], queries, query_titles
) -> np.ndarray:
    """Fused scores with each query's own title masked from every occupation's exemplars."""
    exemplar = leave_one_out_exemplar(index, masked_rows, queries, query_titles)
    weight = index.centroid_weight
    return weight * (queries @ index.centroids.T) + (1 - weight) * exemplar


def fit_bias(scores: np.ndarray, golds: np.ndarray, penalty: float) -> np.ndarray:
    """Per-occupation biases in the fused score's own units (Adam, 300 full-batch steps)."""
    features, targets = torch.tensor(scores), torch.tensor(golds)
    bias = torch.zeros(scores.shape[1], requires_grad=True)
    log_temperature = torch.tensor(float(np.log(0.05)), requires_grad=True)
    optimizer = torch.optim.Adam([bias, log_temperature], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        logits = features / log_temperature.exp() + bias
        loss = torch.nn.functional.cross_entropy(logits, targets) + penalty * (bias**2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (bias * log_temperature.exp()).numpy()


def occupation_bias(args: argparse.Namespace) -> list[dict]:
    taxonomy = load_taxonomy()
    encoder = Encoder("default")
    cache_dir = Settings.load().index_cache_dir
    held_out = held_out_reported_titles(taxonomy)
    index = load_or_build_index(encoder, taxonomy, cache_dir, "fusion", held_out)
    masked_rows, _ = title_rows(taxonomy, occupation_entries(taxonomy, "title_blend", held_out))
    train = train_split_titles()
    titles = list(train["title"])
    noisy = [rewrite.title for rewrite in noise_titles(titles, seed=11, variant=5)]
    golds = np.array([taxonomy.position[code] for code in train["onet_code"]] * 2)
    scores = leave_one_out_scores(
        index,
        masked_rows,
        encoder.encode(titles + noisy),
        [normalise_title(title) for title in titles] * 2,
    )
    biases = {penalty: fit_bias(scores, golds, penalty) for penalty in BIAS_PENALTIES}
    results = []
    for name, queries, gold_codes, excluded, _ in validation_sets():
        fused = load_or_build_index(encoder, taxonomy, cache_dir, "fusion", excluded).scores(
            encoder.encode(queries)
        )
        routes = {"fusion (shipped)": fused}
        for penalty, bias in biases.items():
            for scale in BIAS_SCALES:
                routes[f"+ {scale} x bias (L2 {penalty})"] = fused + scale * bias
        results += route_figures(name, routes, taxonomy.codes, gold_codes)
    return results


# -- 3. learned occupation prototypes -----------------------------------------------------------


def fit_prototypes(
    queries: np.ndarray,
    exemplar: np.ndarray,
    golds: np.ndarray,
    centroids: np.ndarray,
    centroid_weight: float,
    penalty: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A correction to every occupation's centroid, and a bias, learned so that the fused score
    (centroid weight x query . (centroid + correction) + the rest x leave-one-out best
    exemplar) ranks the gold first: softmax cross-entropy over all occupations with a learned
    temperature, L2 on the correction, Adam on mini-batches of 4,096."""
    torch.manual_seed(42)
    q, e, y = torch.tensor(queries), torch.tensor(exemplar), torch.tensor(golds)
    base = torch.tensor(centroids)
    correction = torch.zeros_like(base, requires_grad=True)
    bias = torch.zeros(len(base), requires_grad=True)
    log_temperature = torch.tensor(float(np.log(0.05)), requires_grad=True)
    optimizer = torch.optim.Adam([correction, bias, log_temperature], lr=0.002)
    for epoch in range(PROTOTYPE_EPOCHS):
        losses = []
        for batch in torch.randperm(len(q)).split(4096):
            optimizer.zero_grad()
            fused = (
                centroid_weight * (q[batch] @ (base + correction).T)
                + (1 - centroid_weight) * e[batch]
            )
            logits = fused / log_temperature.exp() + bias
            loss = torch.nn.functional.cross_entropy(logits, y[batch])
            (loss + penalty * (correction**2).sum()).backward()
            optimizer.step()
            losses.append(loss.item())
        size = correction.detach().norm(dim=1).mean().item()
        print(
            f"  L2 {penalty}: epoch {epoch + 1} loss {np.mean(losses):.3f} "
            f"mean correction norm {size:.3f}",
            flush=True,
        )
    with torch.no_grad():
        return correction.numpy(), (bias * log_temperature.exp()).numpy()


def occupation_prototypes(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(2)
    taxonomy = load_taxonomy()
    encoder = Encoder("default")
    cache_dir = Settings.load().index_cache_dir
    held_out = held_out_reported_titles(taxonomy)
    index = load_or_build_index(encoder, taxonomy, cache_dir, "fusion", held_out)
    masked_rows, entry_queries = title_rows(
        taxonomy, occupation_entries(taxonomy, "title_blend", held_out)
    )
    # Training queries: every index title but the O*NET titles, as it is (its vector is the
    # index's own), and a noisy rewrite of a sample of them, masked by its source title.
    rng = random.Random(42)
    sampled = rng.sample(entry_queries, min(NOISY_PROTOTYPE_QUERIES, len(entry_queries)))
    noisy = noise_titles([title for title, _, _ in sampled], seed=13, variant=1)
    clean_vectors = index.entry_vectors[[row for _, _, row in entry_queries]]
    vectors = np.concatenate([clean_vectors, encoder.encode([n.title for n in noisy])])
    titles = [normalise_title(title) for title, _, _ in entry_queries + sampled]
    golds = np.array([position for _, position, _ in entry_queries + sampled])
    print(f"prototype training queries: {len(vectors)} ({len(noisy)} noisy)", flush=True)
    exemplar = leave_one_out_exemplar(index, masked_rows, vectors, titles)
    fits = {
        penalty: fit_prototypes(
            vectors, exemplar, golds, index.centroids, index.centroid_weight, penalty
        )
        for penalty in PROTOTYPE_PENALTIES
    }
    results = []
    for name, queries, gold_codes, excluded, _ in validation_sets():
        evaluated = load_or_build_index(encoder, taxonomy, cache_dir, "fusion", excluded)
        query_vectors = encoder.encode(queries)
        fused = evaluated.scores(query_vectors)
        routes = {"fusion (shipped)": fused}
        for penalty, (correction, bias) in fits.items():
            adjusted = fused + evaluated.centroid_weight * (query_vectors @ correction.T)
            routes[f"prototypes (L2 {penalty})"] = adjusted
            routes[f"prototypes + bias (L2 {penalty})"] = adjusted + bias
        results += route_figures(name, routes, taxonomy.codes, gold_codes)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, help="also write the figures here")
    commands = parser.add_subparsers(dest="command", required=True)
    cross = commands.add_parser("cross-encoder", parents=[common])
    cross.add_argument("--out", type=Path, required=True, help="folder for the trained model")
    cross.add_argument("--groups", type=int, default=6400, help="training groups (anchors)")
    cross.add_argument("--batch", type=int, default=16, help="groups per step")
    cross.add_argument("--learning-rate", type=float, default=5e-5)
    commands.add_parser("occupation-bias", parents=[common])
    commands.add_parser("prototypes", parents=[common])
    args = parser.parse_args()
    run = {
        "cross-encoder": cross_encoder,
        "occupation-bias": occupation_bias,
        "prototypes": occupation_prototypes,
    }[args.command]
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
