"""Cleaning stage: boilerplate lines go (each with a reason), the story stays."""

from __future__ import annotations

import json
import textwrap
import unicodedata

import pytest

from worker.evaluation.scoring import TokenTally, line_figures
from worker.stages.cleaning import (
    clean,
    clean_lines,
    extract_html,
    html_language,
    normalise_line,
    repair_html,
    wrap_width,
)

REASONS = {"ad_marker", "navigation", "share", "newsletter", "footer", "duplicate", "title",
           "timestamp"}

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


# --- hard-wrapped scraped text -----------------------------------------------------------------
MORE_STORY = [
    "Ticket prices will stay at their current level until the end of the summer, the council's "
    "transport committee confirmed, although a review of concession fares is planned.",
    "The operator, which has run the route since 1987, welcomed the decision and said it would "
    "repaint both vessels before the busy season begins in May.",
]


def _wrapped(paragraphs: list[str], width: int = 72) -> list[str]:
    return [line for paragraph in paragraphs for line in textwrap.wrap(paragraph, width)]


def test_wrapped_first_line_is_not_taken_for_a_headline():
    """With no title, the first line of a hard-wrapped paragraph has no final stop, but it
    runs on into the next line: it stays in the story and is not inferred as the title."""
    lines = _wrapped(STORY + MORE_STORY)
    assert not lines[0].endswith(".")
    result = clean({"id": "w", "text": "\n".join(["Menu", "Search", *lines])})
    assert result["title"] is None
    assert _removed_with(result, "title") == []
    assert result["text"].split("\n") == STORY + MORE_STORY


def test_wrapped_paragraphs_come_back_one_line_each_around_markers():
    """Wrapped lines are joined into their paragraphs, also across an ad marker the scraper
    put between two lines of one paragraph; the marker is removed with its reason."""
    lines = _wrapped(STORY + MORE_STORY)
    lines.insert(1, "Advertisement")
    lines.insert(len(lines) - 2, "Story continues below advertisement")
    text = "\n".join([*lines, "Share this article", "© 2025 Harbour Gazette Ltd"])
    result = clean({"id": "w", "text": text, "title": "Ferry stays"})
    assert result["text"].split("\n") == STORY + MORE_STORY
    assert [r["reason"] for r in result["removed"]] == ["ad_marker", "ad_marker", "share", "footer"]


def test_wrapped_text_keeps_a_real_headline():
    """A short headline line above a wrapped story does not run on into it: it is the title."""
    headline = "Harbour council keeps its last ferry"
    result = clean({"id": "w", "text": "\n".join([headline, *_wrapped(STORY + MORE_STORY)])})
    assert result["title"] == headline
    assert result["text"].split("\n") == STORY + MORE_STORY


def test_wrap_width_is_measured_as_delivered():
    """A scraper that wrapped text with doubled spaces counted them: the first line is full
    as delivered even though it is short once spaces are folded."""
    spaced = "The  harbour  council  voted  on Tuesday evening to keep the last"
    lines = [spaced, "passenger ferry running for at least five more years, after a petition",
             *_wrapped(["signed by 3,000 residents. " + STORY[1], MORE_STORY[0]])]
    result = clean({"id": "w", "text": "\n".join(lines)})
    assert result["title"] is None
    assert result["text"].startswith("The harbour council voted on Tuesday evening to keep the "
                                      "last passenger ferry running")


def test_wrapped_line_starting_with_copyright_is_story():
    """A wrapped story line that begins with "copyright" (even capitalised, as in "Copyright
    Office") carries on its sentence and stays; a © notice after the story is a footer."""
    lines = [
        "Two men from the town pleaded guilty on Friday to charges that they had",
        "infringed the film studios' rights by sharing hundreds of films and the",
        "copyright owners asked for damages of more than a million pounds each.",
        "The judge said the scale of the sharing was unusual and read a letter",
        "from the chairman of the US Senate committee that oversees the federal",
        "Copyright Office to the court before sentencing both men on Friday.",
    ]
    text = "\n".join([*lines, "© 2025 Harbour Gazette Ltd. All rights reserved."])
    result = clean({"id": "c", "text": text, "title": "Film sharers plead guilty"})
    assert result["text"] == " ".join(lines)
    assert result["removed"] == [
        {"text": "© 2025 Harbour Gazette Ltd. All rights reserved.", "reason": "footer"}
    ]


def test_unwrapped_text_is_not_joined():
    """Paragraphs delivered one per line (the seed's way) are not mistaken for wrapped text."""
    lengths = [len(p) for p in STORY + MORE_STORY]
    assert wrap_width(lengths) is None
    kept, _, _ = clean_lines("\n".join(STORY + MORE_STORY), title="Ferry")
    assert kept.split("\n") == STORY + MORE_STORY


def test_menu_lines_are_navigation_sentences_with_separators_are_not():
    """Three or more short items between separators are a menu; a sentence is not."""
    menu = "Home | News | Sport | Weather | Contact"
    crumbs = "Home > Local news > Harbour"
    sentence = "The vote was close: 12 | 10 | 2 abstentions, the clerk said after the meeting ended."
    kept, removed, _ = clean_lines("\n".join([STORY[0], menu, crumbs, sentence]), title="Ferry")
    assert kept.split("\n") == [STORY[0], sentence]
    assert removed == [{"text": menu, "reason": "navigation"},
                       {"text": crumbs, "reason": "navigation"}]


def test_copyright_notice_inside_a_line_and_newsletter_prompt_removed():
    """A short line carrying a © notice anywhere, and a mailing-list prompt, are removed."""
    notice = "Powered by Forum Software 3.6, Copyright ©2000-2006 Example Ltd."
    prompt = "Join our mailing list to receive the latest ferry news by e-mail every week!"
    kept, removed, _ = clean_lines("\n".join([STORY[0], notice, prompt]), title="Ferry")
    assert kept == STORY[0]
    assert removed == [{"text": notice, "reason": "footer"},
                       {"text": prompt, "reason": "newsletter"}]


def test_timestamp_line_is_kept_in_scraped_text():
    """A date-and-time line in a scraper's text may be the story's own (a match time): kept."""
    kept, removed, _ = clean_lines("\n".join([STORY[0], "Saturday 20 November", "1300 GMT"]),
                                   title="Ferry")
    assert kept.split("\n") == [STORY[0], "Saturday 20 November", "1300 GMT"]
    assert removed == []


# --- HTML beyond trafilatura -------------------------------------------------------------------
def _page(body: str, head: str = "<title>Ferry stays</title>") -> str:
    return f"<html><head>{head}</head><body>{body}</body></html>"


ARTICLE_HTML = "".join(f"<p>{p}</p>" for p in STORY + MORE_STORY)


def test_html_layout_table_cells_are_judged_one_by_one():
    """Table cells come out without pipes: section-name and menu cells are removed with their
    reason, content cells stay."""
    body = ("<table><tr><td>World</td><td>Related Articles</td></tr>"
            f"<tr><td><p>{STORY[0]}</p></td><td>Business</td></tr>"
            f"<tr><td><p>{STORY[1]}</p></td></tr></table>"
            + "".join(f"<p>{p}</p>" for p in MORE_STORY))
    result = clean({"id": "t", "html": _page(body)})
    lines = result["text"].split("\n")
    assert STORY[0] in lines and STORY[1] in lines
    assert not any(line.startswith("|") or line.endswith("|") for line in lines)
    assert {"text": "World", "reason": "navigation"} in result["removed"]
    assert {"text": "Related Articles", "reason": "navigation"} in result["removed"]
    assert {"text": "Business", "reason": "navigation"} in result["removed"]


def test_html_link_lists_are_navigation_inline_links_are_not():
    """A line that is mostly link text with few words of its own (other stories, a menu)
    is navigation; a paragraph with a link inside it stays, without the link markup."""
    others = ('<p><a href="/a">Seal pups counted on the spit</a> '
              '<a href="/b">New bridge opens to cyclists</a> '
              '<a href="/c">Lighthouse keeper retires</a></p>')
    linked = ('<p>The ferry carries about 400 people a day, according to '
              '<a href="https://example.org/report">the operator\'s annual report</a>, '
              'most of them commuters and schoolchildren from the island.</p>')
    result = clean({"id": "l", "html": _page(ARTICLE_HTML + linked + others)})
    assert "according to the operator's annual report, most of them" in result["text"]
    assert "](" not in result["text"] and "example.org" not in result["text"]
    assert "Lighthouse keeper retires" not in result["text"]
    assert any(r["reason"] == "navigation" and "Lighthouse keeper" in r["text"]
               for r in result["removed"])


def test_html_long_link_list_is_navigation_however_many_words_of_its_own():
    """A blogroll line that is almost all link text is navigation even with 20+ words outside
    its links; a story line with a few inline links stays."""
    roll = "<p>" + " ".join(f"<a href='/b{i}'>The weblog of writer number {i}</a> ({i})"
                            for i in range(25)) + "</p>"
    inline = ("<p>The <a href='/council'>harbour council</a> published the full <a href='/vote'>"
              "vote</a> on its website on Wednesday morning.</p>")
    result = clean({"id": "r", "html": _page(f"<article>{ARTICLE_HTML}{inline}{roll}</article>")})
    assert "weblog of writer" not in result["text"]
    assert [r["reason"] for r in result["removed"] if "weblog" in r["text"]] == ["navigation"]
    assert result["text"].split("\n") == STORY + MORE_STORY + [
        "The harbour council published the full vote on its website on Wednesday morning."]


def test_rights_notice_under_an_agency_story_is_footer():
    """"This material may not be published, broadcast, rewritten or redistributed." and its
    kind are footer lines; story sentences about consent, copying or publishing stay."""
    notices = ["Copyright 2008 The Associated Press. All rights reserved. This material may not "
               "be published, broadcast, rewritten or redistributed.",
               "Reproduction in whole or in part in any form or medium without express written "
               "permission of Example Publications, Inc. is prohibited."]
    story = ["Police took DNA samples without consent from 40 people, the report said.",
             "The court heard that copying the files had been prohibited by the old contract.",
             "The names of the victims may not be published under state law."]
    kept, removed, _ = clean_lines("\n".join(story + notices), None)
    assert kept.split("\n") == story
    assert removed == [{"text": n, "reason": "footer"} for n in notices]

def test_html_repeated_lines_are_kept_unless_adjacent():
    """In a page's text a long line may come back (a post quoting another); only an
    immediate repeat (a doubled caption) is a duplicate."""
    quote = STORY[2]
    text = "\n".join([STORY[0], quote, "I agree with this completely.", quote, quote, STORY[1]])
    kept, removed, _ = clean_lines(text, "Ferry stays", html=True)
    assert kept.split("\n") == [STORY[0], quote, "I agree with this completely.", quote, STORY[1]]
    assert removed == [{"text": quote, "reason": "duplicate"}]


def test_html_timestamp_and_pagination_lines_removed():
    """On a page, a line that is only a date/time, and page links, are furniture."""
    body = ARTICLE_HTML + "<p>Wed, Jan 16 2008, 12:00 GMT</p><p>1 2 3 4 5 Next</p>"
    result = clean({"id": "p", "html": _page(body)})
    assert result["text"].split("\n") == STORY + MORE_STORY
    assert {"text": "Wed, Jan 16 2008, 12:00 GMT", "reason": "timestamp"} in result["removed"]
    assert {"text": "1 2 3 4 5 Next", "reason": "navigation"} in result["removed"]


def test_html_with_unclosed_title_still_has_a_body():
    """A <title> that is never closed swallows the page for a parser; it is repaired."""
    page = "<html><head><title>Ferry stays" + "<script>var x = 1;</script></head><body>" \
           + ARTICLE_HTML + "</body></html>"
    assert "</title>" not in page
    result = clean({"id": "u", "html": page})
    assert result["content_from"] == "html"
    assert STORY[0] in result["text"] and MORE_STORY[1] in result["text"]


def test_html_fragment_without_html_element_is_extracted():
    """A page that starts with a bare table (no <html> in its first characters) is read."""
    fragment = "\n\r\n<table><tr><td>" + ARTICLE_HTML + "</td></tr></table>"
    assert repair_html(fragment).startswith("<html>")
    text, _ = extract_html(fragment)
    assert STORY[0] in text


def test_html_readers_comments_are_not_the_article():
    """Readers' comments under the story are left out of the text."""
    comments = ('<div class="comments" id="comments"><h3>Comments</h3>'
                '<div class="comment"><p>I have taken this ferry every day for twenty years '
                'and I am delighted the council listened to us.</p></div>'
                '<div class="comment"><p>What a waste of money, the bridge would have been '
                'cheaper in the long run.</p></div></div>')
    result = clean({"id": "k", "html": _page(f"<article>{ARTICLE_HTML}</article>{comments}")})
    assert STORY[0] in result["text"]
    assert "delighted the council" not in result["text"]
    assert "waste of money" not in result["text"]



# Paragraphs long enough (200+ characters) for jusText to call them prose on their own.
BRIDGE = [
    "The council voted on Tuesday to close the old bridge to all traffic after engineers found "
    "that the steel beams under the main span had corroded far more than the last inspection, "
    "three years ago, had suggested they would.",
    "Drivers will have to take a detour of about twelve kilometres through the industrial "
    "estate, which the council said would add around fifteen minutes to a typical journey into "
    "the town centre at the busiest times of the day.",
    "The mayor said that the decision had not been taken lightly, and that the safety of the "
    "people who cross the river every day had to come before the inconvenience that the "
    "closure of the bridge would cause to all of them.",
    "A temporary footbridge is expected to open in the spring, and the council has asked the "
    "regional government for the money that it will need to build a new road bridge over the "
    "river within the next five years.",
    "Local shops near the bridge said that they were worried about losing customers, and some "
    "of them asked the council to put up signs in the town showing people how they can reach "
    "them during the works on the bridge.",
]


def _bridge_page(story: str, after: str = "") -> str:
    return _page("<nav><a href='/'>Home</a> <a href='/news'>News</a></nav><div id='main'>"
                 f"<h1>Old bridge closed to traffic</h1><div class='story'>{story}</div></div>"
                 f"{after}<footer>Contact us</footer>", head="<title>Old bridge closed</title>")


def _paragraphs(paragraphs: list[str]) -> str:
    return "".join(f"<p>{p}</p>" for p in paragraphs)


def test_html_paragraph_dropped_from_the_article_is_restored_in_place():
    """A prose paragraph that trafilatura drops (a <div> among the story's <p>s) comes back,
    once, between the paragraphs around it; with restore=False it stays lost."""
    story = (_paragraphs(BRIDGE[:2]) + f"<div class='inline-box'>{BRIDGE[2]}</div>"
             + _paragraphs(BRIDGE[3:]))
    doc = {"id": "b", "html": _bridge_page(story)}
    assert BRIDGE[2] not in clean(doc, restore=False)["text"]
    assert clean(doc)["text"].split("\n") == BRIDGE


def test_html_prose_outside_the_article_is_not_restored():
    """A long prose paragraph elsewhere on the page (an "about us" box) is not the article:
    trafilatura leaves it out, and it is not the sibling of any paragraph it kept."""
    about = ("Our newsroom has been covering the town and the villages around it for more than "
             "a hundred years, and we rely on the support of our readers to keep doing the work "
             "that we do for all of the people who live here.")
    page = _bridge_page(_paragraphs(BRIDGE), after=f"<div class='about'><div>{about}</div></div>")
    assert clean({"id": "a", "html": page})["text"].split("\n") == BRIDGE


def test_html_readers_comment_beside_the_story_is_not_restored():
    """A reader's comment in the story's own element is pruned before paragraphs are restored
    (as trafilatura prunes it), unless comments are asked for."""
    comment = ("I have crossed that bridge every single day for the last twenty years on my way "
               "to work, and I have to say that I am not at all surprised that it is in such a "
               "bad state after all the years of neglect by the council.")
    page = _bridge_page(_paragraphs(BRIDGE) + f"<div class='comment'>{comment}</div>")
    assert clean({"id": "c", "html": page})["text"].split("\n") == BRIDGE
    assert comment in clean({"id": "c", "html": page}, include_comments=True)["text"]

# --- the evaluation data (read at test time; skipped without ../shared/eval) ------------------
def _wrapped_set(eval_dir):
    path = eval_dir / "clean" / "text_wrapped.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_scraped_text_figures_on_the_evaluation_set(eval_dir):
    """On the scraped-text development set: token F1 >= 0.995, no gold line lost in at least
    99 % of articles, no boilerplate line kept in at least 99 %."""
    records = _wrapped_set(eval_dir)
    tally, intact, clean_articles = TokenTally(), 0, 0
    for index, record in enumerate(records):
        doc = clean({"id": f"e{index}", "text": record["text"], "title": record.get("title")})
        tally.add(doc["text"], record["gold_text"])
        figures = line_figures(record["text"], record["gold_text"], doc["text"])
        intact += figures.gold_lost == 0
        clean_articles += figures.boilerplate_kept == 0
    assert tally.summary()["f1"] >= 0.995
    assert intact >= 0.99 * len(records)
    assert clean_articles >= 0.99 * len(records)
