"""Cleaning stage: boilerplate lines go (each with a reason), the story stays."""

from __future__ import annotations

import unicodedata

import pytest

from worker.stages.cleaning import clean, clean_lines, html_language, normalise_line

REASONS = {"ad_marker", "navigation", "share", "newsletter", "footer", "duplicate", "title"}

STORY = [
    "The harbour council voted on Tuesday evening to keep the last passenger ferry running "
    "for at least five more years, after a petition signed by 3,000 residents.",
    "The ferry carries about 400 people a day between the old quay and the island, most of "
    "them commuters and schoolchildren.",
    "Councillors said the vote would be reviewed if fuel prices rose again next winter.",
]


def _seed_lines(seed_text: str) -> list[str]:
    return [line.strip() for line in seed_text.splitlines() if line.strip()]


def _removed_with(result: dict, reason: str) -> list[str]:
    return [r["text"] for r in result["removed"] if r["reason"] == reason]


# --- the seed article --------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_clean(seed_text):
    return clean({"id": "seed", "text": seed_text})


def test_seed_loses_every_advertisement_line(seed_clean, seed_text):
    """No line of the cleaned seed is an "Advertisement" marker, and each marker is recorded."""
    lines = seed_clean["text"].split("\n")
    assert "Advertisement" not in lines
    markers = sum(1 for line in _seed_lines(seed_text) if line == "Advertisement")
    assert markers >= 2
    assert _removed_with(seed_clean, "ad_marker") == ["Advertisement"] * markers


def test_seed_loses_trailing_latest_headlines(seed_clean):
    """The trailing "Latest Headlines" navigation line is gone and recorded as navigation."""
    assert "Latest Headlines" not in seed_clean["text"]
    assert "Latest Headlines" in _removed_with(seed_clean, "navigation")


def test_seed_doubled_photo_caption_kept_once(seed_clean, seed_text):
    """The photo caption the scraper delivered twice appears exactly once after cleaning."""
    lines = _seed_lines(seed_text)
    doubled = [line for line in dict.fromkeys(lines) if lines.count(line) == 2 and len(line) > 40]
    assert len(doubled) == 1, "the seed should contain exactly one doubled long line"
    caption = doubled[0]
    assert seed_clean["text"].count(caption) == 1
    assert caption in _removed_with(seed_clean, "duplicate")


def test_seed_title_inferred_from_headline(seed_clean, seed_text):
    """With no title given, the headline (first non-marker line) becomes the title and leaves the text."""
    headline = next(line for line in _seed_lines(seed_text) if line != "Advertisement")
    assert seed_clean["title"] == headline
    assert _removed_with(seed_clean, "title") == [headline]
    assert headline not in seed_clean["text"].split("\n")


def test_seed_every_removed_line_has_a_known_reason(seed_clean, seed_text):
    """Each removed line carries a reason from the known set and came from the input."""
    assert seed_clean["removed"]
    source_lines = set(_seed_lines(seed_text))
    for entry in seed_clean["removed"]:
        assert entry["reason"] in REASONS
        assert entry["text"] in source_lines


def test_seed_story_paragraphs_survive(seed_clean, seed_text):
    """Every long story line of the seed is still in the cleaned text."""
    kept = set(seed_clean["text"].split("\n"))
    for line in _seed_lines(seed_text):
        if len(line) > 200:
            assert line in kept


# --- own small fixtures ----------------------------------------------------------------------
def test_navigation_header_lines_removed():
    """Menu, Home, section names and skip links before the story are removed as navigation."""
    header = ["Skip to main content", "Menu", "Home", "News", "World", "Search"]
    text = "\n".join([*header, "Harbour council keeps its last ferry", *STORY])
    result = clean({"id": "nav", "text": text})
    assert _removed_with(result, "navigation") == header
    assert result["text"].split("\n") == STORY


def test_section_name_inside_story_is_kept():
    """A one-word section name is navigation only in the header; inside the story it stays."""
    text = "\n".join([STORY[0], "World", STORY[1]])
    kept, removed, _ = clean_lines(text, title="Ferry")
    assert kept.split("\n") == [STORY[0], "World", STORY[1]]
    assert removed == []


def test_share_newsletter_and_footer_lines_removed():
    """Share buttons, newsletter prompts, © lines and policy links go, each with its reason."""
    text = "\n".join([
        *STORY,
        "Share this article",
        "Facebook",
        "Twitter",
        "Sign up for our daily newsletter",
        "Subscribe now",
        "© 2025 Harbour Gazette Ltd",
        "Terms of use | Privacy policy",
        "All rights reserved.",
    ])
    result = clean({"id": "tail", "text": text, "title": "Ferry stays"})
    assert result["text"].split("\n") == STORY
    assert _removed_with(result, "share") == ["Share this article", "Facebook", "Twitter"]
    assert _removed_with(result, "newsletter") == ["Sign up for our daily newsletter", "Subscribe now"]
    assert _removed_with(result, "footer") == [
        "© 2025 Harbour Gazette Ltd", "Terms of use | Privacy policy", "All rights reserved.",
    ]


def test_sentence_mentioning_advertisement_is_kept():
    """Only lines that are wholly a marker go; a sentence containing the word stays."""
    line = "The council will spend more on advertisement of the ferry timetable this summer."
    kept, removed, _ = clean_lines("\n".join([STORY[0], line]), title="Ferry")
    assert line in kept.split("\n")
    assert removed == []


def test_text_is_nfc_normalised():
    """Decomposed accents come out composed (NFC)."""
    decomposed = "The cafe\u0301 on the quay reopened on Monday after a long winter of repairs to its roof."
    assert not unicodedata.is_normalized("NFC", decomposed)
    kept, _, _ = clean_lines(decomposed, title="Café")
    assert "café" in kept
    assert "e\u0301" not in kept
    assert unicodedata.is_normalized("NFC", kept)


def test_whitespace_folded_and_trimmed():
    """Runs of spaces, tabs and no-break spaces become one space; lines are trimmed; blank lines go."""
    text = "   The  mayor\u00a0said\t\tthat   the ferry   would stay in service for five years.  \n\n \t \n"
    kept, removed, _ = clean_lines(text, title="Ferry")
    assert kept == "The mayor said that the ferry would stay in service for five years."
    assert removed == []
    assert normalise_line("\u3000a \u2009 b\u202f") == "a b"


def test_given_title_repeated_as_first_line_removed_as_title():
    """The given title repeated as the first line (any case, punctuation) is removed as "title"."""
    title = "Harbour council keeps its last ferry"
    text = "\n".join(["HARBOUR COUNCIL KEEPS ITS LAST FERRY!", *STORY])
    result = clean({"id": "t", "text": text, "title": title})
    assert result["title"] == title
    assert result["removed"] == [{"text": "HARBOUR COUNCIL KEEPS ITS LAST FERRY!", "reason": "title"}]
    assert result["text"].split("\n") == STORY


def test_given_title_not_repeated_leaves_first_line():
    """A first line that is not the given title stays, and the given title is used."""
    title = "Ferry saved"
    text = "\n".join(["Harbour council keeps its last ferry", *STORY])
    result = clean({"id": "t", "text": text, "title": title})
    assert result["title"] == title
    assert result["text"].split("\n")[0] == "Harbour council keeps its last ferry"
    assert result["removed"] == []


def test_given_title_is_normalised():
    """The title given by the scraper is NFC-normalised and whitespace-folded."""
    result = clean({"id": "t", "text": "\n".join(STORY), "title": "  Cafe\u0301   reopens\t"})
    assert result["title"] == "Café reopens"


def test_short_repeated_lines_are_not_duplicates():
    """Lines shorter than the duplicate threshold may repeat (e.g. a short quote)."""
    text = "\n".join([STORY[0], "He said no.", STORY[1], "He said no."])
    kept, removed, _ = clean_lines(text, title="Ferry")
    assert kept.split("\n").count("He said no.") == 2
    assert removed == []


def test_long_repeated_line_removed_as_duplicate():
    """A long line seen earlier (ignoring case) is removed as a duplicate."""
    text = "\n".join([STORY[0], STORY[1], STORY[1].upper()])
    kept, removed, _ = clean_lines(text, title="Ferry")
    assert kept.split("\n") == [STORY[0], STORY[1]]
    assert removed == [{"text": STORY[1].upper(), "reason": "duplicate"}]


HTML_PAGE = """<!DOCTYPE html>
<html lang="de-DE">
<head><meta charset="utf-8"><title>Kegelrobben am Strand gezählt</title></head>
<body>
<header><nav><a href="/">Startseite</a> | <a href="/n">Nachrichten</a></nav></header>
<main><article>
<h1>Kegelrobben am Strand gezählt</h1>
<p>Am Sonntag haben freiwillige Helfer an der Nordseeküste mehr als zweihundert junge
Kegelrobben gezählt, so viele wie noch nie in einem Winter.</p>
<p>Die Zählung begann bei Sonnenaufgang, weil die Tiere dann am ruhigsten sind und die
Helfer sie kaum stören.</p>
<p>Die Naturschutzstation bittet Spaziergänger, mindestens dreißig Meter Abstand zu halten
und Hunde an der Leine zu führen.</p>
</article></main>
<footer><p>&copy; 2025 Küstenblatt</p></footer>
</body></html>
"""


@pytest.fixture(scope="module")
def html_clean():
    return clean({"id": "html", "html": HTML_PAGE, "language": "de"})


def test_html_main_text_extracted(html_clean):
    """HTML goes through trafilatura: the paragraphs stay, nav, footer and markup go."""
    text = html_clean["text"]
    assert "zweihundert junge" in text
    assert "Sonnenaufgang" in text
    assert "Abstand zu halten" in text
    assert "<" not in text and "Startseite" not in text and "Küstenblatt" not in text
    assert html_clean["content_from"] == "html"


def test_html_title_taken_from_page(html_clean):
    """With no title given, the page's title is used and its repetition is not in the text."""
    assert html_clean["title"] == "Kegelrobben am Strand gezählt"
    assert not html_clean["text"].startswith("Kegelrobben am Strand gezählt")


def test_html_lang_hint_from_html_element(html_clean):
    """<html lang="de-DE"> gives the hint html_lang "de"; the scraper's hint is kept too."""
    assert html_clean["hints"] == {"language": "de", "html_lang": "de"}


def test_html_does_not_leave_the_stage(html_clean):
    """The cleaned document carries no raw `html` key."""
    assert "html" not in html_clean


def test_html_language_from_meta_when_no_lang_attribute():
    """Without <html lang>, Content-Language meta gives the page language; none gives None."""
    page = '<html><head><meta http-equiv="Content-Language" content="fr-FR"></head><body></body></html>'
    assert html_language(page) == "fr"
    assert html_language("<html><body><p>x</p></body></html>") is None


def test_text_kept_when_html_has_no_main_text():
    """When trafilatura finds nothing in the HTML, the scraped text is cleaned instead."""
    result = clean({"id": "both", "html": "<html><body></body></html>", "text": "\n".join(STORY),
                    "title": "Ferry"})
    assert result["text"].split("\n") == STORY
    assert result["content_from"] == "text"
    assert "html" not in result


def test_clean_passes_through_identity_fields():
    """id, url, source, published_at and metadata travel unchanged."""
    doc = {"id": "a1", "url": "https://example.org/a1", "source": "gazette",
           "published_at": "2025-01-02T03:04:05", "metadata": {"k": [1, 2]},
           "text": "\n".join(STORY), "title": "Ferry"}
    result = clean(doc)
    for key in ("id", "url", "source", "published_at", "metadata"):
        assert result[key] == doc[key]
