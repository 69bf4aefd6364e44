"""Main text and boilerplate: token P/R/F1 per set, plus line figures for scraped text.

Ours is the cleaning stage as the worker runs it (``Pipeline.run_stage("clean", raw)``:
contract validation, trafilatura for HTML, then the line rules). An article the stage
rejects (empty after cleaning, invalid) scores as an empty extraction. The baseline is
``trafilatura.extract(html)`` with its defaults for HTML sets and the raw text itself
(identity) for scraped-text sets.
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
from worker.evaluation.scoring import LineTally, TokenTally, line_figures, tokens

def _is_html_set(records: list[dict[str, Any]]) -> bool:
    return any(r.get("html") for r in records)


def _ours(resources):
    from worker.errors import EnrichError

    pipeline = resources.pipeline

    def run(record: dict[str, Any], index: int) -> tuple[str, dict[str, Any] | None, str | None]:
        try:
            doc = pipeline.run_stage("clean", raw_article(record, index))
        except EnrichError as exc:
            return "", None, exc.reason
        return doc.get("text") or "", doc, None

    return run


def _baseline(html_set: bool):
    if not html_set:
        return lambda record, index: (record.get("text") or "", None, None)
    import trafilatura

    def run(record: dict[str, Any], index: int) -> tuple[str, None, None]:  # noqa: ARG001
        return trafilatura.extract(record["html"]) or "", None, None

    return run


class _Diagnostics:
    """Where our stage loses: content it removed (by rule) and boilerplate it kept."""

    def __init__(self) -> None:
        self.removed_content: Counter = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.rejected: Counter = Counter()

    def add(self, doc: dict[str, Any] | None, gold: str, lost_lines: list[str] | None) -> None:
        if doc is None:
            return
        if lost_lines is not None:  # scraped text: we know exactly which content lines went
            from worker.stages.cleaning import normalise_line

            reasons = {r["text"]: r["reason"] for r in doc.get("removed") or []}
            for line in lost_lines:
                self._note(reasons.get(normalise_line(line), "(not removed by a rule)"), line)
            return
        # HTML: a removed line whose words are all gold words the output lacks was
        # probably content (an estimate: the gold is not aligned to trafilatura's lines).
        missing = Counter(tokens(gold)) - Counter(tokens(doc.get("text")))
        for entry in doc.get("removed") or []:
            words = Counter(tokens(entry["text"]))
            if words and not words - missing:
                missing -= words
                self._note(entry["reason"], entry["text"])

    def _note(self, reason: str, line: str) -> None:
        self.removed_content[reason] += 1
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(line[:120])

    def summary(self) -> dict[str, Any]:
        return {
            # scraped text: exact (line figures); HTML: estimated from missing gold words
            "content_lines_removed_by_rule": dict(self.removed_content.most_common()),
            "examples": dict(self.examples),
            "rejected": dict(self.rejected),
        }


def _evaluate_set(path: Path, resources, *, baseline: bool, limit: int | None,
                  progress: Progress) -> dict[str, Any]:
    records = readers.read_jsonl(path, limit)
    for number, record in enumerate(records, 1):
        if "gold_text" not in record or not (record.get("html") or record.get("text")):
            raise readers.DataError(f"{path}: item {number} lacks gold_text, or html/text")
    html_set = _is_html_set(records)
    systems = {"ours": _ours(resources)}
    if baseline:
        systems["baseline"] = _baseline(html_set)
    watch = Stopwatch()
    result: dict[str, Any] = {
        "name": readers.set_name(path), "path": str(path), "items": len(records),
        "kind": "html" if html_set else "text",
    }
    for system, run in systems.items():
        token_tally, line_tally, diagnostics = TokenTally(), LineTally(), _Diagnostics()
        for index, record in enumerate(records):
            with watch.time(system):
                text, doc, rejected = run(record, index)
            if rejected:
                diagnostics.rejected[rejected] += 1
            token_tally.add(text, record["gold_text"])
            lost = None
            if not html_set:
                figures = line_figures(record["text"], record["gold_text"], text)
                line_tally.add(figures)
                lost = figures.lost_content
            if system == "ours":
                diagnostics.add(doc, record["gold_text"], lost)
            if index % 20 == 0 or index == len(records) - 1:
                progress(f"clean {result['name']} {system}", index + 1, len(records))
        figures = token_tally.summary()
        if not html_set:
            figures.update(line_tally.summary())
        figures["rejected"] = sum(diagnostics.rejected.values())
        if system == "ours":
            result["diagnostics"] = diagnostics.summary()
        result[system] = figures
    result["seconds"] = watch.rounded()
    return result


def evaluate(path: Path, *, baseline: bool = False, limit: int | None = None,
             progress: Progress = no_progress) -> dict[str, Any]:
    files = readers.clean_files(path)
    resources = build_resources()
    return {
        "stage": "clean",
        "data": str(path),
        "limit": limit,
        "settings": stage_settings(resources.settings, "clean"),
        "sets": [
            _evaluate_set(f, resources, baseline=baseline, limit=limit, progress=progress)
            for f in files
        ],
    }


_TOKEN_ROWS = ("precision", "recall", "f1", "micro_f1", "empty_share")
_LINE_ROWS = ("line_precision", "line_recall", "line_f1", "articles_no_gold_line_lost",
              "articles_no_boilerplate_kept", "boilerplate_removed_share", "gold_lines_lost",
              "boilerplate_lines_kept")


def rows(result_set: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    ours, base = result_set["ours"], result_set.get("baseline") or {}
    names = [("items", None)] + [(f"token {m}", m) for m in _TOKEN_ROWS]
    if result_set["kind"] == "text":
        names += [(m.replace("_", " "), m) for m in _LINE_ROWS]
    out = []
    for label, key in names:
        if key is None:
            out.append((label, result_set["items"], result_set["items"] if base else None))
        else:
            out.append((label, ours.get(key), base.get(key)))
    return out


def notes(result_set: dict[str, Any]) -> list[str]:
    lines = []
    diagnostics = result_set.get("diagnostics") or {}
    removed = diagnostics.get("content_lines_removed_by_rule")
    if removed:
        lines.append("ours removed content lines, by rule: "
                     + ", ".join(f"{reason} {n}" for reason, n in removed.items()))
    kept = result_set["ours"].get("top_kept_boilerplate")
    if kept:
        lines.append("ours kept boilerplate: "
                     + ", ".join(f"{text!r} {n}" for text, n in kept[:10]))
    if diagnostics.get("rejected"):
        lines.append(f"ours rejected: {diagnostics['rejected']}")
    return lines
