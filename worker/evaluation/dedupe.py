"""Near-duplicate stream: pairwise P/R/F1 over transitively closed ``duplicate_of`` links.

Ours feeds the stream in order through the worker's clean stage (dedupe decides on the
cleaned text) and then its dedupe stage (``Deduplicator`` on a fresh ``MemoryIndex``, as in
embedded mode); the language and entity stages do not touch what dedupe sees and are not
run. A message the clean stage rejects gets no link (it stays a cluster of its own).
Throughput is the dedupe stage's own: articles / seconds spent in ``run_stage("dedupe")``.

The baseline is datasketch ``MinHashLSH`` (threshold 0.5, 128 permutations, in memory) on
the raw text: lower-cased ``\\w+`` words, 5-word shingles (a text of fewer words is one
shingle); each message queries the index, the earliest-arrived hit (no similarity check:
the first hit of the LSH query) is its ``duplicate_of``, and every message is inserted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from worker.evaluation import readers
from worker.evaluation.base import (
    Progress,
    Stopwatch,
    build_resources,
    no_progress,
    raw_article,
    stage_settings,
)
from worker.evaluation.scoring import close_links, pairwise_prf, tokens

BASELINE = {"threshold": 0.5, "num_perm": 128, "shingle_size": 5}


def _ours(records: list[dict[str, Any]], watch: Stopwatch, progress: Progress):
    from worker.errors import EnrichError

    resources = build_resources()  # a fresh in-memory index for this run
    pipeline = resources.pipeline
    links: dict[str, str | None] = {}
    data_id: dict[str, str] = {}  # our position id -> the data's id
    similarity: dict[str, float | None] = {}
    rejected: Counter = Counter()
    deduped = 0
    for index, record in enumerate(records):
        raw = raw_article(record, index)
        data_id[raw["id"]] = record["id"]
        try:
            with watch.time("ours_clean"):
                doc = pipeline.run_stage("clean", raw)
            with watch.time("ours_dedupe"):
                doc = pipeline.run_stage("dedupe", doc)
        except EnrichError as exc:
            rejected[exc.reason] += 1
            links[record["id"]] = None
        else:
            deduped += 1
            target = doc["dedupe"]["duplicate_of"]
            links[record["id"]] = data_id.get(target, target) if target else None
            similarity[record["id"]] = doc["dedupe"]["similarity"]
        if index % 100 == 0 or index == len(records) - 1:
            progress("dedupe ours", index + 1, len(records))
    seconds = watch.seconds.get("ours_dedupe", 0.0)
    clean_seconds = watch.seconds.get("ours_clean", 0.0)
    extra = {
        "rejected": dict(rejected),
        "dedupe_articles_per_second": deduped / seconds if seconds else 0.0,
        "clean_articles_per_second": len(records) / clean_seconds if clean_seconds else 0.0,
        "similarity": similarity,
    }
    return links, extra, resources.settings


def _baseline(records: list[dict[str, Any]], watch: Stopwatch, progress: Progress):
    from datasketch import MinHash, MinHashLSH

    size = BASELINE["shingle_size"]
    lsh = MinHashLSH(threshold=BASELINE["threshold"], num_perm=BASELINE["num_perm"])
    order: dict[str, int] = {}
    links: dict[str, str | None] = {}
    with watch.time("baseline"):
        for index, record in enumerate(records):
            words = tokens(record.get("text"))
            if len(words) <= size:
                grams = [" ".join(words)] if words else []
            else:
                grams = [" ".join(words[i:i + size]) for i in range(len(words) - size + 1)]
            minhash = MinHash(num_perm=BASELINE["num_perm"])
            minhash.update_batch([g.encode("utf-8") for g in grams])
            hits = lsh.query(minhash)
            links[record["id"]] = min(hits, key=order.__getitem__) if hits else None
            if record["id"] not in order:
                order[record["id"]] = index
                lsh.insert(record["id"], minhash)
            if index % 100 == 0 or index == len(records) - 1:
                progress("dedupe baseline", index + 1, len(records))
    seconds = watch.seconds["baseline"]
    return links, {"articles_per_second": len(records) / seconds if seconds else 0.0}


def kind_of(doc_id: str) -> str:
    """The variant kind an id names (``x~v1`` -> v1, ``x~tpl`` -> tpl), or ``original``."""
    return doc_id.rsplit("~", 1)[1] if "~" in doc_id else "original"


def link_outcomes(ids: list[str], links: dict[str, str | None],
                  gold: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per id kind: how each message's own link went.

    ``expected`` a link (an earlier message of its gold cluster exists) and got one into
    the right cluster (``linked``), into another cluster (``wrong_link``) or none
    (``missed``); or expected none and got one (``false_link``) or none (``alone``).
    """
    seen_clusters: set[str] = set()
    out: dict[str, Counter] = defaultdict(Counter)
    for doc_id in ids:
        cluster = gold[doc_id]
        expected = cluster in seen_clusters
        seen_clusters.add(cluster)
        target = links.get(doc_id)
        counts = out[kind_of(doc_id)]
        counts["n"] += 1
        if expected:
            if target is None:
                counts["missed"] += 1
            elif gold.get(target) == cluster:
                counts["linked"] += 1
            else:
                counts["wrong_link"] += 1
        else:
            counts["false_link" if target is not None else "alone"] += 1
    return {kind: dict(counts) for kind, counts in sorted(out.items())}


def link_errors(ids: list[str], links: dict[str, str | None], gold: dict[str, str],
                similarity: dict[str, float | None], limit: int = 20) -> dict[str, list]:
    """Examples of our wrong links (id, duplicate_of, similarity) and of missed duplicates
    (id, the earliest message of its gold cluster)."""
    first: dict[str, str] = {}
    wrong, missed = [], []
    for doc_id in ids:
        cluster = gold[doc_id]
        target = links.get(doc_id)
        if target is not None and gold.get(target) != cluster:
            wrong.append([doc_id, target, similarity.get(doc_id)])
        elif target is None and cluster in first:
            missed.append([doc_id, first[cluster]])
        first.setdefault(cluster, doc_id)
    return {"wrong_links": wrong[:limit], "wrong_links_total": len(wrong),
            "missed": missed[:limit], "missed_total": len(missed)}


def evaluate(path: Path, *, baseline: bool = False, limit: int | None = None,
             progress: Progress = no_progress) -> dict[str, Any]:
    stream_path, gold_path = readers.dedupe_files(path)
    records = readers.read_jsonl(stream_path, limit)
    for number, record in enumerate(records, 1):
        if not record.get("id"):
            raise readers.DataError(f"{stream_path}: item {number} has no id")
    all_gold = {g["id"]: g["cluster"] for g in readers.iter_jsonl(gold_path)}
    ids = [r["id"] for r in records]
    missing = [i for i in ids if i not in all_gold]
    if missing:
        raise readers.DataError(f"{gold_path}: no cluster for {len(missing)} stream ids, "
                                f"e.g. {missing[0]!r}")
    gold = {i: all_gold[i] for i in ids}
    watch = Stopwatch()
    result: dict[str, Any] = {"name": readers.set_name(stream_path.parent) or "dedupe",
                              "path": str(stream_path), "items": len(records)}
    links, extra, settings = _ours(records, watch, progress)
    similarity = extra.pop("similarity")
    result["ours"] = {**pairwise_prf(close_links(ids, links), gold), **extra,
                      "links": sum(v is not None for v in links.values()),
                      "by_kind": link_outcomes(ids, links, gold),
                      "errors": link_errors(ids, links, gold, similarity)}
    if baseline:
        links, extra = _baseline(records, watch, progress)
        result["baseline"] = {**pairwise_prf(close_links(ids, links), gold), **extra,
                              "links": sum(v is not None for v in links.values()),
                              "by_kind": link_outcomes(ids, links, gold)}
    result["seconds"] = watch.rounded()
    return {
        "stage": "dedupe",
        "data": str(path),
        "limit": limit,
        "settings": stage_settings(settings, "dedupe"),
        "baseline_params": BASELINE if baseline else None,
        "sets": [result],
    }


def rows(result_set: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    ours, base = result_set["ours"], result_set.get("baseline") or {}
    out = [("items", result_set["items"], result_set["items"] if base else None)]
    for metric in ("precision", "recall", "f1", "gold_pairs", "predicted_pairs", "true_pairs",
                   "links"):
        out.append((f"pairwise {metric}" if metric in ("precision", "recall", "f1") else metric,
                    ours[metric], base.get(metric)))
    out.append(("dedupe stage articles/s", ours["dedupe_articles_per_second"],
                base.get("articles_per_second")))
    return out


def notes(result_set: dict[str, Any]) -> list[str]:
    lines = []
    for system in ("ours", "baseline"):
        figures = result_set.get(system)
        if not figures:
            continue
        kinds = "; ".join(
            f"{kind}: " + " ".join(f"{k} {v}" for k, v in counts.items() if k != "n")
            for kind, counts in figures["by_kind"].items()
        )
        lines.append(f"{system} links by id kind: {kinds}")
    ours = result_set["ours"]
    lines.append(f"ours clean stage {ours['clean_articles_per_second']:.0f} articles/s; "
                 f"rejected {ours['rejected'] or 'none'}")
    return lines
