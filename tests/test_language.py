"""Language stage: lingua (low-accuracy mode) on cleaned text, declared languages first,
und when unsure; two passes for long texts."""

from __future__ import annotations

import pytest

from worker.stages.cleaning import clean
from worker.stages.language import (
    LanguageDetector,
    Shortlist,
    _strike_foreign_letters,
    _weigh_markers,
    iso639_1,
    sample,
)

GERMAN = (
    "Die Stadtverwaltung hat am Montag angekündigt, dass die alte Brücke über den Fluss im "
    "nächsten Frühjahr vollständig erneuert werden soll. Während der Bauarbeiten fahren "
    "zusätzliche Busse zwischen den beiden Ufern."
)
RUSSIAN = (
    "Городской совет в понедельник объявил, что старый мост через реку будет полностью "
    "отремонтирован следующей весной. Во время работ между берегами будут ходить "
    "дополнительные автобусы."
)
CHINESE_SIMPLIFIED = (
    "市政府星期一宣布，横跨河流的大桥将在明年春天进行全面翻修。工程预计持续六个月，期间市民可以"
    "乘坐渡船或者绕行上游的另一座桥。交通部门表示，他们会在附近增加公共汽车班次。"
)
CHINESE_TRADITIONAL = "我們學校的學生們每天早上都會在操場上跑步，這是一個很好的習慣。"
ENGLISH = (
    "The harbour council voted on Tuesday evening to keep the last passenger ferry running "
    "for at least five more years, after a petition signed by three thousand residents."
)
# Languages langdetect has no profile for.
ARMENIAN = (
    "Քաղաքային խորհուրդը երկուշաբթի հայտարարեց, որ գետի վրայի հին կամուրջը ամբողջությամբ "
    "կվերանորոգվի հաջորդ գարնանը։"
)
GEORGIAN = (
    "ქალաქის საბჭომ ორშაბათს გამოაცხადა, რომ მდინარეზე გადებული ძველი ხიდი მომავალ "
    "გაზაფხულზე სრულად განახლდება."
)
SERBIAN = (
    "Градски савет је у понедељак објавио да ће стари мост преко реке бити потпуно обновљен "
    "следећег пролећа."
)
KAZAKH = (
    "Қалалық кеңес дүйсенбі күні өзен арқылы өтетін ескі көпір келесі көктемде толығымен "
    "жөнделетінін хабарлады."
)
AZERBAIJANI = (
    "Şəhər şurası bazar ertəsi çayın üzərindəki köhnə körpünün gələn yaz tamamilə "
    "yenilənəcəyini elan etdi."
)
BOKMAL = (
    "Jeg heter Kari og bor i en liten by på Vestlandet. Hver sommer går jeg tur i fjellet "
    "sammen med vennene mine, og da spiser vi matpakke ved vannet."
)
NYNORSK = (
    "Eg heiter Kari og bur i ein liten by på Vestlandet. Kvar sommar går eg tur i fjellet "
    "saman med venene mine, og då et vi matpakke ved vatnet."
)
# Ukrainian with і and щ but none of Kazakh's own letters: lingua 2.1.1's letter rules
# alone make this Kazakh with confidence 1.0.
UKRAINIAN_RULE_TRAP = (
    "Небесні ж сили і явища не грають скільки-небудь важливої ролі, лише зрідка виступаючи "
    "як безликі і неоформлені істоти."
)


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


class ScriptedDetector(LanguageDetector):
    """A detector whose candidate confidences are set by the test."""

    answer: list[tuple[str, float]] = []

    def probabilities(self, text: str) -> list[tuple[str, float]]:
        return list(self.answer)


@pytest.fixture(scope="module")
def _scripted_instance() -> ScriptedDetector:
    return ScriptedDetector()


@pytest.fixture
def scripted(_scripted_instance):
    def make(answer: list[tuple[str, float]]) -> ScriptedDetector:
        _scripted_instance.answer = answer
        return _scripted_instance

    return make


# --- the model on real text -------------------------------------------------------------
def test_seed_is_english(detector, seed_text):
    """The cleaned seed article is detected as English with high confidence."""
    doc = detector(clean({"id": "seed", "text": seed_text}))
    assert doc["language"]["code"] == "en"
    assert doc["language"]["method"] == "model"
    assert doc["language"]["confidence"] >= 0.9


@pytest.mark.parametrize(
    ("text", "code"),
    [(GERMAN, "de"), (RUSSIAN, "ru"), (ENGLISH, "en"),
     (CHINESE_SIMPLIFIED, "zh"), (CHINESE_TRADITIONAL, "zh"),
     (ARMENIAN, "hy"), (GEORGIAN, "ka"), (SERBIAN, "sr"), (KAZAKH, "kk"),
     (AZERBAIJANI, "az")],
    ids=["german", "russian", "english", "chinese-simplified", "chinese-traditional",
         "armenian", "georgian", "serbian", "kazakh", "azerbaijani"],
)
def test_snippets_detected(detector, text, code):
    """News snippets get their ISO 639-1 code, also in languages langdetect never knew."""
    result = detector.detect(text)
    assert result["code"] == code
    assert result["method"] == "model"
    assert 0.9 <= result["confidence"] <= 1.0


@pytest.mark.parametrize(("text", "code"), [(BOKMAL, "nb"), (NYNORSK, "nn")],
                         ids=["bokmal", "nynorsk"])
def test_norwegian_written_standards_are_told_apart(detector, text, code):
    """Norwegian comes out as nb or nn (as the evaluation gold has it), never as no."""
    assert detector.detect(text)["code"] == code


def test_ukrainian_is_not_handed_to_kazakh_by_shared_letters(detector):
    """A Kazakh answer without any letter of Kazakh's own is decided again without it."""
    assert detector.detect(UKRAINIAN_RULE_TRAP)["code"] == "uk"
    assert detector.detect(UKRAINIAN_RULE_TRAP * 12)["code"] == "uk"  # second pass too


def test_letters_a_language_never_writes_strike_it(detector):
    """й, ы, я are in no Macedonian or Serbian word: lingua's Macedonian answer for this
    Russian line is struck. Urdu's ے, ں and ہ strike Persian and Arabic; Persian's ی and ک
    strike Arabic, and its ه strikes Urdu."""
    assert detector.detect("Милый мой, ты у меня в груди.")["code"] == "ru"
    found = [("fa", 0.6), ("ur", 0.3), ("ar", 0.1)]
    assert _strike_foreign_letters(found, "یہ کتاب میری ہے") == [("ur", 1.0)]
    assert _strike_foreign_letters(found, "این کتاب من است") == [
        ("fa", round(0.6 / 0.9, 10)), ("ur", round(0.3 / 0.9, 10))]
    assert _strike_foreign_letters(found, "این خانه بزرگ است") == [("fa", 1.0)]
    arabic = [("ar", 0.5), ("fa", 0.5)]
    assert _strike_foreign_letters(arabic, "هذا الكتاب لي") == arabic  # nothing foreign to either


@pytest.mark.parametrize(
    ("text", "code"),
    [("Tko je tijekom tjedna pročitao tu knjigu?", "hr"),
     ("Ko je tokom sedmice pročitao tu knjigu?", "bs"),
     ("मैंने कल बाज़ार से फल खरीदे और घर आ गया।", "hi"),
     ("मी काल बाजारातून फळे आणली आणि घरी आलो.", "mr"),
     ("Eg veit ikkje kvar bussen går frå.", "nn"),
     ("Jeg vet ikke hvor bussen går fra.", "nb"),
     ("Jeg ved ikke, hvor bussen kører fra.", "da"),
     ("Ndiyabulela kakhulu ngoncedo lwakho namhlanje.", "xh"),
     ("Ngiyabonga kakhulu ngosizo lwakho namuhla.", "zu"),
     ("Ek weet nie waar die bus vandag vertrek nie.", "af"),
     ("Ik weet niet waar de bus vandaag vertrekt.", "nl")],
    ids=["hr", "bs", "hi", "mr", "nn", "nb", "da", "xh", "zu", "af", "nl"],
)
def test_close_neighbours_told_apart(detector, text, code):
    """Sentences of languages lingua's trigrams confuse rank their own language first, and
    the answer is that language or, under the confidence bar, und: never the neighbour."""
    assert detector.probabilities(text)[0][0] == code
    assert detector.detect(text)["code"] in (code, "und")


def test_marker_words_decide_within_a_group():
    """A marker word of the runner-up outweighs the model's preference within its group;
    languages outside the group keep their share of the renormalised confidence."""
    found = [("hr", 0.9), ("bs", 0.09), ("sl", 0.01)]
    weighed = _weigh_markers(found, "Ko je to rekao?")
    assert [code for code, _ in weighed] == ["bs", "hr", "sl"]
    assert sum(value for _, value in weighed) == pytest.approx(1.0)


def test_markers_change_nothing_without_evidence():
    """No marker word, as many markers for each language, or a top candidate outside any
    group: the confidences stay as the model gave them."""
    found = [("hr", 0.9), ("bs", 0.1)]
    assert _weigh_markers(found, "Je li pročitao knjigu?") == found
    assert _weigh_markers(found, "Tko je to rekao tokom dana?") == found
    assert _weigh_markers([("en", 0.9), ("bs", 0.1)], "Ko je to?") == [("en", 0.9), ("bs", 0.1)]


def test_markers_match_whole_words_stems_and_endings():
    """An entry matches a whole word ("ko" not inside "kosa"), a stem ("povijes-"), or the
    ending of a longer word (Marathi "-च्या")."""
    assert _weigh_markers([("hr", 0.6), ("bs", 0.4)], "Kosa je duga.") == [("hr", 0.6), ("bs", 0.4)]
    assert _weigh_markers([("bs", 0.6), ("hr", 0.4)], "Povijesni dan.")[0][0] == "hr"
    assert _weigh_markers([("hi", 0.6), ("mr", 0.4)], "भारताच्या राजधानी")[0][0] == "mr"


def test_a_quoted_foreign_line_strikes_nothing_in_a_long_text():
    """Foreign letters must make a share of the text: the ы and э of one quoted Russian
    sentence do not strike Ukrainian from a Ukrainian story (whose і and ї strike Russian);
    the quote alone is Russian."""
    story = UKRAINIAN_RULE_TRAP * 10 + " «Мы это обсудим позже», — сказал он."
    found = [("uk", 0.9), ("ru", 0.1)]
    assert _strike_foreign_letters(found, story) == [("uk", 1.0)]
    assert _strike_foreign_letters(found, "Мы это обсудим позже.") == [("ru", 1.0)]


def test_single_words_abstain_unless_sure(detector):
    """A lone ambiguous word is und; a long distinctive one, or one in its own script, is not."""
    assert detector.detect("The")["code"] == "und"
    assert detector.detect("Bundesverfassungsgericht")["code"] == "de"
    assert detector.detect("ქალაქი")["code"] == "ka"


def test_word_pairs_are_answered_when_sure(detector):
    """Two words are enough to answer (no letter minimum) when the model is sure; a pair
    in a script several languages share ranks its language first."""
    assert detector.detect("Bürgermeister Brücke")["code"] == "de"
    assert detector.probabilities("городской совет")[0][0] == "ru"


def test_no_letters_is_undetermined(detector):
    """Digits and punctuation alone give und with method too_short."""
    result = detector.detect("2025-01-02 12:30 +44 (0)20 7946 0958 -- 3,000 / 400 %")
    assert result == {"code": "und", "confidence": 0.0, "method": "too_short"}


def test_empty_text_is_undetermined(detector):
    """Empty text gives und, never an exception."""
    assert detector.detect("")["code"] == "und"


def test_unknown_script_has_no_features(detector):
    """A script none of the languages uses (Ethiopic) gives und, no_features."""
    assert detector.detect("ሰላም እንዴት ነህ ዛሬ")["method"] == "no_features"


def test_same_text_same_answer(detector):
    """Detection is deterministic: five calls and a fresh detector agree exactly."""
    mixed = "Der Bürgermeister said the Brücke will be closed pendant les travaux de printemps."
    answers = [detector.detect(mixed) for _ in range(5)]
    answers.append(LanguageDetector().detect(mixed))
    probabilities = [detector.probabilities(mixed) for _ in range(5)]
    assert all(a == answers[0] for a in answers)
    assert all(p == probabilities[0] for p in probabilities)


def test_title_helps_short_text(detector):
    """A short text with its title in front has enough letters to decide."""
    doc = detector({"id": "x", "text": "Die Brücke wird erneuert.",
                    "title": "Stadtverwaltung kündigt Bauarbeiten an der alten Brücke an"})
    assert doc["language"]["code"] == "de"


# --- two passes -------------------------------------------------------------------------
class TwoPass(LanguageDetector):
    """Records the model calls: (languages or None for all, text length)."""

    def __init__(self, first, second, **kwargs):
        super().__init__(head_chars=50, sample_chars=500, **kwargs)
        self.first, self.second, self.calls = first, second, []

    def _values(self, codes, text):
        self.calls.append((codes, len(text)))
        return list(self.first if codes is None else self.second)


LONG = "palabra " * 100


def test_long_text_second_pass_between_best_candidates():
    """An undecided head sends the whole sample to the best `candidates` languages only."""
    d = TwoPass([("es", 0.6), ("gl", 0.3), ("pt", 0.09), ("ca", 0.01)], [("gl", 0.9), ("es", 0.1)])
    assert d.detect(LONG)["code"] == "gl"
    (first, head), (second, whole) = d.calls
    assert first is None and head <= 50
    assert second == frozenset({"es", "gl", "pt"}) and whole == len(sample(LONG, 500))


def test_decided_head_needs_no_second_pass():
    """A head whose runner-up is negligible decides a long text alone (the cheap path)."""
    d = TwoPass([("en", 0.9999), ("fr", 0.00001)], [("fr", 1.0)])
    assert d.detect(LONG)["code"] == "en"
    assert len(d.calls) == 1


def test_short_text_single_pass():
    """A text no longer than the head is decided in one pass over all languages."""
    d = TwoPass([("es", 0.9), ("pt", 0.1)], [("pt", 1.0)])
    assert d.detect("palabra corta")["code"] == "es"
    assert len(d.calls) == 1


# --- the shortlist of a long text's first pass --------------------------------------------
class Recording(LanguageDetector):
    """The real model, recording which languages each pass weighed (None: all)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def _values(self, codes, text):
        self.calls.append(codes)
        return super()._values(codes, text)


class FixedShortlist:
    """A shortlist that names the languages the test gives it, and can name ``known`` (by
    default every language lingua knows)."""

    def __init__(self, names, known=None):
        from lingua import Language

        self.answer = list(names)
        self.names = frozenset(known if known is not None else
                               (lang.iso_code_639_1.name.lower() for lang in Language.all()))

    def __call__(self, text, size):
        return self.answer[:size]


@pytest.fixture(scope="module")
def fasttext_shortlist() -> Shortlist:
    return Shortlist()


@pytest.mark.parametrize(
    ("text", "code"),
    [(GERMAN, "de"), (RUSSIAN, "ru"), (ENGLISH, "en"), (BOKMAL, "nb"), (NYNORSK, "nn"),
     (AZERBAIJANI, "az"), (CHINESE_SIMPLIFIED, "zh")],
    ids=["german", "russian", "english", "bokmal", "nynorsk", "azerbaijani", "chinese"],
)
def test_long_text_first_pass_weighs_the_shortlist_only(fasttext_shortlist, text, code):
    """A text longer than the head is decided among fastText's shortlist (far fewer than all
    75 languages), with the answer the all-language pass gives."""
    long_text = " ".join([text] * 4)
    plain = Recording(head_chars=200)
    shortlisted = Recording(head_chars=200, shortlist=fasttext_shortlist, shortlist_size=8)
    assert shortlisted.detect(long_text)["code"] == plain.detect(long_text)["code"] == code
    assert plain.calls[0] is None
    first = shortlisted.calls[0]
    assert first is not None and code in first and len(first) <= 8 + 8 + 3


def test_seed_first_pass_uses_the_shortlist(fasttext_shortlist, seed_text):
    """The cleaned seed article is English through the shortlist, with no all-language pass."""
    detector = Recording(shortlist=fasttext_shortlist)
    doc = detector(clean({"id": "seed", "text": seed_text}))
    assert doc["language"]["code"] == "en" and doc["language"]["method"] == "model"
    assert None not in detector.calls


def test_shortlist_adds_neighbours_and_languages_it_cannot_name():
    """Close neighbours of a named language (hr -> bs) and every language the shortlist
    cannot name at all are weighed too; a macro-language name stands for its members."""
    detector = LanguageDetector(
        shortlist=FixedShortlist(["hr", "no", "de"], known=["hr", "no", "de", "en", "fr"]))
    codes, first = detector.shortlisted("x")
    assert {"hr", "bs", "nb", "nn", "da", "de"} <= codes
    assert "en" not in codes and "fr" not in codes  # nameable, not named
    assert {"zu", "xh", "mi", "yo"} <= codes  # never named by this shortlist
    assert first == {"hr", "bs"}


def test_long_text_of_a_language_the_shortlist_missed_goes_to_all_languages():
    """When lingua's best among the shortlist is not the shortlist's first choice, or lingua is
    unsure among it, the head is weighed among all languages: the right answer still wins."""
    long_german = " ".join([GERMAN] * 3)
    wrong_first = Recording(shortlist=FixedShortlist(["nl", "de"]), shortlist_size=2)
    assert wrong_first.detect(long_german)["code"] == "de"
    assert wrong_first.calls[0] is not None and wrong_first.calls[1] is None



def test_unsure_among_the_shortlist_goes_to_all_languages():
    """A top confidence under min_confidence among the shortlist (even for its first choice)
    sends the head to all languages, whose answer stands."""
    d = TwoPass([("de", 0.9999), ("nl", 0.00001)], [("nl", 0.6), ("de", 0.4)],
                shortlist=FixedShortlist(["nl", "de"]), shortlist_size=2)
    assert d.detect(LONG)["code"] == "de"
    assert len(d.calls) == 2 and d.calls[0][0] is not None and d.calls[1][0] is None


def test_short_text_never_uses_the_shortlist():
    """A text no longer than the head (a sentence, a word) is weighed among all languages."""
    detector = Recording(head_chars=400, shortlist=FixedShortlist(["nl"]))
    assert detector.detect(GERMAN)["code"] == "de"
    assert detector.calls == [None]


# --- thresholds (scripted confidences) --------------------------------------------------
def test_low_confidence_is_undetermined(scripted):
    """A top candidate under min_confidence with no declared language gives und."""
    result = scripted([("en", 0.15), ("de", 0.1)]).detect(ENGLISH)
    assert result == {"code": "und", "confidence": 0.15, "method": "low_confidence"}


def test_one_or_two_words_have_their_own_bar(scripted, monkeypatch):
    """word_min_confidence holds texts of one or two words, min_confidence longer ones
    (here 0.8 and 0.7; both default to 0.9)."""
    detector = scripted([("de", 0.75), ("nl", 0.25)])
    monkeypatch.setattr(detector, "min_confidence", 0.7)
    monkeypatch.setattr(detector, "word_min_confidence", 0.8)
    assert detector.detect("Haus Garten Baum")["code"] == "de"
    assert detector.detect("Haus Garten")["code"] == "und"
    assert detector.detect("Haus") == {"code": "und", "confidence": 0.75,
                                       "method": "low_confidence"}
    assert scripted([("de", 0.85), ("nl", 0.15)]).detect("Haus")["code"] == "de"


def test_no_candidates_is_undetermined(scripted):
    """When the model finds no features, the answer is und (no_features)."""
    result = scripted([]).detect(ENGLISH)
    assert result == {"code": "und", "confidence": 0.0, "method": "no_features"}


def test_confident_top_candidate_wins_without_hint(scripted):
    """A confident top candidate is the answer, by the model."""
    result = scripted([("en", 0.95), ("de", 0.05)]).detect(ENGLISH)
    assert result == {"code": "en", "confidence": 0.95, "method": "model"}


# --- declared languages: news-please's cascade ------------------------------------------
def test_declared_language_the_model_allows_wins(scripted):
    """A declared language the model gives some confidence is taken (method hint)."""
    result = scripted([("hr", 0.8), ("bs", 0.2)]).detect(ENGLISH, ["bs"])
    assert result == {"code": "bs", "confidence": 0.2, "method": "hint"}


def test_declared_language_the_model_rules_out_loses(scripted):
    """A template's lang="en" on a German story: the model overrules the declaration."""
    result = scripted([("de", 0.999), ("en", 0.0001)]).detect(GERMAN, ["en"])
    assert result == {"code": "de", "confidence": 0.999, "method": "model"}


def test_declared_language_overruled_on_real_text(detector):
    """The same with the real model: German text declared English stays German."""
    assert detector.detect(GERMAN, ["en"])["code"] == "de"
    assert detector.detect(GERMAN, ["de"]) == detector.detect(GERMAN)


def test_hint_agreeing_with_confident_top_is_plain_model(scripted):
    """A hint that agrees with a confident model changes nothing: the method stays model."""
    result = scripted([("en", 0.95), ("de", 0.05)]).detect(ENGLISH, ["en", "de"])
    assert result == {"code": "en", "confidence": 0.95, "method": "model"}


def test_hint_settles_unsure_model(scripted):
    """An unsure model (would abstain) takes a declared language it allows."""
    result = scripted([("en", 0.12), ("de", 0.08)]).detect("Hi there", ["de"])
    assert result == {"code": "de", "confidence": 0.08, "method": "hint"}


def test_scraper_hint_before_page_language(scripted):
    """The scraper's hint is tried before the page's declared language."""
    detector = scripted([("en", 0.4), ("de", 0.35), ("fr", 0.25)])
    assert detector.detect(ENGLISH, ["fr", "de"])["code"] == "fr"
    assert detector.detect(ENGLISH, [None, "de"])["code"] == "de"
    assert detector.detect(ENGLISH, ["it", "de"])["code"] == "de"  # it: ruled out


def test_declared_language_taken_when_text_cannot_decide(detector):
    """No letters: the declared language is all there is (news-please's order)."""
    assert detector.detect("12:30 2025", [None, "fr"]) == {
        "code": "fr", "confidence": 0.0, "method": "hint"}


def test_declared_norwegian_agrees_with_either_standard(scripted, detector):
    """A declared `no` matches nb or nn; with no text to judge it becomes nb."""
    assert scripted([("nn", 0.6), ("nb", 0.4)]).detect(ENGLISH, ["no"])["code"] == "nn"
    assert scripted([("da", 0.6), ("nb", 0.4)]).detect(ENGLISH, ["nb-NO"])["code"] == "nb"
    assert detector.detect(NYNORSK, ["no"])["code"] == "nn"
    assert detector.detect("", ["no"])["code"] == "nb"


def test_declared_language_outside_the_model(scripted):
    """A language the model does not know (Galician) is taken only when the model has no
    answer of its own."""
    assert scripted([("pt", 0.9), ("es", 0.1)]).detect(ENGLISH, ["gl"])["code"] == "pt"
    assert scripted([("pt", 0.1), ("es", 0.09)]).detect(ENGLISH, ["gl"]) == {
        "code": "gl", "confidence": 0.0, "method": "hint"}


def test_call_uses_scraper_and_html_hints(scripted):
    """The stage reads hints.language and hints.html_lang from the cleaned document."""
    detector = scripted([("en", 0.5), ("nl", 0.45)])
    doc = detector({"id": "x", "text": ENGLISH, "hints": {"language": None, "html_lang": "nl"}})
    assert doc["language"] == {"code": "nl", "confidence": 0.45, "method": "hint"}


# --- codes and configuration ------------------------------------------------------------
def test_iso639_1_normalises_tags():
    """Regions and scripts are dropped; deprecated and three-letter codes are mapped."""
    assert iso639_1("zh-cn") == "zh"
    assert iso639_1("zh-Hant-TW") == "zh"
    assert iso639_1("en_GB") == "en"
    assert iso639_1("iw") == "he"
    assert iso639_1("deu") == "de"
    assert iso639_1("ger") == "de"
    assert iso639_1("nob") == "nb"
    assert iso639_1("en") == "en"


def test_restricted_language_set():
    """A configured subset is all the detector chooses among."""
    detector = LanguageDetector(languages=["en", "de", "fr"])
    assert detector.languages == {"en", "de", "fr"}
    assert detector.detect(RUSSIAN)["code"] == "und"  # Cyrillic: none of them
    assert detector.detect(GERMAN)["code"] == "de"


def test_unknown_language_is_a_configuration_error():
    with pytest.raises(ValueError, match="xx"):
        LanguageDetector(languages=["en", "xx"])


def test_resources_build_the_detector_from_settings():
    """worker/resources.py passes the language settings to the stage."""
    from worker.resources import Resources
    from worker.settings import Settings

    settings = Settings(language_languages=["en", "de"], language_head_chars=80,
                        language_word_min_confidence=0.7)
    stage = Resources(settings, embedded=True).pipeline.stages["language"]
    assert stage.languages == {"en", "de"}
    assert stage.head_chars == 80 and stage.word_min_confidence == 0.7
    assert isinstance(stage.shortlist, Shortlist) and stage.shortlist_size == 8
    off = Resources(Settings(language_shortlist=0), embedded=True).pipeline.stages["language"]
    assert off.shortlist is None


def test_sample_cuts_at_word_boundary():
    """The sample is at most max_chars long and ends at a word boundary."""
    text = "alpha beta gamma delta epsilon"
    assert sample(text, 100) == text
    assert sample(text, 14) == "alpha beta"
    assert len(sample("x" * 50, 10)) == 10
