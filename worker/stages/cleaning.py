"""Cleaning stage: raw article (text and/or HTML) -> main text, with what was removed and why.

HTML goes through trafilatura first; its output, or scraped text, then goes through the
line rules below. Every dropped line is kept in ``removed`` with its reason, so nothing
disappears without a trace. The raw ``html`` does not leave this stage.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import trafilatura

# Lines that are wholly one of these are boilerplate; matched case-insensitively after
# whitespace is folded. Grouped by reason so each removed line says why it went.
_EXACT: dict[str, tuple[str, ...]] = {
    "ad_marker": (
        r"advertisements?",
        r"advertisement\s*[-–—:]\s*scroll to continue( reading)?",
        r"(story|article) continues (below|after) (this )?(advertisement|ad)",
        r"sponsored( content| links?| stories)?",
        r"paid (content|post|partner content)",
        r"promoted( content| stories)?",
        r"ad",
        r"anzeige",
        r"werbung",
        r"реклама\.?",
        r"на правах реклами",
        r"publicidad",
        r"publicité",
    ),
    "navigation": (
        r"skip to (main )?(content|navigation)",
        r"(main )?menu",
        r"search",
        r"home( page)?",
        r"sign in|log ?in|sign up|register|my account",
        r"live tv|watch live|listen live",
        r"breaking news",
        r"latest headlines",
        r"latest news",
        r"top stories",
        r"most (read|popular|viewed|shared)",
        r"related (articles|stories|content|news|topics|coverage)",
        r"more (stories|news|on this story|from [\w .-]{1,40})",
        r"you (may|might) also (like|be interested in)",
        r"trending( now)?",
        r"read more:?",
        r"see also:?",
        r"back to top",
        r"next article|previous article",
    ),
    "share": (
        r"share( this( article| story| page)?)?( on)?:?",
        r"facebook|twitter|x|email|e-mail|print|whatsapp|linkedin|telegram|reddit|pinterest",
        r"copy (the )?link|link copied",
        r"tweet|pin it",
        r"follow us( on [\w ,]+)?",
        r"comments?( \(\d+\))?",
        r"\d+ comments?",
    ),
    "newsletter": (
        r"sign up (for|to) (our |the )?(daily |weekly |free )?(\w+ )?newsletters?",
        r"subscribe( now| today)?( to (our |the )?(daily |weekly )?\w*( newsletter)?)?",
        r"get (our|the) (daily |weekly )?newsletter",
        r"newsletter",
    ),
    "footer": (
        r"(terms (of use|and conditions)|privacy( policy)?|cookie (settings|policy)|contact us|about us)"
        r"( *[|•·/] *(terms (of use|and conditions)|privacy( policy)?|cookie (settings|policy)"
        r"|contact us|about us|accessibility|advertise))*",
        r"all rights reserved\.?",
    ),
}

# Single-word section names are navigation only in the header (before the story starts).
_HEADER_ONLY = re.compile(
    r"(news|world|business|sport|sports|politics|opinion|culture|entertainment|health|science"
    r"|tech|technology|travel|video|videos|lifestyle|local|weather|economy|markets|uk|us|europe)",
    re.IGNORECASE,
)
_FOOTER_PREFIX = re.compile(r"^(©|\(c\)|copyright\b)", re.IGNORECASE)
_RULES = [
    (reason, re.compile("(?:" + "|".join(patterns) + r")", re.IGNORECASE))
    for reason, patterns in _EXACT.items()
]
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_SENTENCE_END = re.compile(r"[.!?…:;\"'”’»)]$")
_WORD = re.compile(r"\w+", re.UNICODE)
_HTML_LANG = re.compile(
    r"""<html\b[^>]*?\blang\s*=\s*["']?([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]+)?""", re.IGNORECASE
)
_META_LANG = re.compile(
    r"""<meta\b[^>]*?(?:http-equiv\s*=\s*["']?content-language["']?|property\s*=\s*["']og:locale["'])"""
    r"""[^>]*?content\s*=\s*["']?([A-Za-z]{2,3})""",
    re.IGNORECASE,
)
_DUPLICATE_MIN_CHARS = 30


def normalise_line(line: str) -> str:
    """NFC, whitespace folded, trimmed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", line)).strip()


def classify_line(line: str, *, in_header: bool) -> str | None:
    """Reason a normalised line is boilerplate, or None if it is content."""
    for reason, rule in _RULES:
        if rule.fullmatch(line):
            return reason
    if _FOOTER_PREFIX.match(line) and len(line) < 200:
        return "footer"
    if in_header and _HEADER_ONLY.fullmatch(line):
        return "navigation"
    return None


def _is_story_line(line: str) -> bool:
    """A line that starts the story proper: a sentence, or a long line."""
    return len(_WORD.findall(line)) >= 8 or bool(_SENTENCE_END.search(line) and len(line) > 40)


def _looks_like_headline(line: str) -> bool:
    words = len(_WORD.findall(line))
    return 3 <= words <= 30 and len(line) <= 250 and not line.endswith((".", ":", ";", ","))


def _same_text(a: str, b: str) -> bool:
    return " ".join(_WORD.findall(a.casefold())) == " ".join(_WORD.findall(b.casefold()))


def clean_lines(text: str, title: str | None) -> tuple[str, list[dict[str, str]], str | None]:
    """Drop boilerplate lines from scraped text.

    Returns (clean text, removed lines with reasons, inferred title or None).
    """
    kept: list[str] = []
    removed: list[dict[str, str]] = []
    seen: set[str] = set()
    inferred_title: str | None = None
    in_header = True
    for raw in text.splitlines():
        line = normalise_line(raw)
        if not line:
            continue
        reason = classify_line(line, in_header=in_header)
        key = line.casefold()
        if reason is None and len(line) >= _DUPLICATE_MIN_CHARS and key in seen:
            reason = "duplicate"
        if reason is None and in_header and not kept:
            # The headline: the given title repeated, or (no title given) the first line
            # of the story when it reads like one.
            if title and _same_text(line, title):
                reason = "title"
            elif not title and inferred_title is None and _looks_like_headline(line):
                inferred_title, reason = line, "title"
        if reason is not None:
            removed.append({"text": line, "reason": reason})
            continue
        if in_header and _is_story_line(line):
            in_header = False
        kept.append(line)
        seen.add(key)
    return "\n".join(kept), removed, inferred_title


def html_language(html: str) -> str | None:
    """The page's declared language (<html lang>, Content-Language, og:locale), if any."""
    head = html[:20_000]
    for pattern in (_HTML_LANG, _META_LANG):
        found = pattern.search(head)
        if found:
            return found.group(1).lower()
    return None


def extract_html(html: str) -> tuple[str, str | None]:
    """Main text and title of an HTML page (trafilatura), ('', None) when it finds nothing."""
    result = trafilatura.bare_extraction(
        html, with_metadata=True, include_comments=False, include_tables=True
    )
    if result is None:
        return "", None
    return result.text or "", result.title or None


def clean(doc: dict[str, Any]) -> dict[str, Any]:
    """Raw article dict -> cleaned document dict (no html; text, removed, title, hints)."""
    html = doc.get("html") or ""
    text = doc.get("text") or ""
    title = doc.get("title")
    hints = {"language": doc.get("language")}
    source_kind = "text"
    if html.strip():
        hints["html_lang"] = html_language(html)
        extracted, html_title = extract_html(html)
        title = title or html_title
        if extracted.strip() or not text.strip():
            text, source_kind = extracted, "html"
    cleaned, removed, inferred = clean_lines(text, title)
    return {
        "id": doc["id"],
        "url": doc.get("url"),
        "source": doc.get("source"),
        "title": normalise_line(title) if title else inferred,
        "published_at": doc.get("published_at"),
        "metadata": doc.get("metadata") or {},
        "hints": hints,
        "text": cleaned,
        "removed": removed,
        "content_from": source_kind,
        "pipeline": doc.get("pipeline") or {"timings_ms": {}, "notes": {}},
    }
