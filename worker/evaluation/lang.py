"""Language identification: accuracy per kind (article, sentence, word_pair, word) and per
language, abstentions (``und``) counted apart.

Ours is the language stage as the worker builds it, run on each item's text as the
document's cleaned text (no title, no hints: the items are already clean text, and the
data carries no scraper hint). The baseline is plain langdetect on the raw text, seeded
(``DetectorFactory.seed = 0``), zh-cn/zh-tw -> zh; a LangDetectException counts as ``und``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from worker.evaluation import readers
from worker.evaluation.base import Progress, Stopwatch, build_resources, no_progress, stage_settings
from worker.evaluation.scoring import UNDETERMINED, LanguageTally

KINDS = ("article", "sentence", "word_pair", "word")


def _ours(resources):
    pipeline = resources.pipeline

    def detect(index: int, text: str) -> str:
        doc = {"id": f"lang-{index}", "text": text, "title": None, "hints": {}}
        return pipeline.run_stage("language", doc)["language"]["code"]

    return detect


def _baseline():
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0

    def run(index: int, text: str) -> str:  # noqa: ARG001
        try:
            code = detect(text)
        except LangDetectException:
            return UNDETERMINED
        return "zh" if code.startswith("zh") else code

    return run


def _score(records: list[dict[str, Any]], predictions: list[str]) -> dict[str, Any]:
    by_kind: dict[str, LanguageTally] = defaultdict(LanguageTally)
    by_lang: dict[str, LanguageTally] = defaultdict(LanguageTally)
    by_kind_lang: dict[str, dict[str, LanguageTally]] = defaultdict(lambda: defaultdict(LanguageTally))
    overall = LanguageTally()
    for record, predicted in zip(records, predictions, strict=True):
        gold, kind = record["lang"], record.get("kind", "all")
        for tally in (by_kind[kind], by_lang[gold], by_kind_lang[kind][gold], overall):
            tally.add(gold, predicted)
    kinds = [k for k in KINDS if k in by_kind] + sorted(k for k in by_kind if k not in KINDS)
    confusions: Counter = Counter()
    for kind in kinds:
        confusions.update(by_kind[kind].confusions)
    return {
        "kinds": {kind: by_kind[kind].summary() for kind in kinds},
        "all": overall.summary(),
        "per_language": {lang: by_lang[lang].summary() for lang in sorted(by_lang)},
        "per_language_by_kind": {
            kind: {lang: t.summary() for lang, t in sorted(by_kind_lang[kind].items())}
            for kind in kinds
        },
        "top_confusions": [
            {"gold": g, "predicted": p, "count": n} for (g, p), n in confusions.most_common(25)
        ],
        "predicted_languages": len({p for p in predictions if p != UNDETERMINED}),
    }


def evaluate(path: Path, *, baseline: bool = False, limit: int | None = None,
             progress: Progress = no_progress) -> dict[str, Any]:
    data = readers.lang_file(path)
    records = readers.read_jsonl(data, limit)
    for number, record in enumerate(records, 1):
        if not isinstance(record.get("text"), str) or not record.get("lang"):
            raise readers.DataError(f"{data}: item {number} lacks text or lang")
    resources = build_resources()
    watch = Stopwatch()
    systems = {"ours": _ours(resources)}
    if baseline:
        systems["baseline"] = _baseline()
    result_set: dict[str, Any] = {"name": readers.set_name(data), "path": str(data),
                                  "items": len(records)}
    for system, detect in systems.items():
        predictions = []
        with watch.time(system):
            for index, record in enumerate(records):
                predictions.append(detect(index, record["text"]))
                if index % 200 == 0 or index == len(records) - 1:
                    progress(f"lang {system}", index + 1, len(records))
        result_set[system] = _score(records, predictions)
    result_set["seconds"] = watch.rounded()
    return {
        "stage": "lang",
        "data": str(data),
        "limit": limit,
        "settings": stage_settings(resources.settings, "lang"),
        "sets": [result_set],
    }


def rows(result_set: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(metric, ours, baseline) rows for the table."""
    ours, base = result_set["ours"], result_set.get("baseline")
    out = []
    for kind in list(ours["kinds"]) + ["all"]:
        o = ours["kinds"].get(kind) if kind != "all" else ours["all"]
        b = (base["kinds"].get(kind) if kind != "all" else base["all"]) if base else None
        out.append((f"{kind}: n", o["n"], b["n"] if b else None))
        for metric in ("accuracy", "abstention_share", "answered_accuracy"):
            out.append((f"{kind}: {metric}", o[metric], b[metric] if b else None))
    return out


def notes(result_set: dict[str, Any]) -> list[str]:
    lines = []
    for system in ("ours", "baseline"):
        figures = result_set.get(system)
        if not figures:
            continue
        top = ", ".join(f"{c['gold']}->{c['predicted']} {c['count']}"
                        for c in figures["top_confusions"][:10])
        lines.append(f"{system} top confusions: {top}")
        worst = sorted(figures["per_language"].items(), key=lambda kv: kv[1]["accuracy"])[:10]
        lines.append(f"{system} weakest languages (accuracy): "
                     + ", ".join(f"{lang} {f['accuracy']:.2f}" for lang, f in worst))
    return lines
