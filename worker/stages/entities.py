"""Entity stage: cleaned text + language -> one entry per canonical entity.

The spaCy pipeline for the document's language comes from an injected lookup (the edge
loads models once per process); a language without a model gets ``entities: []`` and a
note saying why. Text is tagged paragraph by paragraph, so a 2 MB article never meets
spaCy's max_length and memory stays bounded (``memory_zone``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

# Named entities only: dates, numbers and quantities are not what readers search for.
DEFAULT_LABELS = frozenset(
    {"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW",
     "LANGUAGE", "PER", "MISC"}
)
_LEADING_ARTICLE = re.compile(r"^(the|The|THE)\s+")
_POSSESSIVE = re.compile(r"(['’]s|['’])$")
_MAX_CHUNK_CHARS = 100_000


def paragraphs(text: str) -> Iterable[tuple[int, str]]:
    """(offset, paragraph) for each non-empty line; long lines are cut at spaces."""
    offset = 0
    for line in text.split("\n"):
        start = 0
        while start < len(line):
            end = min(len(line), start + _MAX_CHUNK_CHARS)
            if end < len(line):
                space = line.rfind(" ", start, end)
                end = space if space > start else end
            if line[start:end].strip():
                yield offset + start, line[start:end]
            start = end
        offset += len(line) + 1


def _trim(text: str, start: int, end: int) -> tuple[str, int, int]:
    """Drop a leading 'the' and a trailing possessive from a mention, moving its offsets."""
    lead = _LEADING_ARTICLE.match(text)
    if lead:
        text, start = text[lead.end():], start + lead.end()
    tail = _POSSESSIVE.search(text)
    if tail and len(text) > len(tail.group(0)) + 1:
        text, end = text[: tail.start()], end - len(tail.group(0))
    return text, start, end


def canonicalise(mentions: list[tuple[str, str, int, int]]) -> list[dict[str, Any]]:
    """Group (text, label, start, end) mentions into canonical entities.

    Mentions that differ only in case or a leading "the" are one entity; a one-word
    person mention that is the surname of a longer person name in the same document
    (Putin -> Vladimir Putin) joins that person. The label is the majority label.
    """
    full_names: dict[str, str] = {}
    for text, label, _, _ in mentions:
        parts = text.split()
        if label in ("PERSON", "PER") and len(parts) > 1:
            full_names.setdefault(parts[-1].casefold(), text)
    groups: dict[str, dict[str, Any]] = {}
    for text, label, start, end in mentions:
        key = text.casefold()
        if label in ("PERSON", "PER") and " " not in text and key in full_names:
            key = full_names[key].casefold()
        group = groups.setdefault(key, {"names": Counter(), "labels": Counter(), "mentions": []})
        group["names"][text] += 1
        group["labels"][label] += 1
        group["mentions"].append({"start": start, "end": end})
    entities = []
    for group in groups.values():
        longest = max(group["names"], key=lambda n: (len(n.split()), group["names"][n]))
        entities.append(
            {
                "text": longest,
                "label": group["labels"].most_common(1)[0][0],
                "count": len(group["mentions"]),
                "mentions": sorted(group["mentions"], key=lambda m: m["start"]),
            }
        )
    entities.sort(key=lambda e: (-e["count"], e["mentions"][0]["start"]))
    return entities


class EntityTagger:
    """Tags entities with the spaCy pipeline that ``pipeline_for(language)`` returns."""

    def __init__(
        self,
        pipeline_for: Callable[[str], Any | None],
        labels: Iterable[str] = DEFAULT_LABELS,
    ) -> None:
        self.pipeline_for = pipeline_for
        self.labels = frozenset(labels)

    def mentions(self, nlp: Any, text: str) -> list[tuple[str, str, int, int]]:
        found = []
        chunks = list(paragraphs(text))
        with nlp.memory_zone():
            for (offset, _), parsed in zip(chunks, nlp.pipe(c for _, c in chunks), strict=True):
                for ent in parsed.ents:
                    if ent.label_ not in self.labels:
                        continue
                    span_text, start, end = _trim(
                        ent.text, offset + ent.start_char, offset + ent.end_char
                    )
                    if span_text.strip():
                        found.append((span_text, ent.label_, start, end))
        return found

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        code = (doc.get("language") or {}).get("code", "und")
        nlp = self.pipeline_for(code)
        if nlp is None:
            doc["entities"] = []
            doc.setdefault("pipeline", {}).setdefault("notes", {})["entities"] = (
                f"no entity model for language {code!r}"
            )
            return doc
        doc["entities"] = canonicalise(self.mentions(nlp, doc.get("text") or ""))
        return doc
