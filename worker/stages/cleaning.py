"""Cleaning stage: raw article (text and/or HTML) -> main text, with what was removed and why.

Every dropped line (or table cell) is kept in ``removed`` with its reason, so nothing
disappears without a trace. The raw ``html`` does not leave this stage.

HTML: trafilatura extracts the main text (after repairing two kinds of broken markup that
make it find nothing, see :func:`repair_html`), keeping its links as Markdown so that the
line rules can see how much of each line is link text. jusText then reads the same parsed
page for a second opinion: a long prose paragraph that trafilatura dropped although it kept
a paragraph of the same parent element goes back in at its place (:func:`restore_paragraphs`).
Then: a line or table cell that is mostly link text with few words of its own, or almost
all link text, is navigation (menus, lists of other stories, blogrolls); table rows are
judged cell by cell and lose their pipes; lines that are only a date or a time are page
furniture; a long line repeated *immediately* is a duplicate (further apart, it is a
quotation and stays). Readers' comments are not extracted unless asked (``include_comments``).

Scraped text is often hard-wrapped (every paragraph cut into lines of about 72 characters).
The rules look at input lines, so each removed entry is a line of the input, but they know
whether a line continues the previous one: a continuation line is never a headline, a
footer or a menu, however it starts. The kept lines of one wrapped paragraph are then
joined back into one line, so the output has one line per paragraph.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import justext
import trafilatura
from justext.core import ParagraphMaker, classify_paragraphs, define_stoplist
from lxml import etree
from trafilatura import external as trafilatura_external
from trafilatura.htmlprocessing import prune_unwanted_nodes
from trafilatura.metadata import examine_meta, extract_meta_json, extract_title
from trafilatura.settings import JUSTEXT_LANGUAGES
from trafilatura.xpaths import REMOVE_COMMENTS_AND_LISTS_XPATH

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
        r"most (read|popular|viewed|shared|emailed|commented)( articles| stories| news)?",
        r"related (articles|stories|content|news|topics|coverage|links)",
        r"more (stories|news|on this story|from [\w .-]{1,40})",
        r"you (may|might) also (like|be interested in)",
        r"trending( now)?",
        r"read more:?",
        r"see also:?",
        r"back to top|top of page",
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
        r"(e-?mail|send) (this )?(article |story |page )?to a friend",
        r"print(able)? (this )?(article|story|page|version)",
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
# One alternation, one named group per reason: a single fullmatch per line.
_RULES = re.compile(
    "|".join(f"(?P<{reason}>" + "|".join(patterns) + ")" for reason, patterns in _EXACT.items()),
    re.IGNORECASE,
)

# Single-word section names are navigation only in the header (before the story starts),
# and in HTML table cells (a layout table's menu), never inside the story.
_SECTION = re.compile(
    r"(news|world|business|sport|sports|politics|opinion|culture|entertainment|health|science"
    r"|tech|technology|travel|video|videos|lifestyle|local|weather|economy|markets|uk|us|europe"
    r"|environment)",
    re.IGNORECASE,
)
# A footer line starts with ©, (c) or the word Copyright as a capitalised notice (a wrapped
# story line may well start with the lower-case word "copyright"). Only © is never the
# start of a line that carries on a wrapped sentence ("(c)" may be an enumeration).
_FOOTER_PREFIX = re.compile(r"^(©|\(c\)|Copyright\b|COPYRIGHT\b)")
# A menu or breadcrumb: three or more short items between separators.
_MENU_SEPARATOR = re.compile(r"\s*[|•]\s*|\s+[·»>]\s+")
_MENU_ITEM_WORDS = 4
# Copyright notices anywhere in a short line ("vBulletin v3.6, Copyright ©2000-2006 ...").
_FOOTER_ANYWHERE = re.compile(
    r"©.*\b(1[89]|20)\d\d\b|\b(1[89]|20)\d\d\b.*©|\ball rights reserved\b", re.IGNORECASE
)
# A syndication or rights notice under an agency story: "This material may not be published,
# broadcast, rewritten or redistributed."; "Reproduction ... without express written permission
# ... is prohibited." A list of reuse verbs, or a reuse word, a ban and a missing permission in
# one short line ("may not be published under state law" is a story's sentence).
_REUSE_VERB = r"(re)?(published|broadcast|rewritten|redistributed|reproduced)"
_RIGHTS_NOTICE = re.compile(
    rf"\bmay not be {_REUSE_VERB}(,| or| and) {_REUSE_VERB}\b"
    r"|\b(reproduction|redistribution|republication|copying|reuse|rewriting)\b(?=.*\bprohibited\b)"
    r".*\bwithout (the )?(express |prior |written )*(permission|consent|authori[sz]ation|authority)\b",
    re.IGNORECASE,
)
_RIGHTS_NOTICE_CHARS = 300
# Page links: "1 2 3 4 Next", "« 1 2 3 »", "Pages: 1 2".
_PAGINATION = re.compile(
    r"(pages?\s*:?\s*)?((\d+(?!\d)|[«»‹›<>]|next|previous|prev|first|last|…|\.\.\.)\s*){3,}|pages?\s*:",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+")
# "Join our mailing list to receive ...", "Sign up for e-mail alerts and ...".
_NEWSLETTER_PROMPT = re.compile(
    r"(sign up|subscribe|join|register|get|receive)\b.*\b(newsletters?|mailing list|e-?mail"
    r" (alerts|updates|bulletins?)|alerts by e-?mail)\b",
    re.IGNORECASE,
)
# A line that is only a date and/or a time: every token one of these.
_TIME_WORD = re.compile(
    r"(\d{1,4}([-/.:]\d{1,4}){0,2}(am|pm|h)?|a\.?m\.?|p\.?m\.?|gmt|utc|bst|cet|cest|[ecmp][sd]t|et"
    r"|jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sep(t(ember)?)?|oct(ober)?"
    r"|nov(ember)?|dec(ember)?|mon(day)?|tue(s(day)?)?|wed(nesday)?|thu(rs(day)?)?|fri(day)?"
    r"|sat(urday)?|sun(day)?|posted|updated|published|last|modified|on|at|of|st|nd|rd|th|[-–—|,:()])",
    re.IGNORECASE,
)
_DATE_SHAPE = re.compile(r"\d[-/.:]\d|[^\W\d_]{3}")  # a date separator or a word, not a bare number
_TIME_TOKEN = re.compile(r"\w+(?:[-/.:]\w+)*|[^\w\s]")


def _is_timestamp(line: str) -> bool:
    """A line that is only a date and/or a time ("05-16-2005, 03:14 PM", "Wed, Jan 16 2008")."""
    if len(line) > 60 or not any(ch.isdigit() for ch in line) or not _DATE_SHAPE.search(line):
        return False
    return all(_TIME_WORD.fullmatch(token) for token in _TIME_TOKEN.findall(line))


def _is_pagination(line: str) -> bool:
    """Page links: "1 2 3 4 Next", "« 1 2 3 »", "Pages: 1 2" (numbers in sequence)."""
    if not _PAGINATION.fullmatch(line):
        return False
    numbers = [int(n) for n in _NUMBER.findall(line)]
    return not numbers or all(b == a + 1 for a, b in zip(numbers, numbers[1:]))


_SENTENCE_END = re.compile(r"[.!?…:;\"'”’»)]$")
# A sentence ends inside the line and another begins ("... Heitzmann. STANDARD: Wer ...");
# three lower-case letters before the stop rule out "U.S." and "Mr.".
_SECOND_SENTENCE = re.compile(r"[a-zß-öø-ÿа-яёіїєґ]{3}[.!?] +[^\W\d_]")
_OPENING_QUOTES = "\"'«»„“‘‚‹›"
_WORD = re.compile(r"\w+", re.UNICODE)
_HAS_WORD = re.compile(r"\w")
_FIRST_WORD = re.compile(r"\S+")
_HTML_LANG = re.compile(
    r"""<html\b[^>]*?\blang\s*=\s*["']?([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]+)?""", re.IGNORECASE
)
_META_LANG = re.compile(
    r"""<meta\b[^>]*?(?:http-equiv\s*=\s*["']?content-language["']?|property\s*=\s*["']og:locale["'])"""
    r"""[^>]*?content\s*=\s*["']?([A-Za-z]{2,3})""",
    re.IGNORECASE,
)
_TITLE_OPEN = re.compile(r"<title\b[^>]*>", re.IGNORECASE)
_TITLE_CLOSE = re.compile(r"</title\s*>", re.IGNORECASE)
_DUPLICATE_MIN_CHARS = 30
# trafilatura's text output with include_links: [link text](target), brackets in the text
# escaped; table cells between unescaped pipes.
_MD_LINK = re.compile(
    r"\[((?:[^\[\]\\]|\\.)*)\]\((?:<(?:[^<>\\]|\\.)*>|(?:[^()\s]|\([^()\s]*\))*)\)"
)
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_LINK_OPEN, _LINK_CLOSE = "\ue000", "\ue001"  # private-use marks around link text
_LINKED = re.compile("\ue000([^\ue000\ue001]*)\ue001")
_LINK_SHARE = 0.5  # a line or cell at least half link text ...
_OWN_WORDS = 20  # ... with fewer words outside its links is navigation
_LINK_LIST_SHARE = 0.8  # a line or cell this much link text is a link list, however long
# Readers' comments under a page's main text (the `include_comments` argument, from
# ENRICH_CLEAN_INCLUDE_COMMENTS). Off by default: they are not the article, NER on them
# tags the discussion (and costs as much again), and two copies of one syndicated story
# under different comment threads would no longer look like duplicates. Turning it on
# appends them to the text (what trafilatura.extract does by default) and is worth +0.02
# token F1 on CleanEval, whose gold counts comments as content, for -0.012 on L3S-GN1
# news pages, whose gold does not.
# Hard wrapping: widths seen in the wild are 60-80 columns (mail and news feeds wrap at 72).
_WRAP_MIN, _WRAP_MAX = 50, 100
_WRAP_SLACK = 10  # a wrapped line may overrun the width a little (quotes retyped after wrapping)


def normalise_line(line: str) -> str:
    """NFC, whitespace folded (zero-width spaces too), trimmed."""
    line = unicodedata.normalize("NFC", line)
    if "\u200b" in line:
        line = line.replace("\u200b", " ")
    return " ".join(line.split())


def _is_menu(line: str) -> bool:
    """Three or more short items between separators: "Home | News | Sport", "A » B » C"."""
    items = [item for item in _MENU_SEPARATOR.split(line) if item.strip()]
    if len(items) < 3:
        return False
    for item in items:
        words = len(item.split())
        if words > _MENU_ITEM_WORDS or (words > 1 and item.rstrip().endswith((".", "!", "?"))):
            return False
    return True


def classify_line(
    line: str, *, in_header: bool, continuation: bool = False, menus: bool = True,
    timestamps: bool = False,
) -> str | None:
    """Reason a normalised line is boilerplate, or None if it is content.

    ``continuation``: the line carries on a hard-wrapped paragraph (the previous line was
    full), so only whole-line markers can make it boilerplate, not its first word.
    ``menus``: whether separators can make it a menu (not for a table row, whose cells are
    judged one by one). ``timestamps``: whether a line that is only a date or time is page
    furniture (it is on a web page; in a scraper's text it may be the story's own
    "Saturday 20 November / 1300 GMT").
    """
    found = _RULES.fullmatch(line)
    if found:
        return found.lastgroup
    if continuation:
        return "footer" if line.startswith("©") and len(line) < 200 else None
    if len(line) < 200 and (_FOOTER_PREFIX.match(line) or _FOOTER_ANYWHERE.search(line)):
        return "footer"
    if len(line) < _RIGHTS_NOTICE_CHARS and _RIGHTS_NOTICE.search(line):
        return "footer"
    if len(line) < 160 and _NEWSLETTER_PROMPT.match(line):
        return "newsletter"
    if _is_pagination(line):
        return "navigation"
    if timestamps and _is_timestamp(line):
        return "timestamp"
    if in_header and _SECTION.fullmatch(line):
        return "navigation"
    if menus and ("|" in line or "•" in line or " · " in line or " » " in line or " > " in line) \
            and _is_menu(line):
        return "navigation"
    return None


def _is_story_line(line: str) -> bool:
    """A line that starts the story proper: a sentence, or a long line."""
    return len(_WORD.findall(line)) >= 8 or bool(_SENTENCE_END.search(line) and len(line) > 40)


def _looks_like_headline(line: str) -> bool:
    """3-30 words, one sentence at most, starting like a sentence and not ending like one."""
    words = len(_WORD.findall(line))
    return (
        3 <= words <= 30
        and len(line) <= 250
        and (line[0].isalnum() or line[0] in _OPENING_QUOTES)
        and not line.endswith((".", ":", ";", ","))
        and not _SECOND_SENTENCE.search(line)
    )


def _same_text(a: str, b: str) -> bool:
    return " ".join(_WORD.findall(a.casefold())) == " ".join(_WORD.findall(b.casefold()))


# --- hard-wrapped text ---------------------------------------------------------------------
def wrap_width(lengths: list[int]) -> int | None:
    """The column a hard-wrapped text was wrapped at, or None if it does not look wrapped.

    ``lengths``: the lengths of its non-blank lines as delivered (a wrapper counts every
    space, so these are measured before whitespace is folded). Wrapped text has most of its
    lines just under one width (a line ends where the next word would not fit); paragraphs
    delivered one per line do not.
    """
    lengths = sorted(n for n in lengths if n >= 20)
    if len(lengths) < 4:
        return None
    width = lengths[(len(lengths) - 1) * 9 // 10]
    if not _WRAP_MIN <= width <= _WRAP_MAX:
        return None
    near = sum(1 for n in lengths if 0.7 * width < n <= width + 3)
    return width if near >= 4 and 2 * near >= len(lengths) else None


def continues(previous: str, previous_length: int, line: str, width: int | None) -> bool:
    """Whether ``line`` carries on the paragraph of ``previous`` (``previous_length``
    characters as delivered) in text wrapped at ``width``: the previous line is full (the
    first word of this one would not have fitted on it), or this one starts in lower case
    after a previous line that does not end a sentence (wrappers do not all fill lines
    to the same width)."""
    if width is None or previous_length > width + _WRAP_SLACK:
        return False
    word = _FIRST_WORD.match(line)
    if word is None:
        return False
    if previous_length + 1 + len(word.group()) > width:
        return True
    return line[0].islower() and not previous.endswith((".", "!", "?", ":", "…"))


def _join(paragraph: list[str]) -> str:
    """The lines of one wrapped paragraph as one line (a word broken at its hyphen is rejoined)."""
    out = paragraph[0]
    for line in paragraph[1:]:
        if out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].isalpha():
            out += line
        else:
            out += " " + line
    return out


# --- the line rules ------------------------------------------------------------------------
def clean_lines(
    text: str, title: str | None, *, html: bool = False
) -> tuple[str, list[dict[str, str]], str | None]:
    """Drop boilerplate lines from scraped text (or from trafilatura's output, ``html=True``).

    Returns (clean text, removed lines with reasons, inferred title or None). Scraped text
    that is hard-wrapped comes back with one line per paragraph.
    """
    removed: list[dict[str, str]] = []
    lines: list[str] = []
    lengths: list[int] = []  # as delivered, for the wrap width
    rows: set[int] = set()  # indexes of table rows (HTML)
    if html:
        lines, rows = _html_lines(_mark_links(text).splitlines(), removed)
        lengths = [len(line) for line in lines]
    else:
        for raw in text.splitlines():
            line = normalise_line(raw)
            if line:
                lines.append(line)
                lengths.append(len(raw.rstrip()))
    width = None if html else wrap_width(lengths)
    kept: list[list[str]] = []  # paragraphs, each a list of input lines
    last_length = 0  # delivered length of the last kept line
    seen: set[str] = set()
    inferred_title: str | None = None
    in_header = True
    for index, line in enumerate(lines):
        continuation = bool(kept) and continues(kept[-1][-1], last_length, line, width)
        reason = classify_line(line, in_header=in_header, continuation=continuation,
                               menus=index not in rows, timestamps=html)
        key = line.casefold()
        if reason is None and len(line) >= _DUPLICATE_MIN_CHARS and key in seen:
            if not html or key == kept[-1][-1].casefold():
                reason = "duplicate"
        if reason is None and in_header and not kept:
            # The headline: the given title repeated, or (no title given) the first line
            # of the story when it reads like one and does not run on into the next line.
            if title and _same_text(line, title):
                reason = "title"
            elif (not title and inferred_title is None and _looks_like_headline(line)
                  and not _runs_on(line, lengths[index], lines[index + 1:], width, in_header)):
                inferred_title, reason = line, "title"
        if reason is not None:
            removed.append({"text": line, "reason": reason})
            continue
        if in_header and _is_story_line(line):
            in_header = False
        if continuation:
            kept[-1].append(line)
        else:
            kept.append([line])
        last_length = lengths[index]
        seen.add(key)
    return "\n".join(_join(p) for p in kept), removed, inferred_title


def _runs_on(line: str, length: int, following: list[str], width: int | None,
             in_header: bool) -> bool:
    """Whether the next of the ``following`` lines that is not a boilerplate marker
    continues ``line`` (``length`` characters as delivered)."""
    if width is None:
        return False
    for candidate in following:
        if classify_line(candidate, in_header=in_header, continuation=True) is None:
            return continues(line, length, candidate, width)
    return False


# --- trafilatura's text output -----------------------------------------------------------
def _mark_links(text: str) -> str:
    """trafilatura's Markdown links ``[text](target)`` -> their text between two marks
    (``_LINK_OPEN``, ``_LINK_CLOSE``), on one line, so each line can say how much of it is
    link text. The target goes."""
    if "](" not in text:
        return text

    def marked(found: re.Match) -> str:
        words = found.group(1).replace("\\[", "[").replace("\\]", "]").replace("\n", " ")
        return f"{_LINK_OPEN}{words}{_LINK_CLOSE}"

    return _MD_LINK.sub(marked, text)


def _html_unit(raw: str, removed: list[dict[str, str]], *, cell: bool) -> str:
    """One line or table cell of trafilatura's output: its text, or '' when it is boilerplate
    (recorded in ``removed`` with the reason). A line that is mostly link text with few
    words of its own (a menu, a list of other stories), or almost all link text however
    long (a blogroll), is navigation; a cell may also be a lone section name ("| World |")."""
    linked = own_words = 0
    if _LINK_OPEN in raw:
        linked = sum(len(normalise_line(words)) for words in _LINKED.findall(raw))
        own_words = len(_WORD.findall(_LINKED.sub(" ", raw)))
        raw = raw.replace(_LINK_OPEN, "").replace(_LINK_CLOSE, "")
    text = normalise_line(raw)
    if not _HAS_WORD.search(text):
        return ""
    reason = classify_line(text, in_header=True, timestamps=True) if cell else None
    if reason is None and linked and (linked >= _LINK_LIST_SHARE * len(text) or (
            linked >= _LINK_SHARE * len(text) and own_words < _OWN_WORDS)):
        reason = "navigation"
    if reason is not None:
        removed.append({"text": text, "reason": reason})
        return ""
    return text


def _html_lines(lines: list[str], removed: list[dict[str, str]]) -> tuple[list[str], set[int]]:
    """trafilatura's lines (with Markdown links) -> plain lines, link-text-heavy lines and
    cells removed, and which of them are table rows. A row ("| a | b \\| c |") keeps its
    content cells, " | "-separated."""
    out: list[str] = []
    rows: set[int] = set()
    for raw in lines:
        line = raw.strip()
        if line.startswith("|"):
            inner = line[1:-1] if line.endswith("|") and len(line) > 1 else line[1:]
            cells = (_html_unit(raw.replace("\\|", "|"), removed, cell=True)
                     for raw in _CELL_SEPARATOR.split(inner))
            text = " | ".join(cell for cell in cells if cell)
            if text:
                rows.add(len(out))
        else:
            text = _html_unit(line, removed, cell=False)
        if text:
            out.append(text)
    return out, rows


# --- HTML ------------------------------------------------------------------------------------
def html_language(html: str) -> str | None:
    """The page's declared language (<html lang>, Content-Language, og:locale), if any."""
    head = html[:20_000]
    for pattern in (_HTML_LANG, _META_LANG):
        found = pattern.search(head)
        if found:
            return found.group(1).lower()
    return None


def repair_html(html: str) -> str:
    """Undo two kinds of broken markup after which a parser sees no body text at all.

    - A ``<title>`` that is never closed: its text runs to the end of the document, so the
      whole page becomes the title. The open tag and its text (up to the next tag) go.
    - A fragment that does not start like a page (no "html" in its first characters):
      trafilatura refuses such input when it parses into fewer than two elements, so it
      is wrapped in ``<html>``.
    """
    opened = _TITLE_OPEN.search(html)
    if opened and not _TITLE_CLOSE.search(html, opened.end()):
        following = html.find("<", opened.end())
        html = html[: opened.start()] + (html[following:] if following >= 0 else "")
    if "html" not in html[:50].lower():
        html = "<html>" + html
    return html


def page_title(tree) -> str | None:
    """The page's title as trafilatura's metadata finds it (meta tags, JSON-LD, then the
    one <h1> or the <title>), without the rest of its metadata: dates and authors cost
    more than the text extraction itself and the stage does not use them."""
    try:
        found = examine_meta(tree)
        found = extract_meta_json(tree, found)
        return found.title or extract_title(tree)
    except Exception:  # noqa: BLE001 - a page whose metadata trafilatura cannot read has no title
        return None


def extract_html(
    html: str, *, include_comments: bool = False, restore: bool = True, language: str | None = None
) -> tuple[str, str | None]:
    """Main text and title of an HTML page (trafilatura), ('', None) when it finds nothing.

    The text keeps trafilatura's Markdown links (``include_links``) so that the line rules
    can tell a menu from a paragraph by its share of link text; ``clean_lines(html=True)``
    removes the link markup. The page is parsed once, for the title, the text and (with
    ``restore``) the paragraphs trafilatura dropped (:func:`restore_paragraphs`; ``language``,
    an ISO 639-1 code, picks jusText's stop words).
    """
    tree = trafilatura.load_html(repair_html(html))
    if tree is None:
        return "", None
    title = page_title(tree)
    # bare_extraction works on a copy of the tree: ``tree`` is still the whole page below.
    result = trafilatura.bare_extraction(
        tree, include_comments=include_comments, include_tables=True, include_links=True
    )
    if result is None:
        return "", title
    text = result.text or ""
    if include_comments and result.comments:
        text = f"{text}\n{result.comments}"
    if restore and text:
        text = restore_paragraphs(text, tree, include_comments=include_comments, language=language)
    return text, title


# --- paragraphs trafilatura dropped ----------------------------------------------------------
_SHINGLE = 3  # words: a paragraph is in the text when most of its word 3-grams are
_COVERED = 0.5
_PROSE_CHARS_PER_WORD = 10  # more is a run of glued URLs or codes, not prose
# Not text: jusText's own preprocessing drops these too (``form`` keeps its content: old
# pages wrap the whole body in one).
_NOT_TEXT = ("script", "style", "noscript", "head", "iframe", "object", "embed", "button",
             "input", "select", "option", "textarea", etree.Comment, etree.ProcessingInstruction)
_stoplists: dict[str, frozenset[str]] = {}


def _stoplist(language: str | None) -> frozenset[str]:
    """jusText's stop words for an ISO 639-1 code, or (unknown language) those of every
    language it knows: trafilatura's own list for its jusText fallback, which it loads on
    many pages anyway (about 35 MB), taken through the same cache so that it is held once."""
    key = language if language in JUSTEXT_LANGUAGES else "*"
    if key not in _stoplists:
        if key == "*":
            _stoplists[key] = define_stoplist(
                trafilatura_external.JT_STOPLIST or trafilatura_external.jt_stoplist_init())
        else:
            _stoplists[key] = frozenset(justext.get_stoplist(JUSTEXT_LANGUAGES[key]))
    return _stoplists[key]


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.casefold())
    if len(words) <= _SHINGLE:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


def restore_paragraphs(text: str, tree, *, include_comments: bool = False,
                       language: str | None = None) -> str:
    """trafilatura's ``text`` with the paragraphs of the page (``tree``, modified here) that
    it dropped from the elements it took paragraphs from, each at its place.

    trafilatura sometimes loses a paragraph in the middle of an article (an odd wrapper
    element, a paragraph of a table cell). jusText splits the page into paragraphs and
    judges each on its own: one that is long, mostly outside links and dense in stop words
    is prose. Such a paragraph comes back when trafilatura kept a sibling of it (a
    paragraph with the same parent element), so a sidebar or another article on the page,
    which trafilatura left out entirely, stays out. Readers' comments stay out unless asked
    for: their containers are pruned first, as trafilatura prunes them.
    """
    etree.strip_elements(tree, *_NOT_TEXT, with_tail=False)
    if not include_comments:
        prune_unwanted_nodes(tree, REMOVE_COMMENTS_AND_LISTS_XPATH)
    try:
        paragraphs = ParagraphMaker.make_paragraphs(tree)
    except Exception:  # noqa: BLE001 - a page jusText cannot walk keeps trafilatura's text
        return text
    lines = text.splitlines()
    line_of: dict[tuple[str, ...], int] = {}  # shingle -> first line holding it
    for index, line in enumerate(lines):
        for shingle in _shingles(_MD_LINK.sub(r"\1", line)):
            line_of.setdefault(shingle, index)
    found_at: list[int | None] = []  # per paragraph: the line it ends on, None if missing
    for paragraph in paragraphs:
        shingles = _shingles(paragraph.text)
        hits = [line_of[s] for s in shingles if s in line_of]
        found_at.append(max(hits) if shingles and len(hits) >= _COVERED * len(shingles) else None)
    kept_parents = {p.xpath.rpartition("/")[0] for p, at in zip(paragraphs, found_at)
                    if at is not None}
    candidates = [p for p, at in zip(paragraphs, found_at)
                  if at is None and p.xpath.rpartition("/")[0] in kept_parents]
    if not candidates:
        return text
    classify_paragraphs(candidates, _stoplist(language))
    restored = {id(p) for p in candidates if p.cf_class == "good"
                and len(p.text) <= _PROSE_CHARS_PER_WORD * p.words_count}
    if not restored:
        return text
    after: dict[int, list[str]] = {}  # line index (-1: before the first) -> paragraphs
    last = -1
    for paragraph, at in zip(paragraphs, found_at):
        if at is not None:
            last = max(last, at)
        elif id(paragraph) in restored:
            after.setdefault(last, []).append(normalise_line(paragraph.text))
    out = after.get(-1, [])
    for index, line in enumerate(lines):
        out.append(line)
        out.extend(after.get(index, ()))
    return "\n".join(out)


def clean(
    doc: dict[str, Any], *, include_comments: bool = False, restore: bool = True
) -> dict[str, Any]:
    """Raw article dict -> cleaned document dict (no html; text, removed, title, hints).

    ``restore``: put back the paragraphs trafilatura dropped from an HTML page's article
    (:func:`restore_paragraphs`; measured at 6-9 ms more per page, a third more).
    """
    html = doc.get("html") or ""
    text = doc.get("text") or ""
    title = doc.get("title")
    hints = {"language": doc.get("language")}
    source_kind = "text"
    if html.strip():
        hints["html_lang"] = html_language(html)
        extracted, html_title = extract_html(
            html, include_comments=include_comments, restore=restore,
            language=hints["html_lang"] or hints["language"],
        )
        title = title or html_title
        if extracted.strip() or not text.strip():
            text, source_kind = extracted, "html"
    cleaned, removed, inferred = clean_lines(text, title, html=source_kind == "html")
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
