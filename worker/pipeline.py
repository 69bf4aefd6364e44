"""The chain: the order of the stages and what each one hands the next.

Order: clean -> language -> entities -> dedupe -> store.
- Cleaning comes first: language detection on markup or boilerplate ("Advertisement",
  menus, cookie lines) is worse than on the clean text, and every later stage wants clean
  text, not 38 KB of HTML. After it the raw HTML is gone from the document.
- Language before entities: it picks the spaCy model.
- Dedupe after cleaning, on the clean text, so one site's shared boilerplate never makes
  two stories look alike. It runs last of the stages so a failure in tagging never leaves
  an article indexed as canonical without a stored document to point to.

The same Pipeline object serves the Celery task (stage by stage, so a failure names its
stage and a retry resumes there) and embedded mode (Pipeline.process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from worker import __version__
from worker.contracts import EnrichedDocument, validate_raw
from worker.errors import Reject, Skip

Stage = Callable[[dict[str, Any]], dict[str, Any]]
STAGES = ("clean", "language", "entities", "dedupe")


class Pipeline:
    def __init__(
        self,
        stages: dict[str, Stage],
        *,
        max_text_bytes: int,
        max_html_bytes: int,
    ) -> None:
        self.stages = stages
        self.max_text_bytes = max_text_bytes
        self.max_html_bytes = max_html_bytes

    def validate(self, record: Any) -> dict[str, Any]:
        return validate_raw(
            record, max_text_bytes=self.max_text_bytes, max_html_bytes=self.max_html_bytes
        )

    def run_stage(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Run one stage, timing it; a Skip is noted in the document and the chain goes on."""
        if name == "clean":
            doc = self.validate(doc)
        started = time.perf_counter()
        try:
            doc = self.stages[name](doc)
        except Skip as exc:
            doc.setdefault("pipeline", {}).setdefault("notes", {})[name] = exc.message
        elapsed = (time.perf_counter() - started) * 1000
        pipeline = doc.setdefault("pipeline", {"timings_ms": {}, "notes": {}})
        pipeline.setdefault("timings_ms", {})[name] = round(elapsed, 3)
        if name == "clean" and not (doc.get("text") or "").strip():
            raise Reject("no main text left after cleaning", reason="empty_after_cleaning")
        return doc

    def run_many(self, name: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One stage over several documents in one go, for a stage that has ``many`` (dedupe:
        one index call for a batch); each document's timing is its share of the whole."""
        started = time.perf_counter()
        docs = self.stages[name].many(docs)
        share = round((time.perf_counter() - started) * 1000 / max(1, len(docs)), 3)
        for doc in docs:
            pipeline = doc.setdefault("pipeline", {"timings_ms": {}, "notes": {}})
            pipeline.setdefault("timings_ms", {})[name] = share
        return docs

    def process(self, record: Any) -> dict[str, Any]:
        """Every stage in order, in this process; returns the enriched document."""
        doc = record
        for name in STAGES:
            doc = self.run_stage(name, doc)
        return finish(doc)


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    """The stages' working document -> enriched document v1 (checked against the contract)."""
    pipeline = doc.get("pipeline") or {}
    notes = dict(pipeline.get("notes") or {})
    if doc.get("content_from"):
        notes.setdefault("content_from", doc["content_from"])
    enriched = {
        "schema_version": 1,
        "id": doc["id"],
        "url": doc.get("url"),
        "source": doc.get("source"),
        "title": doc.get("title"),
        "published_at": doc.get("published_at"),
        "language": doc["language"],
        "text": doc["text"],
        "removed": doc.get("removed") or [],
        "entities": doc.get("entities") or [],
        "dedupe": doc["dedupe"],
        "pipeline": {
            "version": __version__,
            "timings_ms": pipeline.get("timings_ms") or {},
            "notes": notes,
        },
        "metadata": doc.get("metadata") or {},
        "processed_at": datetime.now(UTC).isoformat(),
    }
    return EnrichedDocument.model_validate(enriched).model_dump(mode="json")
