"""The benchmark's articles: a JSON Lines corpus as raw article v1 records.

The shared corpus (``../shared/eval/corpus/news.jsonl``: ``{"id","title","text","lang",
"source"}``) by default, read by path, never copied. ``article(i)`` reuses it cyclically:
index ``i`` is record ``i % n``, with its own id from the second round on
(``bbc-business-001.r3``), so a run of any length publishes distinct ids.

The shared corpus is grouped by language (all English first), and English articles cost
several times the others (spaCy): a part of it is taken evenly spread (``spread``), so
every sample has the corpus' mix.

The corpus' ``lang`` is kept beside the record (for per-language figures), not sent as a
hint: the language stage does the work it does for a scraper that gives none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.evaluation.readers import DEFAULT_EVAL_DIR, DataError, iter_jsonl

DEFAULT_CORPUS = DEFAULT_EVAL_DIR / "corpus" / "news.jsonl"
RAW_FIELDS = ("url", "source", "title", "text", "html", "published_at")
_ID = re.compile(r"^[A-Za-z0-9._:\-/]{1,180}$")


@dataclass(frozen=True)
class Corpus:
    path: Path
    records: list[dict[str, Any]]
    langs: list[str]

    def __len__(self) -> int:
        return len(self.records)

    def article(self, index: int, tag: str = "") -> dict[str, Any]:
        """Raw article v1 number ``index`` (cyclic); ``tag`` prefixes the id (warm-up)."""
        record = self.records[index % len(self.records)]
        cycle = index // len(self.records)
        suffix = f".r{cycle}" if cycle else ""
        return {**record, "id": f"{tag}{record['id']}{suffix}"}

    def articles(self, start: int, count: int, tag: str = "") -> list[dict[str, Any]]:
        return [self.article(i, tag) for i in range(start, start + count)]

    def spread(self, count: int) -> list[int]:
        """``count`` indices with the corpus' mix: whole rounds of the corpus, then the rest
        evenly spread over it."""
        n = len(self.records)
        whole, rest = divmod(count, n)
        return [*range(whole * n), *(whole * n + k * n // rest for k in range(rest))]

    def interleaved(self, indices: list[int]) -> list[int]:
        """``indices`` reordered so that the languages take turns in proportion (each
        language's k-th of n at position k/n): a paced run then meets the corpus' mix all
        along, not the English third first (it costs several times the rest: at half of the
        average capacity, English alone would be near all of it)."""
        by_lang: dict[str, list[int]] = {}
        for index in indices:
            by_lang.setdefault(self.lang(index), []).append(index)
        keyed = [((k + 0.5) / len(group), lang, index)
                 for lang, group in sorted(by_lang.items()) for k, index in enumerate(group)]
        return [index for *_, index in sorted(keyed)]

    def lang(self, index: int) -> str:
        return self.langs[index % len(self.langs)]

    def chars(self, index: int) -> int:
        """Characters of the article's body as published (text + html)."""
        record = self.records[index % len(self.records)]
        return len(record.get("text") or "") + len(record.get("html") or "")


def load(path: Path | None = None) -> Corpus:
    """Read the corpus; records without text or html are left out (they are not articles)."""
    path = Path(path) if path is not None else DEFAULT_CORPUS
    if not path.is_file():
        hint = " (the shared corpus is expected beside the repository; pass a PATH)" \
            if path == DEFAULT_CORPUS else ""
        raise DataError(f"corpus not found: {path}{hint}")
    records, langs, seen = [], [], set()
    for number, item in enumerate(iter_jsonl(path)):
        raw = {k: item[k] for k in RAW_FIELDS if isinstance(item.get(k), str) and item[k]}
        if not (raw.get("text") or raw.get("html")):
            continue
        given = item.get("id")
        doc_id = given if isinstance(given, str) and _ID.match(given) else f"doc-{number:06d}"
        raw["id"] = doc_id if doc_id not in seen else f"{doc_id}.d{number}"
        seen.add(raw["id"])
        records.append(raw)
        lang = item.get("lang") or item.get("language") or "?"
        langs.append(str(lang).split("-")[0].lower())
    if not records:
        raise DataError(f"no articles (records with text or html) in {path}")
    return Corpus(path, records, langs)


def warmup_indices(corpus: Corpus, count: int) -> list[int]:
    """``count`` indices from the end of the corpus, taking the languages in turn, so that a
    warm-up meets every model the run will need."""
    by_lang: dict[str, list[int]] = {}
    for index in reversed(range(len(corpus))):
        by_lang.setdefault(corpus.langs[index], []).append(index)
    queues = sorted(by_lang.values(), key=len, reverse=True)
    chosen: list[int] = []
    while len(chosen) < min(count, len(corpus)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen
