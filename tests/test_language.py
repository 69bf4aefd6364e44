"""Language stage: seeded langdetect on cleaned text, und when unsure, hints break ties."""

from __future__ import annotations

import pytest

from worker.stages.cleaning import clean
from worker.stages.language import LanguageDetector, iso639_1, sample

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


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


class ScriptedDetector(LanguageDetector):
    """A detector whose candidate probabilities are set by the test."""

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


def test_seed_is_english(detector, seed_text):
    """The cleaned seed article is detected as English with high confidence."""
    doc = detector(clean({"id": "seed", "text": seed_text}))
    assert doc["language"]["code"] == "en"
    assert doc["language"]["method"] == "langdetect"
    assert doc["language"]["confidence"] >= 0.9


@pytest.mark.parametrize(
    ("text", "code"),
    [(GERMAN, "de"), (RUSSIAN, "ru"), (ENGLISH, "en"),
     (CHINESE_SIMPLIFIED, "zh"), (CHINESE_TRADITIONAL, "zh")],
    ids=["german", "russian", "english", "chinese-simplified", "chinese-traditional"],
)
def test_snippets_detected(detector, text, code):
    """Short news snippets in several languages get their ISO 639-1 code."""
    result = detector.detect(text)
    assert result["code"] == code
    assert result["method"] == "langdetect"
    assert 0.8 <= result["confidence"] <= 1.0


def test_chinese_variants_map_to_zh():
    """langdetect's zh-cn and zh-tw become plain zh; other codes lose nothing."""
    assert iso639_1("zh-cn") == "zh"
    assert iso639_1("zh-TW") == "zh"
    assert iso639_1("en") == "en"


def test_probabilities_merge_chinese_variants(detector, monkeypatch):
    """Probabilities of zh-cn and zh-tw are summed into one zh candidate, best first."""
    from langdetect.language import Language

    class FakeDetector:
        def append(self, text):
            pass

        def get_probabilities(self):
            return [Language("ja", 0.4), Language("zh-cn", 0.35), Language("zh-tw", 0.25)]

    monkeypatch.setattr(detector._factory, "create", lambda: FakeDetector())
    result = detector.probabilities("irrelevant")
    assert [code for code, _ in result] == ["zh", "ja"]
    assert result[0][1] == pytest.approx(0.6)


def test_too_short_text_is_undetermined(detector):
    """Fewer letters than min_chars gives und with method too_short."""
    assert detector.detect("Hi there") == {"code": "und", "confidence": 0.0, "method": "too_short"}


def test_digits_and_punctuation_do_not_count_as_letters(detector):
    """A long run of digits and symbols is still too short: only letters count."""
    result = detector.detect("2025-01-02 12:30 +44 (0)20 7946 0958 -- 3,000 / 400 %")
    assert result["method"] == "too_short"
    assert result["code"] == "und"


def test_empty_text_is_undetermined(detector):
    """Empty text gives und, never an exception."""
    assert detector.detect("")["code"] == "und"


def test_same_text_same_answer(detector):
    """Detection is deterministic: five calls and a fresh detector agree exactly."""
    mixed = "Der Bürgermeister said the Brücke will be closed pendant les travaux de printemps."
    answers = [detector.detect(mixed) for _ in range(5)]
    answers.append(LanguageDetector().detect(mixed))
    probabilities = [detector.probabilities(mixed) for _ in range(5)]
    assert all(a == answers[0] for a in answers)
    assert all(p == probabilities[0] for p in probabilities)


def test_low_confidence_is_undetermined(scripted):
    """A top candidate under min_confidence with no helpful hint gives und."""
    result = scripted([("en", 0.6), ("de", 0.3)]).detect(ENGLISH)
    assert result["code"] == "und"
    assert result["method"] == "low_confidence"
    assert result["confidence"] == pytest.approx(0.6)


def test_no_candidates_is_undetermined(scripted):
    """When the model finds no features, the answer is und (no_features)."""
    result = scripted([]).detect(ENGLISH)
    assert result == {"code": "und", "confidence": 0.0, "method": "no_features"}


def test_confident_top_candidate_wins_without_hint(scripted):
    """A confident top candidate is the answer, by langdetect."""
    result = scripted([("en", 0.95), ("de", 0.05)]).detect(ENGLISH)
    assert result == {"code": "en", "confidence": 0.95, "method": "langdetect"}


def test_hint_breaks_tie_for_close_runner_up(scripted):
    """A hinted candidate within the tie margin of the top one wins."""
    result = scripted([("en", 0.55), ("de", 0.45)]).detect(ENGLISH, ["de"])
    assert result == {"code": "de", "confidence": 0.45, "method": "hint_tiebreak"}


def test_hint_ignored_when_candidate_far_behind(scripted):
    """A hinted candidate far behind the top one does not win."""
    result = scripted([("en", 0.9), ("de", 0.1)]).detect(ENGLISH, ["de"])
    assert result["code"] == "en"
    assert result["method"] == "langdetect"


def test_hint_not_among_candidates_is_ignored(scripted):
    """A hint for a language the model did not propose changes nothing."""
    result = scripted([("en", 0.55), ("de", 0.45)]).detect(ENGLISH, ["fr"])
    assert result["code"] == "und"
    assert result["method"] == "low_confidence"


def test_hint_confirms_top_of_close_pair(scripted):
    """A hint for the top one of two close candidates settles the tie for the top one."""
    result = scripted([("en", 0.55), ("de", 0.45)]).detect(ENGLISH, ["en"])
    assert result == {"code": "en", "confidence": 0.55, "method": "hint_tiebreak"}


def test_hint_agreeing_with_confident_top_is_plain_langdetect(scripted):
    """A hint that agrees with a confident model breaks no tie: the method stays langdetect."""
    result = scripted([("en", 0.95), ("de", 0.05)]).detect(ENGLISH, ["en", "de"])
    assert result == {"code": "en", "confidence": 0.95, "method": "langdetect"}


def test_first_hint_has_priority(scripted):
    """The scraper's hint is tried before the page's declared language."""
    detector = scripted([("en", 0.4), ("de", 0.35), ("fr", 0.25)])
    assert detector.detect(ENGLISH, ["fr", "de"])["code"] == "fr"
    assert detector.detect(ENGLISH, [None, "de"])["code"] == "de"


def test_call_uses_scraper_and_html_hints(scripted):
    """The stage reads hints.language and hints.html_lang from the cleaned document."""
    detector = scripted([("en", 0.5), ("nl", 0.45)])
    doc = detector({"id": "x", "text": ENGLISH, "hints": {"language": None, "html_lang": "nl"}})
    assert doc["language"]["code"] == "nl"
    assert doc["language"]["method"] == "hint_tiebreak"


def test_title_helps_short_text(detector):
    """A short text with its title in front has enough letters to decide."""
    doc = detector({"id": "x", "text": "Die Brücke wird erneuert.",
                    "title": "Stadtverwaltung kündigt Bauarbeiten an der alten Brücke an"})
    assert doc["language"]["code"] == "de"


def test_sample_cuts_at_word_boundary():
    """The sample is at most max_chars long and ends at a word boundary."""
    text = "alpha beta gamma delta epsilon"
    assert sample(text, 100) == text
    assert sample(text, 14) == "alpha beta"
    assert len(sample("x" * 50, 10)) == 10
