"""Language stage: cleaned text -> {code, confidence, method}.

Runs after cleaning: ad markers, navigation and markup would otherwise vote. langdetect
with a fixed seed (same text, same answer) on a bounded sample; ``und`` when there is too
little text or the model is unsure; the scraper's hint (or the page's declared language)
breaks ties between close candidates.
"""

from __future__ import annotations

import re
from typing import Any

from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

UNDETERMINED = "und"
_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
_TIE_MARGIN = 0.25  # a hinted candidate this close to the top one wins


def iso639_1(code: str) -> str:
    """langdetect code -> ISO 639-1 (zh-cn, zh-tw -> zh)."""
    return code.split("-")[0].lower()


def sample(text: str, max_chars: int) -> str:
    """The first max_chars characters, cut at a word boundary."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > max_chars // 2 else max_chars]


class LanguageDetector:
    """Seeded langdetect over a bounded sample. One instance per process (profiles load once)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        sample_chars: int = 2000,
        min_chars: int = 20,
        min_confidence: float = 0.80,
    ) -> None:
        self._factory = DetectorFactory()
        self._factory.load_profile(PROFILES_DIRECTORY)
        self._factory.set_seed(seed)
        self.sample_chars = sample_chars
        self.min_chars = min_chars
        self.min_confidence = min_confidence

    def probabilities(self, text: str) -> list[tuple[str, float]]:
        """Candidate languages (ISO 639-1) with probabilities, best first."""
        detector = self._factory.create()
        detector.append(text)
        try:
            found = detector.get_probabilities()
        except LangDetectException:
            return []
        merged: dict[str, float] = {}
        for item in found:
            code = iso639_1(item.lang)
            merged[code] = merged.get(code, 0.0) + item.prob
        return sorted(merged.items(), key=lambda kv: -kv[1])

    def detect(self, text: str, hints: list[str | None] = ()) -> dict[str, Any]:
        text = sample(text, self.sample_chars)
        hints = [h for h in hints if h]
        if len(_LETTERS.findall(text)) < self.min_chars:
            return {"code": UNDETERMINED, "confidence": 0.0, "method": "too_short"}
        candidates = self.probabilities(text)
        if not candidates:
            return {"code": UNDETERMINED, "confidence": 0.0, "method": "no_features"}
        top_code, top_prob = candidates[0]
        for hint in hints:
            for code, prob in candidates:
                if code == hint and top_prob - prob <= _TIE_MARGIN:
                    if code == top_code and top_prob >= self.min_confidence:
                        return {"code": code, "confidence": round(prob, 4), "method": "langdetect"}
                    return {"code": code, "confidence": round(prob, 4), "method": "hint_tiebreak"}
        if top_prob < self.min_confidence:
            return {"code": UNDETERMINED, "confidence": round(top_prob, 4), "method": "low_confidence"}
        return {"code": top_code, "confidence": round(top_prob, 4), "method": "langdetect"}

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        hints = doc.get("hints") or {}
        basis = doc.get("text") or ""
        if doc.get("title"):
            basis = f"{doc['title']}\n{basis}" if len(basis) < self.sample_chars else basis
        doc["language"] = self.detect(basis, [hints.get("language"), hints.get("html_lang")])
        return doc
