"""What every stage evaluation shares: our stages built as the worker builds them, raw
articles from evaluation items, the settings recorded with the figures, timing, progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from worker.settings import Settings, get_settings

# (description, done, total) -> None; the CLI draws a progress bar with it.
Progress = Callable[[str, int, int], None]


def no_progress(description: str, done: int, total: int) -> None:  # noqa: ARG001
    return None


def build_resources(settings: Settings | None = None):
    """Our stages exactly as the worker runs them in embedded mode: ``Resources(...).pipeline``
    (cleaning, language, entities with the spaCy model registry, dedupe on a fresh in-memory
    index). Settings default to the worker's own (defaults, overridable by ENRICH_* variables,
    which makes tuning experiments possible without code changes)."""
    from worker.resources import Resources

    return Resources(settings or get_settings(), embedded=True)


RAW_FIELDS = ("url", "source", "title", "text", "html", "published_at")


def raw_article(record: dict[str, Any], index: int) -> dict[str, Any]:
    """An evaluation item as a raw article v1 for our clean stage.

    The id is the item's position (``eval-000042``): data ids such as ``x~v1`` break the
    contract's id pattern and would be rejected as invalid before any stage ran. Fields
    the contract does not know, and empty ones, are left out.
    """
    raw = {k: record[k] for k in RAW_FIELDS if record.get(k)}
    raw["id"] = f"eval-{index:06d}"
    return raw


def stage_settings(settings: Settings, stage: str) -> dict[str, Any]:
    """The settings that shape a stage's output, recorded with its figures."""
    fields = {
        "lang": ("language_sample_chars", "language_min_chars", "language_min_confidence",
                 "language_seed"),
        "clean": ("max_text_bytes", "max_html_bytes"),
        "ner": ("spacy_models",),
        "dedupe": ("dedupe_threshold", "dedupe_num_perm", "dedupe_shingle_size",
                   "dedupe_window_seconds"),
    }[stage]
    return {name: getattr(settings, name) for name in fields}


class Stopwatch:
    """Accumulated seconds of the timed blocks, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in self.seconds.items()}
