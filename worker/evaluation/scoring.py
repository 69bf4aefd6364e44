"""Pure scoring functions of the stage-quality evaluation (no I/O, no models).

Definitions follow /work/shared/eval/README.md:

- cleaning: bag-of-word-tokens precision/recall/F1 (lower-cased ``\\w+`` words, multiset
  intersection), averaged per document (macro) and summed (micro); for scraped text also
  line-level figures (:func:`line_figures`);
- entities: exact-span micro F1 over PER, LOC, ORG with per-label figures;
- dedupe: pairwise precision/recall/F1 over transitively closed ``duplicate_of`` links;
- language: accuracy with abstentions counted apart (:class:`LanguageTally`).

Empty cases everywhere: nothing predicted and nothing to find is perfect (1.0); nothing
predicted but something to find is precision 0 (and the other way round, recall 0).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)

PRF = dict[str, float]


# --- generic ------------------------------------------------------------------------------
def tokens(text: str | None) -> list[str]:
    """Lower-cased word tokens (``\\w+``): punctuation and quote styles do not count."""
    return _WORD.findall((text or "").lower())


def prf(tp: int | float, n_pred: int | float, n_gold: int | float) -> PRF:
    """Precision, recall, F1 from true positives and the predicted / gold totals."""
    if n_pred:
        precision = tp / n_pred
    else:
        precision = 1.0 if not n_gold else 0.0
    if n_gold:
        recall = tp / n_gold
    else:
        recall = 1.0 if not n_pred else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# --- cleaning: bag of tokens ------------------------------------------------------------
def token_counts(predicted: str | None, gold: str | None) -> tuple[int, int, int]:
    """(overlap, predicted tokens, gold tokens) of two texts as bags of lower-cased words."""
    pred, ref = Counter(tokens(predicted)), Counter(tokens(gold))
    overlap = sum((pred & ref).values())
    return overlap, sum(pred.values()), sum(ref.values())


def token_prf(predicted: str | None, gold: str | None) -> PRF:
    """Bag-of-words P/R/F1 of one extracted text against its gold text."""
    return prf(*token_counts(predicted, gold))


@dataclass
class TokenTally:
    """Per-document token P/R/F1, reported as the mean over documents (macro, as in the
    article-extraction benchmarks) and over the summed counts (micro)."""

    docs: list[PRF] = field(default_factory=list)
    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0
    empty: int = 0  # documents for which nothing was extracted

    def add(self, predicted: str | None, gold: str | None) -> PRF:
        tp, n_pred, n_gold = token_counts(predicted, gold)
        self.tp, self.n_pred, self.n_gold = self.tp + tp, self.n_pred + n_pred, self.n_gold + n_gold
        self.empty += n_pred == 0
        figures = prf(tp, n_pred, n_gold)
        self.docs.append(figures)
        return figures

    def summary(self) -> dict[str, Any]:
        micro = prf(self.tp, self.n_pred, self.n_gold)
        return {
            "documents": len(self.docs),
            "precision": mean(d["precision"] for d in self.docs),
            "recall": mean(d["recall"] for d in self.docs),
            "f1": mean(d["f1"] for d in self.docs),
            "micro_precision": micro["precision"],
            "micro_recall": micro["recall"],
            "micro_f1": micro["f1"],
            "empty_share": self.empty / len(self.docs) if self.docs else 0.0,
        }


# --- cleaning: lines of hard-wrapped scraped text ---------------------------------------
def aligned_positions(a: Sequence[str], b: Sequence[str]) -> tuple[set[int], set[int]]:
    """Positions of ``a`` and of ``b`` that a monotone token alignment pairs up."""
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    in_a: set[int] = set()
    in_b: set[int] = set()
    for i, j, size in matcher.get_matching_blocks():
        in_a.update(range(i, i + size))
        in_b.update(range(j, j + size))
    return in_a, in_b


def _stream(lines: Iterable[str]) -> tuple[list[str], list[list[int]], list[str]]:
    """Token stream of some lines, the stream positions of each line, and the line texts.

    Lines without a word token are left out: they carry nothing a bag of words can see.
    """
    stream: list[str] = []
    positions: list[list[int]] = []
    texts: list[str] = []
    for line in lines:
        words = tokens(line)
        if not words:
            continue
        positions.append(list(range(len(stream), len(stream) + len(words))))
        stream.extend(words)
        texts.append(line.strip())
    return stream, positions, texts


@dataclass
class LineFigures:
    """Line-level outcome of one scraped article (see :func:`line_figures`)."""

    gold_lines: int
    gold_lost: int
    content_lines: int  # input lines that carry article text
    content_kept: int
    boilerplate_lines: int  # input lines that are not article text
    boilerplate_kept: int
    kept_boilerplate: list[str]  # the texts of the boilerplate lines kept
    lost_content: list[str]  # the texts of the article-text input lines dropped
    lost_gold: list[str]  # the gold lines that lost words


def line_figures(raw_text: str, gold_text: str, output_text: str | None) -> LineFigures:
    """Which gold lines an extractor lost and which boilerplate lines it kept.

    Scraped text is hard-wrapped: one gold line (a paragraph) spans several input lines,
    with boilerplate lines ("ADVERTISEMENT") sometimes between them, and quote styles and
    spacing differ from the gold. Lines are therefore never compared as strings; the
    comparison is done on lower-cased word tokens, with monotone alignments
    (``difflib.SequenceMatcher``, autojunk off) between three token streams:

    - input vs gold: an input line is *content* when at least half of its tokens align
      with gold tokens, otherwise *boilerplate*. Boilerplate sits between aligned content,
      where the gold has no unaligned tokens left, so a stray "advertisement" line cannot
      borrow a gold word from elsewhere;
    - input vs output: an input line is *kept* when at least half of its tokens align
      with the output (an extractor that drops or keeps whole lines gets exact figures;
      re-wrapping or whitespace normalisation does not matter);
    - gold vs output: a gold line is *lost* unless every one of its tokens aligns with the
      output (a paragraph missing one wrapped line of it counts as lost).

    Recall errors are lost gold lines (counted per gold line); precision errors are kept
    boilerplate lines (counted per input line: precision = kept content input lines /
    all kept input lines).
    """
    gold_stream, gold_pos, gold_texts = _stream(gold_text.splitlines())
    in_stream, in_pos, in_texts = _stream(raw_text.splitlines())
    out_stream = tokens(output_text)

    in_gold, _ = aligned_positions(in_stream, gold_stream)
    in_out, _ = aligned_positions(in_stream, out_stream)
    gold_out, _ = aligned_positions(gold_stream, out_stream)

    content = content_kept = boiler = boiler_kept = 0
    kept_boilerplate: list[str] = []
    lost_content: list[str] = []
    for positions, text in zip(in_pos, in_texts, strict=True):
        is_content = 2 * sum(p in in_gold for p in positions) >= len(positions)
        kept = 2 * sum(p in in_out for p in positions) >= len(positions)
        if is_content:
            content += 1
            content_kept += kept
            if not kept:
                lost_content.append(text)
        else:
            boiler += 1
            boiler_kept += kept
            if kept:
                kept_boilerplate.append(text)
    lost_gold = [
        text for positions, text in zip(gold_pos, gold_texts, strict=True)
        if not all(p in gold_out for p in positions)
    ]
    return LineFigures(
        gold_lines=len(gold_texts), gold_lost=len(lost_gold),
        content_lines=content, content_kept=content_kept,
        boilerplate_lines=boiler, boilerplate_kept=boiler_kept,
        kept_boilerplate=kept_boilerplate, lost_content=lost_content, lost_gold=lost_gold,
    )


@dataclass
class LineTally:
    """Line figures summed over articles."""

    articles: int = 0
    intact: int = 0  # articles with no gold line lost
    clean: int = 0  # articles with no boilerplate line kept
    gold_lines: int = 0
    gold_lost: int = 0
    content_kept: int = 0
    boilerplate_lines: int = 0
    boilerplate_kept: int = 0
    kept_boilerplate: Counter = field(default_factory=Counter)

    def add(self, figures: LineFigures) -> None:
        self.articles += 1
        self.intact += figures.gold_lost == 0
        self.clean += figures.boilerplate_kept == 0
        self.gold_lines += figures.gold_lines
        self.gold_lost += figures.gold_lost
        self.content_kept += figures.content_kept
        self.boilerplate_lines += figures.boilerplate_lines
        self.boilerplate_kept += figures.boilerplate_kept
        self.kept_boilerplate.update(" ".join(t.split()) for t in figures.kept_boilerplate)

    def summary(self, top: int = 15) -> dict[str, Any]:
        recall = (self.gold_lines - self.gold_lost) / self.gold_lines if self.gold_lines else 1.0
        kept = self.content_kept + self.boilerplate_kept
        precision = self.content_kept / kept if kept else (1.0 if not self.gold_lines else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        n = self.articles
        return {
            "line_precision": precision,
            "line_recall": recall,
            "line_f1": f1,
            "articles_no_gold_line_lost": self.intact / n if n else 0.0,
            "articles_no_boilerplate_kept": self.clean / n if n else 0.0,
            "boilerplate_removed_share": (
                1 - self.boilerplate_kept / self.boilerplate_lines if self.boilerplate_lines else 1.0
            ),
            "gold_lines": self.gold_lines,
            "gold_lines_lost": self.gold_lost,
            "boilerplate_lines": self.boilerplate_lines,
            "boilerplate_lines_kept": self.boilerplate_kept,
            "top_kept_boilerplate": self.kept_boilerplate.most_common(top),
        }


# --- entities -----------------------------------------------------------------------------
ENTITY_LABELS = ("PER", "LOC", "ORG")
_LABEL_MAP = {
    "PER": "PER", "PERS": "PER", "PERSON": "PER",
    "LOC": "LOC", "GPE": "LOC", "FAC": "LOC",
    "ORG": "ORG",
}

Span = tuple[int, int, str]  # (start, end exclusive, label)


def map_label(label: str | None) -> str | None:
    """A model's or a corpus's label -> PER, LOC, ORG, or None (dropped).

    PERSON (and the corpora's PER, PERS) -> PER; GPE, LOC, FAC -> LOC; ORG -> ORG.
    """
    return _LABEL_MAP.get((label or "").upper())


def bio_to_spans(tokens_: Sequence[str], tags: Sequence[str]) -> tuple[str, list[Span]]:
    """BIO-tagged tokens -> (tokens joined by single spaces, character spans with raw labels).

    As conlleval reads BIO: B-X starts an entity; I-X continues an open X entity and starts
    a new one otherwise (after O or another type); O closes. Labels are not mapped here.
    """
    if len(tokens_) != len(tags):
        raise ValueError(f"{len(tokens_)} tokens but {len(tags)} tags")
    spans: list[Span] = []
    offset = 0
    open_label: str | None = None
    open_start = open_end = 0
    for token, tag in zip(tokens_, tags, strict=True):
        start, end = offset, offset + len(token)
        offset = end + 1
        prefix, _, label = tag.partition("-")
        if tag == "O" or not label or prefix not in ("B", "I"):
            if open_label is not None:
                spans.append((open_start, open_end, open_label))
                open_label = None
            continue
        if prefix == "I" and open_label == label:
            open_end = end
            continue
        if open_label is not None:
            spans.append((open_start, open_end, open_label))
        open_label, open_start, open_end = label, start, end
    if open_label is not None:
        spans.append((open_start, open_end, open_label))
    return " ".join(tokens_), spans


def mapped_spans(spans: Iterable[tuple[int, int, str | None]]) -> set[Span]:
    """Spans with their labels mapped to PER/LOC/ORG; spans of other labels dropped."""
    out = set()
    for start, end, label in spans:
        mapped = map_label(label)
        if mapped is not None:
            out.add((start, end, mapped))
    return out


@dataclass
class SpanTally:
    """Exact-span matches (start, end and label all equal), micro over documents."""

    tp: Counter = field(default_factory=Counter)
    pred: Counter = field(default_factory=Counter)
    gold: Counter = field(default_factory=Counter)
    # gold spans found with the right boundaries but another label: (gold, predicted)
    confusions: Counter = field(default_factory=Counter)
    missed_boundary: int = 0  # gold spans overlapped by a same-label prediction, not exact

    def add(self, predicted: set[Span], gold: set[Span]) -> None:
        for start, end, label in predicted:
            self.pred[label] += 1
            self.tp[label] += (start, end, label) in gold
        for _, _, label in gold:
            self.gold[label] += 1
        by_bounds = {(s, e): lab for s, e, lab in predicted}
        for start, end, label in gold - predicted:
            other = by_bounds.get((start, end))
            if other is not None:
                self.confusions[(label, other)] += 1
            elif any(lab == label and s < end and start < e for s, e, lab in predicted):
                self.missed_boundary += 1

    def summary(self) -> dict[str, Any]:
        total = prf(sum(self.tp.values()), sum(self.pred.values()), sum(self.gold.values()))
        return {
            **total,
            "true_positives": sum(self.tp.values()),
            "gold_spans": sum(self.gold.values()),
            "predicted_spans": sum(self.pred.values()),
            "per_label": {
                label: {**prf(self.tp[label], self.pred[label], self.gold[label]),
                        "gold": self.gold[label], "predicted": self.pred[label],
                        "true_positives": self.tp[label]}
                for label in ENTITY_LABELS
            },
            "label_confusions": {f"{g}->{p}": n for (g, p), n in self.confusions.most_common()},
            "boundary_errors": self.missed_boundary,
        }


# --- dedupe -------------------------------------------------------------------------------
def close_links(ids: Sequence[str], duplicate_of: dict[str, str | None]) -> dict[str, str]:
    """id -> cluster representative, closing ``duplicate_of`` links transitively.

    Links to ids outside ``ids`` are ignored (each id is at least its own cluster).
    """
    parent = {i: i for i in ids}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in ids:
        target = duplicate_of.get(i)
        if target is not None and target in parent:
            a, b = root(i), root(target)
            if a != b:
                parent[a] = b
    return {i: root(i) for i in ids}


def _pairs(sizes: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def pairwise_prf(predicted: dict[str, str], gold: dict[str, str]) -> dict[str, Any]:
    """Pairwise P/R/F1 of two clusterings (id -> cluster key) over the same ids."""
    ids = list(gold)
    both = Counter((predicted[i], gold[i]) for i in ids)
    tp = _pairs(both.values())
    n_pred = _pairs(Counter(predicted[i] for i in ids).values())
    n_gold = _pairs(Counter(gold[i] for i in ids).values())
    return {**prf(tp, n_pred, n_gold), "true_pairs": tp, "predicted_pairs": n_pred,
            "gold_pairs": n_gold}


# --- language -----------------------------------------------------------------------------
UNDETERMINED = "und"


@dataclass
class LanguageTally:
    """Accuracy with abstentions (``und``) counted apart.

    ``accuracy`` counts an abstention as wrong; ``answered_accuracy`` is the accuracy of
    the items that got an answer.
    """

    n: int = 0
    correct: int = 0
    abstained: int = 0
    confusions: Counter = field(default_factory=Counter)

    def add(self, gold: str, predicted: str | None) -> None:
        self.n += 1
        if not predicted or predicted == UNDETERMINED:
            self.abstained += 1
        elif predicted == gold:
            self.correct += 1
        else:
            self.confusions[(gold, predicted)] += 1

    def summary(self) -> dict[str, Any]:
        answered = self.n - self.abstained
        return {
            "n": self.n,
            "accuracy": self.correct / self.n if self.n else 0.0,
            "abstained": self.abstained,
            "abstention_share": self.abstained / self.n if self.n else 0.0,
            "answered_accuracy": self.correct / answered if answered else 0.0,
        }
