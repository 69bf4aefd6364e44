"""Entity stage: cleaned text + language -> one entry per canonical entity.

The spaCy pipeline for the document's language and the place gazetteer come from injected
lookups (the edge loads them once per process); stages never load anything themselves.

With a spaCy pipeline (English by default), text is tagged paragraph by paragraph, so a
2 MB article never meets spaCy's max_length and memory stays bounded (``memory_zone``).
A line in capitals (a wire headline, a sports table) is tagged in title case: the model
has seen names capitalised, not shouted; offsets are the same, the surfaces come from the
text. The model's mentions then go through rules that fix what it gets wrong in news:

- spans: a leading "the", a trailing possessive, trailing numbers and scores ("Durham
  114") and trailing lower-case words ("Interfax news agency") are cut; a span across a
  spaced dash ("Lithuania - Danius Gleveckas") is split, and a headline's topic slug
  ("SOCCER - ...") dropped;
- the dateline: capitals at the start of a line followed by a date ("BUCHAREST
  1996-08-30") are a place;
- teams: a name followed by a score ("Somerset 83 and 174", "Haitai 2 Samsung 0") is a
  team, an ORG, unless it is a country (national sides are places, as in CoNLL) or a
  person ("J. Adams 123");
- places (the gazetteer ruler; see ``worker/stages/gazetteer.py``): a mention the model
  labelled NORP, PRODUCT, EVENT... whose name is a place is a place (Kursk, Belgorod); a
  mention labelled ORG is a place when it names a country, or a city listed beside
  another place ("Slovyansk and Bakhmut"); a place name the model missed is added
  (capitalised, not inside another mention). This is an EntityRuler placed after ``ner``
  without ``overwrite_ents``, plus relabelling, written as plain Python over the text so
  the same matcher serves languages without a model;
- every canonical place gets ``geo``: GeoNames id, name, country code, coordinates and
  feature (continent, country, admin1, city).

Languages with no spaCy pipeline but in ``fallback_languages`` (de, es, ru, uk by
default) get :func:`fallback_mentions`: gazetteer places (Russian and Ukrainian case
forms included), acronyms as organisations, and capitalised names (organisation when
they carry an organisation word, person otherwise); German capitalises every noun, so
there only places and acronyms. Other languages get ``entities: []`` and a note.

Mentions are then grouped into canonical entities (:func:`canonicalise`): case, a
leading "the" and possessives folded; Russian and Ukrainian case forms folded (Харкова,
Харкові); names of one GeoNames place folded (Kiev, Kyiv); a lone first or last name joins
the full name (Putin -> Vladimir Putin); every untagged occurrence of a name already found
in the document (or of a person's surname) is added to it; the label is the majority label.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from worker.stages.gazetteer import Gazetteer, Match, Place, stem_key

# Named entities only: dates, numbers and quantities are not what readers search for.
DEFAULT_LABELS = frozenset(
    {"PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW",
     "LANGUAGE", "PER", "MISC"}
)
PLACE_LABELS = frozenset({"GPE", "LOC", "FAC"})
PERSON_LABELS = frozenset({"PERSON", "PER"})
# Labels a gazetteer place name overrides: the model's guess for a name it does not know.
RELABEL_TO_PLACE = frozenset({"NORP", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
                              "MISC"})
INFLECTED_LANGUAGES = frozenset({"ru", "uk"})

_LEADING_ARTICLE = re.compile(r"^(the|The|THE)\s+")
_POSSESSIVE = re.compile(r"\s*(['’]s|['’])$")
_TRAILING_NUMBERS = re.compile(r"(\s+[^\w\s]*\d\S*|\s+[^\w\s]+)+$")
_TRAILING_LOWER = re.compile(r"(\s+[a-z][\w-]*)+$")
_SPACED_DASH = re.compile(r"\s+[-–—]\s+")
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"\w+(?:[-'’.]\w+)*\.?")
_SCORE = re.compile(r" \(?\d")
_DATE_AFTER = re.compile(r"\s*\d{4}-\d\d-\d\d")
_UNITS_AFTER = re.compile(
    r" [\d.,]+\s*(miles?|km|kms|kilomet(?:re|er)s?|met(?:re|er)s?|feet|percent|pct|%)(?!\w)"
)
_INITIAL = re.compile(r"^[A-Z]\.\s?")
_DATELINE = re.compile(
    r"^([A-Z][A-Z.'-]*(?: [A-Z][A-Z.'-]*){0,3})(?:,? \d{4}-\d\d-\d\d| \((?:Reuters|AP|AFP|UPI)\))",
    re.MULTILINE,
)
_COORDINATION = re.compile(r"^\s*(?:,|and|or|&)\s*$")
_MAX_CHUNK_CHARS = 100_000
# Votes of a mention whose label a rule decided (a score, a dateline): more than the
# model's guesses elsewhere in the document, so "Surrey 429-7" outvotes one PERSON guess.
_RULE_WEIGHT = 2


class Mention(NamedTuple):
    text: str
    label: str
    start: int
    end: int
    weight: int = 1


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


def is_shouted(line: str) -> bool:
    """A line in capitals: at least four letters, nine in ten of them upper case."""
    letters = [ch for ch in line if ch.isalpha()]
    return len(letters) >= 4 and sum(ch.isupper() for ch in letters) >= 0.9 * len(letters)


def title_case(line: str) -> str:
    """Words of a shouted line in title case, same length (so offsets hold), else as is."""
    titled = re.sub(r"[^\W\d_]+", lambda m: m.group(0).capitalize(), line)
    return titled if len(titled) == len(line) else line


def _trim(text: str, start: int, end: int) -> tuple[str, int, int]:
    """Drop a leading 'the' and trailing possessives, numbers, scores and lower-case words
    from a mention, moving its offsets."""
    lead = _LEADING_ARTICLE.match(text)
    if lead:
        text, start = text[lead.end():], start + lead.end()
    for pattern in (_POSSESSIVE, _TRAILING_NUMBERS, _TRAILING_LOWER) * 2:
        tail = pattern.search(text)
        if tail and tail.start() > 0:
            end -= len(text) - tail.start()
            text = text[: tail.start()]
    return text, start, end


def _pieces(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """A span cut at spaced dashes ("Lithuania - Danius Gleveckas")."""
    surface = text[start:end]
    if not _SPACED_DASH.search(surface):
        return [(start, end)]
    out, position = [], start
    for dash in _SPACED_DASH.finditer(surface):
        out.append((position, start + dash.start()))
        position = start + dash.end()
    out.append((position, end))
    return out


def _line_start(text: str, position: int) -> bool:
    return position == 0 or text[position - 1] == "\n"


def _followed_by_score(text: str, end: int) -> bool:
    after = text[end:end + 40]
    return bool(_SCORE.match(after)) and not _DATE_AFTER.match(after) and \
        not _UNITS_AFTER.match(after)


class Rules:
    """The post-model rules of the module docstring, over one document's text."""

    def __init__(self, text: str, gazetteer: Gazetteer | None, *, inflected: bool = False):
        self.text = text
        self.gazetteer = gazetteer
        self.inflected = inflected

    def place(self, name: str, *, strong: bool = True) -> Place | None:
        if self.gazetteer is None:
            return None
        found = self.gazetteer.lookup(name, inflected=self.inflected)
        if found is None or (strong and not found[1]):
            return None
        return found[0]

    def team_label(self, name: str, label: str) -> str:
        place = self.place(name)
        if place is not None and place.feature in ("country", "continent"):
            return "GPE"
        if label in PERSON_LABELS and (" " in name or _INITIAL.match(name)):
            return label
        if _INITIAL.match(name):
            return "PERSON"
        return "ORG"

    def model_mentions(self, spans: Iterable[tuple[int, int, str]]) -> list[Mention]:
        """Trimmed, split and relabelled mentions of the model's (start, end, label) spans."""
        text = self.text
        found: list[Mention] = []
        for start, end, label in spans:
            pieces = _pieces(text, start, end)
            for index, (piece_start, piece_end) in enumerate(pieces):
                name, s, e = _trim(text[piece_start:piece_end], piece_start, piece_end)
                if not _LETTER.search(name):
                    continue
                if (index == 0 and len(pieces) > 1 and name.isupper() and " " not in name
                        and _line_start(text, s) and self.place(name) is None):
                    continue  # a headline's topic slug: "CRICKET - ..."
                if _followed_by_score(text, e):
                    found.append(Mention(name, self.team_label(name, label), s, e, _RULE_WEIGHT))
                    continue
                found.append(Mention(name, label, s, e))
        return self._places(found)

    def _places(self, mentions: list[Mention]) -> list[Mention]:
        """Relabel model guesses that the gazetteer knows as places (see module docstring)."""
        if self.gazetteer is None:
            return mentions
        out = list(mentions)
        places = [None if m.weight != 1 or m.label in PLACE_LABELS else self.place(m.text)
                  for m in mentions]
        for i, m in enumerate(mentions):  # the other labels first: "Kharkiv and Kyiv"
            if places[i] is not None and m.label in RELABEL_TO_PLACE:
                out[i] = m._replace(label="GPE")
        for i, m in enumerate(mentions):
            place = places[i]
            if place is not None and m.label == "ORG" and (
                    place.feature in ("country", "continent") or self._listed_with_place(out, i)):
                out[i] = m._replace(label="GPE")
        return out

    def _listed_with_place(self, mentions: list[Mention], i: int) -> bool:
        for j in (i - 1, i + 1):
            if 0 <= j < len(mentions) and mentions[j].label in PLACE_LABELS:
                a, b = sorted((mentions[i], mentions[j]), key=lambda m: m.start)
                if _COORDINATION.match(self.text[a.end:b.start]):
                    return True
        return False

    def datelines(self, mentions: list[Mention]) -> list[Mention]:
        """A dateline's place replaces whatever the model made of it."""
        lines = [m.span(1) for m in _DATELINE.finditer(self.text)]
        if not lines:
            return mentions
        kept = [m for m in mentions if not any(m.start < e and s < m.end for s, e in lines)]
        return kept + [Mention(self.text[s:e], "GPE", s, e, _RULE_WEIGHT) for s, e in lines]

    def add_places(self, mentions: list[Mention]) -> list[Mention]:
        """Places the model missed: the gazetteer's strong names in no mention yet, but not
        a small town's name opening a sentence; before a score, the team rule decides."""
        if self.gazetteer is None:
            return mentions
        text = self.text
        covered = _covered(mentions)
        tokens = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        added = []
        for match in self.gazetteer.matches(text, tokens, inflected=self.inflected):
            if not match.strong or _overlaps(covered, match.start, match.end):
                continue
            name = text[match.start:match.end].rstrip(".")
            end = match.start + len(name)
            if (match.first == match.last and match.place.feature == "city"
                    and match.place.population < 100_000 and _sentence_initial(text, match.start)
                    and not _followed_by_score(text, end)):
                continue  # "Un", "Se": a small town's name opening a sentence is a word
            if _followed_by_score(text, end):
                added.append(Mention(name, self.team_label(name, "GPE"), match.start, end,
                                     _RULE_WEIGHT))
            else:
                added.append(Mention(name, "GPE", match.start, end))
        return mentions + added


def _covered(mentions: Iterable[Mention]) -> list[tuple[int, int]]:
    return sorted((m.start, m.end) for m in mentions)


def _overlaps(spans: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) overlaps one of ``spans`` (sorted, barely overlapping)."""
    i = bisect.bisect_left(spans, (end, end))
    return any(s < end and start < e for s, e in spans[max(0, i - 8):i])


# --- languages without a model ---------------------------------------------------------
_ORG_WORDS = frozenset(w.casefold() for w in """
    Bank Banco Banca Partei Partido Party Universität Universidad University Ministerium
    Ministerio Ministry Gobierno Regierung Comisión Kommission Asociación Verband Verein
    Federación Consejo Rat Club Grupo Gruppe Group Compañía Gesellschaft Stiftung Fundación
    Instituto Institut Agencia Agentur Corporation Corp Inc Ltd AG GmbH SA Tribunal Gericht
    Банк Партия Партія Министерство Міністерство Университет Університет Комитет Комітет
    Служба Агентство Компания Компанія Совет Рада Суд Фонд Союз Спілка Институт Інститут
    Управление Управління Департамент Корпорация Корпорація Объединение Об'єднання Академия
    Академія Верховна Верховный Государственная Державна Национальный Національний Clube
    FC CF CD SC AC Real Atlético Athletic Deportivo Sporting Inter Dynamo Dinamo Динамо
    Спартак Шахтар Шахтер Зенит
    ООО ОАО ЗАО ПАО ТОВ ПАТ ПрАТ КП ДП АТ
""".split())
# Acronyms that are ordinary nouns (the media, a currency), not organisations.
_NOT_ORGS = frozenset("СМИ ЗМІ ISBN EUR USD GMT CEO PC TV DJ OK".split())
# "Донецької області", "Краснодарского края": a region.
_REGION_WORDS = frozenset(w.casefold() for w in """
    область області областю обл край краю краї края району районі район округ округа округу
    губернія губернии губернії республіка республіки республіці республика республики
""".split())
_PARTICLES = frozenset("de del la las los y el di da von van der zu".split())
_SENTENCE_END = re.compile(r"[.!?…:;\"«»“”„()\[\]—–-]\s*$|^\s*$")


def _sentence_initial(text: str, start: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    return bool(_SENTENCE_END.search(text[max(line_start, start - 4):start]))


_DETERMINERS = {
    "de": frozenset("der die das dem den des ein eine einem einen einer eines im am zum zur vom "
                    "beim ins ans aufs unser unsere kein keine".split()),
    "es": frozenset("el la los las un una unos unas del al lo su sus".split()),
}
# Prepositions of place: a town's name after one is the town ("у Києві", "en Toledo").
_PREPOSITIONS = {
    "uk": frozenset("у в з із зі до від під над біля поблизу через по на за між".split()),
    "ru": frozenset("в во из до от под над около возле через по на за между с со к".split()),
    "de": frozenset("in nach aus bei von vor zwischen um über unter an auf".split()),
    "es": frozenset("en de desde hasta a hacia por para entre".split()),
}
# Legal forms written before a quoted company name: ТОВ «Бомбардир» is one organisation.
_LEGAL_FORMS = frozenset("ТОВ ТзОВ ПП ДП ПАТ ПрАТ АТ ВАТ ЗАТ КП ГО ПТ НПП ФОП ООО ОАО ЗАО ПАО АО "
                         "НКО ФГУП МУП ГУП".split())
_QUOTED = re.compile(r"[«„“]\s*([^«»„“”\n]{1,80}?)\s*[»“”]")
_ROMAN = re.compile(r"^[IVXLC]+$")
_LAST_WORD = re.compile(r"(\S+)\s*$")


def _accept_place(text: str, language: str, match: Match,
                  tokens: Sequence[tuple[int, int]]) -> bool:
    """Whether a gazetteer match in text without a model is a place (see fallback_mentions)."""
    place = match.place
    if place.feature in ("country", "continent"):
        return True
    if match.last > match.first:
        return True
    big = place.population >= 100_000
    before = text[max(0, match.start - 12):match.start].split()
    previous = before[-1].casefold() if before else ""
    if previous in _PREPOSITIONS.get(language, ()):
        return match.strong or big  # "у Києві", "in Mitte", "en Toledo"
    if not match.strong or place.population < 50_000:
        return False  # without a preposition, only the known names of towns of 50,000+
    if _sentence_initial(text, match.start) and not big:
        return False
    if previous in _DETERMINERS.get(language, ()):
        return False  # "am Ende", "la Justicia": a common noun, not the town
    if match.last + 1 < len(tokens) and match.exact:
        nxt_start, nxt_end = tokens[match.last + 1]
        nxt = text[nxt_start:nxt_end]
        if text[match.end:nxt_start] == " " and nxt[:1].isupper() and not nxt.isupper():
            return False  # "Владимир Путин": a first name
    if match.first > 0:
        prev_start, prev_end = tokens[match.first - 1]
        prev = text[prev_start:prev_end]
        if text[prev_end:match.start] == " " and (prev.isupper() and len(prev) > 1
                                                  or prev.casefold() in _ORG_WORDS):
            return False  # "FC Barcelona", "Real Madrid": a club
    return True


def fallback_mentions(text: str, language: str, gazetteer: Gazetteer | None) -> list[Mention]:
    """Mentions without a statistical model:

    - quoted names («Батьківщина», ТОВ «Бомбардир» with its legal form) are ORG;
    - gazetteer places are LOC: countries, continents and names of several words always;
      a town's single name after a preposition of place ("у Києві", "en Toledo"),
      otherwise only a town of 50,000 or more under its own name, and not where it is a
      word (opening a sentence, after an article: "am Ende"), a first name ("Владимир
      Путин") or part of a club's name ("FC Barcelona"); a region word after a place
      makes a region ("Донецької області");
    - acronyms (two to six capitals, not on a shouted line, not Roman numerals) are ORG;
    - where only names are capitalised (not German), runs of capitalised words (with
      particles: Banco de España) are ORG with an organisation word in them, PERSON
      otherwise; a single sentence-initial word is left alone.
    """
    rules = Rules(text, gazetteer, inflected=language in INFLECTED_LANGUAGES)
    mentions = rules.datelines([])
    for quoted in _QUOTED.finditer(text):
        inner = quoted.group(1)
        if not inner[:1].isupper() or len(inner.split()) > 5 or inner[-1] in ".,!?:;":
            continue
        prefix = _LAST_WORD.search(text, max(0, quoted.start() - 12), quoted.start())
        if prefix and prefix.group(1) in _LEGAL_FORMS:
            start = prefix.start(1)
            mentions.append(Mention(text[start:quoted.end()], "ORG", start, quoted.end()))
        else:
            mentions.append(Mention(inner, "ORG", quoted.start(1), quoted.end(1)))
    tokens = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if gazetteer is not None:
        covered = _covered(mentions)
        for match in gazetteer.matches(text, tokens, inflected=rules.inflected):
            if _overlaps(covered, match.start, match.end):
                continue
            if _accept_place(text, language, match, tokens):
                end = match.start + len(text[match.start:match.end].rstrip("."))
                nxt = match.last + 1
                if rules.inflected and nxt < len(tokens) and \
                        text[match.end:tokens[nxt][0]] == " " and \
                        text[tokens[nxt][0]:tokens[nxt][1]].casefold() in _REGION_WORDS:
                    end = tokens[nxt][1]  # "Донецької області": the region, not the town
                mentions.append(Mention(text[match.start:end], "LOC", match.start, end))
    covered = _covered(mentions)
    names = language != "de"
    shouted_lines = {m.start() for m in re.finditer(r"^.*$", text, re.MULTILINE)
                     if is_shouted(m.group(0))}

    def word_at(k: int) -> str:
        return text[tokens[k][0]:tokens[k][1]]

    def joined(k: int) -> bool:  # token k follows token k - 1 after one space, untagged
        return text[tokens[k - 1][1]:tokens[k][0]] == " " and not _overlaps(covered, *tokens[k])

    i = 0
    while i < len(tokens):
        start, end = tokens[i]
        word = word_at(i).rstrip(".")
        if not word[:1].isupper() or _overlaps(covered, start, end):
            i += 1
            continue
        acronym = word.isupper() and 2 <= sum(ch.isalpha() for ch in word) <= 6 and \
            not any(ch.isdigit() for ch in word)
        capital_next = i + 1 < len(tokens) and joined(i + 1) and word_at(i + 1)[:1].isupper()
        if acronym and not (names and capital_next):
            line = text.rfind("\n", 0, start) + 1
            if line not in shouted_lines and not _ROMAN.match(word) and \
                    word not in _LEGAL_FORMS and word not in _NOT_ORGS:
                mentions.append(Mention(word, "ORG", start, start + len(word)))
            i += 1
            continue
        if not names or (word.isupper() and not acronym):
            i += 1
            continue
        # a run of capitalised words, with name particles inside (Banco de España); an
        # organisation word may carry lower-case words up to a name in Russian and
        # Ukrainian (Міністерства оборони України)
        j = i
        carried = False
        while j + 1 < len(tokens) and joined(j + 1) and not word_at(j).endswith("."):
            nxt = word_at(j + 1)
            if nxt[:1].isupper():
                j += 1
                continue
            if nxt in _PARTICLES and j + 2 < len(tokens) and joined(j + 2) \
                    and word_at(j + 2)[:1].isupper():
                j += 2
                continue
            if rules.inflected and word.casefold() in _ORG_WORDS:
                k = j + 1
                while k < len(tokens) and k <= j + 3 and joined(k) and word_at(k)[:1].islower():
                    k += 1
                if not carried and k < len(tokens) and k <= j + 3 and word_at(k)[:1].isupper() and \
                        text[tokens[k - 1][1]:tokens[k][0]] == " ":
                    j = k  # the name may be a place already: it becomes part of the ORG
                    carried = True
                    continue
            break
        region = (rules.inflected and j + 1 < len(tokens) and joined(j + 1)
                  and word_at(j + 1).casefold() in _REGION_WORDS)
        if region:
            j += 1
        i = j + 1
        run_start = start
        words = text[run_start:tokens[j][1]].rstrip(".").split()
        if _sentence_initial(text, start):
            if len(words) == 1:
                continue
            if len(words[0]) <= 3 and not words[0].isupper():
                # "Por Juan Miguel Núñez", "В Москве": a short word opening the sentence
                run_start = text.index(words[1], start + len(words[0]))
                words = words[1:]
        run = text[run_start:tokens[j][1]].rstrip(".")
        if carried:
            mentions = [m for m in mentions if not (m.start < run_start + len(run)
                                                    and run_start < m.end)]
        if region:
            label = "LOC"
        elif any(w.casefold() in _ORG_WORDS or (w.isupper() and len(w) > 1) for w in words):
            label = "ORG"
        else:
            label = "PERSON"
        mentions.append(Mention(run, label, run_start, run_start + len(run)))
    return mentions


# --- grouping ------------------------------------------------------------------------------
def _propagate(text: str, groups: dict[str, dict[str, Any]], mentions: list[Mention]) -> None:
    """Add every untagged, capitalised occurrence of a name (or a person's surname)
    already found in the document to its entity."""
    names: dict[str, dict[str, Any]] = {}
    for group in groups.values():
        label = group["labels"].most_common(1)[0][0]
        for name in group["names"]:
            if len(name) > 2 and name[:1].isupper() and name not in names:
                names[name] = group
        if label in PERSON_LABELS:
            for name in list(group["names"]):
                parts = name.split()
                if len(parts) > 1 and len(parts[-1]) > 2 and parts[-1][:1].isupper():
                    names.setdefault(parts[-1], group)
    if not names:
        return
    covered = _covered(mentions)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(
        re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")(?!\w)")
    for found in pattern.finditer(text):
        if not _overlaps(covered, found.start(), found.end()):
            names[found.group(0)]["mentions"].append(
                {"start": found.start(), "end": found.end()})


def canonicalise(
    mentions: Iterable[Sequence[Any]],
    *,
    text: str | None = None,
    gazetteer: Gazetteer | None = None,
    inflected: bool = False,
) -> list[dict[str, Any]]:
    """Group (text, label, start, end[, weight]) mentions into canonical entities.

    Mentions that differ only in case or a leading "the" are one entity; a one-word
    mention that is the first or last word of a longer person name in the same document
    (Putin -> Vladimir Putin, Wang -> Wang Donghai) joins that person, whatever the model
    labelled it, unless it labelled it a place (Washington beside George Washington). The label is the majority label (weighted: rule decisions count double).
    With ``text``, untagged occurrences of known names are added (see :func:`_propagate`);
    with a ``gazetteer``, place entities get ``geo``.
    """
    mentions = [Mention(*m) for m in mentions]
    # Russian and Ukrainian: case forms of a name are one name (Харкова, Харкові)
    fold = stem_key if inflected else str.casefold
    full_names: dict[str, str] = {}
    for m in mentions:
        parts = m.text.split()
        if m.label in PERSON_LABELS and len(parts) > 1:
            full_names.setdefault(fold(parts[-1]), fold(m.text))
            full_names.setdefault(fold(parts[0]), fold(m.text))
    groups: dict[str, dict[str, Any]] = {}
    for m in mentions:
        key = fold(m.text)
        if (" " not in m.text and m.label not in PLACE_LABELS and key in full_names
                and key != full_names[key]):
            key = full_names[key]
        elif gazetteer is not None:
            place = gazetteer.place(m.text, inflected=inflected)
            if place is not None:  # Kiev and Kyiv are one place, whatever their labels
                key = f"geonames:{place.geonameid}"
        group = groups.setdefault(key, {"names": Counter(), "labels": Counter(), "mentions": []})
        group["names"][m.text] += 1
        group["labels"][m.label] += m.weight
        group["mentions"].append({"start": m.start, "end": m.end})
    if text is not None:
        _propagate(text, groups, mentions)
    entities = []
    for group in groups.values():
        longest = max(group["names"], key=lambda n: (len(n.split()), group["names"][n]))
        label = group["labels"].most_common(1)[0][0]
        entity: dict[str, Any] = {
            "text": longest,
            "label": label,
            "count": len(group["mentions"]),
            "mentions": sorted(group["mentions"], key=lambda m: m["start"]),
        }
        if gazetteer is not None and label in PLACE_LABELS:
            place = _place_of(gazetteer, group["names"], inflected)
            if place is not None:
                entity["geo"] = place.geo()
        entities.append(entity)
    entities.sort(key=lambda e: (-e["count"], e["mentions"][0]["start"]))
    return entities


def _place_of(gazetteer: Gazetteer, names: Counter, inflected: bool) -> Place | None:
    for name, _ in names.most_common():
        found = gazetteer.lookup(name, inflected=inflected)
        if found is not None:
            return found[0]
    return None


class EntityTagger:
    """Tags entities with the spaCy pipeline that ``pipeline_for(language)`` returns, the
    place gazetteer that ``gazetteer_for()`` returns (None: no places, no geo), and the
    model-free fallback for ``fallback_languages``."""

    def __init__(
        self,
        pipeline_for: Callable[[str], Any | None],
        labels: Iterable[str] = DEFAULT_LABELS,
        *,
        gazetteer_for: Callable[[], Gazetteer | None] | None = None,
        fallback_languages: Iterable[str] = (),
    ) -> None:
        self.pipeline_for = pipeline_for
        self.labels = frozenset(labels)
        self.gazetteer_for = gazetteer_for or (lambda: None)
        self.fallback_languages = frozenset(fallback_languages)

    def model_spans(self, nlp: Any, text: str) -> list[tuple[int, int, str]]:
        """(start, end, label) of the model's entities, paragraph by paragraph; shouted
        lines are tagged in title case."""
        spans = []
        chunks = list(paragraphs(text))
        inputs = (title_case(c) if is_shouted(c) else c for _, c in chunks)
        with nlp.memory_zone():
            for (offset, _), parsed in zip(chunks, nlp.pipe(inputs), strict=True):
                spans.extend((offset + ent.start_char, offset + ent.end_char, ent.label_)
                             for ent in parsed.ents if ent.label_ in self.labels)
        return spans

    def mentions(self, nlp: Any, text: str, language: str = "en") -> list[Mention]:
        gazetteer = self.gazetteer_for()
        rules = Rules(text, gazetteer, inflected=language in INFLECTED_LANGUAGES)
        found = rules.model_mentions(self.model_spans(nlp, text))
        return rules.add_places(rules.datelines(found))

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        code = (doc.get("language") or {}).get("code", "und")
        text = doc.get("text") or ""
        nlp = self.pipeline_for(code)
        if nlp is not None:
            found = self.mentions(nlp, text, code)
        elif code in self.fallback_languages:
            found = fallback_mentions(text, code, self.gazetteer_for())
            doc.setdefault("pipeline", {}).setdefault("notes", {})["entities"] = (
                f"no entity model for language {code!r}: gazetteer places, acronyms and "
                "capitalised names"
            )
        else:
            doc["entities"] = []
            doc.setdefault("pipeline", {}).setdefault("notes", {})["entities"] = (
                f"no entity model for language {code!r}"
            )
            return doc
        doc["entities"] = canonicalise(found, text=text, gazetteer=self.gazetteer_for(),
                                       inflected=code in INFLECTED_LANGUAGES)
        return doc
