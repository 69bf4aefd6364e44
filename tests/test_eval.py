"""`enrich eval`: the scoring functions on hand-made inputs, and each stage's evaluation on a
small slice of the shared evaluation data (skipped when ../shared/eval is absent)."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.evaluation import readers
from worker.evaluation.scoring import (
    LanguageTally,
    LineTally,
    SpanTally,
    TokenTally,
    bio_to_spans,
    close_links,
    line_figures,
    map_label,
    mapped_spans,
    pairwise_prf,
    prf,
    token_prf,
    tokens,
)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# --- generic ------------------------------------------------------------------------------
def test_prf_edge_cases():
    assert prf(0, 0, 0) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert prf(0, 0, 5) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert prf(0, 3, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    figures = prf(2, 4, 8)
    assert close(figures["precision"], 0.5) and close(figures["recall"], 0.25)
    assert close(figures["f1"], 2 * 0.5 * 0.25 / 0.75)


# --- cleaning -----------------------------------------------------------------------------
def test_tokens_lower_case_words_only():
    assert tokens("The CAT's “hat”, 3 times!") == ["the", "cat", "s", "hat", "3", "times"]
    assert tokens("Привет, МИР") == ["привет", "мир"]


def test_token_prf_bag_of_words_by_hand():
    # predicted: the cat sat on the mat (6 tokens); gold: the cat sat (3 tokens)
    # overlap as bags: the(1) cat(1) sat(1) = 3 -> P 3/6, R 3/3, F1 2/3
    figures = token_prf("The cat sat on the mat.", "the CAT sat")
    assert close(figures["precision"], 0.5)
    assert close(figures["recall"], 1.0)
    assert close(figures["f1"], 2 / 3)
    # repeated words count as often as they occur in both: gold "a a a b", predicted "a b b"
    # overlap a(1) + b(1) = 2 -> P 2/3, R 2/4
    figures = token_prf("a b b", "a a a b")
    assert close(figures["precision"], 2 / 3) and close(figures["recall"], 0.5)


def test_token_tally_macro_and_micro():
    tally = TokenTally()
    tally.add("a b", "a b")  # P 1, R 1
    tally.add("", "c d e f")  # nothing extracted: P 0, R 0
    summary = tally.summary()
    assert close(summary["precision"], 0.5) and close(summary["recall"], 0.5)
    assert close(summary["micro_precision"], 1.0)  # 2 of 2 extracted tokens are right
    assert close(summary["micro_recall"], 2 / 6)
    assert close(summary["empty_share"], 0.5)


RAW = """Home
Latest News
The quick brown fox jumps over
the lazy dog near the river bank.
ADVERTISEMENT
It was not amused
by any of it.
Share this article
Terms of use | Privacy policy"""
GOLD = """The quick brown fox jumps over the lazy dog near the river bank.
It was not amused by any of it."""


def test_line_figures_hard_wrapped_identity_keeps_every_gold_line():
    figures = line_figures(RAW, GOLD, RAW)
    assert figures.gold_lines == 2 and figures.gold_lost == 0
    assert figures.content_lines == 4 and figures.content_kept == 4
    assert figures.boilerplate_lines == 5 and figures.boilerplate_kept == 5
    assert figures.kept_boilerplate[0] == "Home"


def test_line_figures_perfect_and_lossy_extractions():
    figures = line_figures(RAW, GOLD, GOLD)  # re-wrapped output: lines still match
    assert (figures.gold_lost, figures.boilerplate_kept, figures.content_kept) == (0, 0, 4)
    # one wrapped piece of the second paragraph dropped, one boilerplate line kept
    output = "Latest News\nThe quick brown fox jumps over\nthe lazy dog near the river bank.\n" \
             "It was not amused"
    figures = line_figures(RAW, GOLD, output)
    assert figures.gold_lost == 1 and figures.lost_gold == ["It was not amused by any of it."]
    assert figures.lost_content == ["by any of it."]
    assert figures.boilerplate_kept == 1 and figures.kept_boilerplate == ["Latest News"]
    tally = LineTally()
    tally.add(figures)
    summary = tally.summary()
    assert close(summary["line_recall"], 1 / 2)  # 1 of 2 gold lines intact
    assert close(summary["line_precision"], 3 / 4)  # 3 content lines among 4 kept lines
    assert summary["articles_no_gold_line_lost"] == 0.0
    assert close(summary["boilerplate_removed_share"], 4 / 5)


# --- entities -----------------------------------------------------------------------------
def test_bio_to_spans_joins_tokens_with_single_spaces():
    text, spans = bio_to_spans(
        ["Mr", "John", "Smith", "visited", "New", "York", "and", "Acme", "Corp", "."],
        ["O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG", "O"],
    )
    assert text == "Mr John Smith visited New York and Acme Corp ."
    assert spans == [(3, 13, "PER"), (22, 30, "LOC"), (35, 44, "ORG")]
    assert [text[s:e] for s, e, _ in spans] == ["John Smith", "New York", "Acme Corp"]


def test_bio_to_spans_conlleval_rules():
    # I- after O starts an entity; I- of another type starts a new one; B- splits
    _, spans = bio_to_spans(["a", "b", "c", "d", "e"], ["I-LOC", "I-PER", "B-PER", "B-PER", "I-PER"])
    assert spans == [(0, 1, "LOC"), (2, 3, "PER"), (4, 5, "PER"), (6, 9, "PER")]
    _, spans = bio_to_spans(["x", "y"], ["B-LOCderiv", "O"])
    assert spans == [(0, 1, "LOCderiv")]
    with pytest.raises(ValueError):
        bio_to_spans(["a"], ["O", "O"])


def test_label_mapping():
    assert [map_label(x) for x in ("PERSON", "PER", "PERS", "GPE", "LOC", "FAC", "ORG")] == [
        "PER", "PER", "PER", "LOC", "LOC", "LOC", "ORG"]
    assert [map_label(x) for x in ("MISC", "NORP", "DATE", None, "LOCderiv")] == [None] * 5
    assert mapped_spans([(0, 3, "GPE"), (4, 8, "NORP"), (9, 12, "PERSON")]) == {
        (0, 3, "LOC"), (9, 12, "PER")}


def test_span_tally_exact_span_micro_and_per_label():
    tally = SpanTally()
    gold = {(0, 4, "PER"), (10, 15, "LOC"), (20, 25, "ORG")}
    predicted = {(0, 4, "PER"), (10, 15, "ORG"), (20, 24, "ORG"), (30, 33, "LOC")}
    tally.add(predicted, gold)
    summary = tally.summary()
    # one exact match (PER) of 4 predicted and 3 gold
    assert close(summary["precision"], 1 / 4) and close(summary["recall"], 1 / 3)
    assert summary["per_label"]["PER"]["f1"] == 1.0
    assert summary["per_label"]["LOC"]["f1"] == 0.0
    assert summary["label_confusions"] == {"LOC->ORG": 1}
    assert summary["boundary_errors"] == 1  # ORG 20-25 vs 20-24


# --- dedupe -------------------------------------------------------------------------------
def test_transitive_closure_pairwise_prf_on_a_toy_stream():
    ids = ["a", "b", "c", "d", "e"]
    gold = {"a": "X", "b": "X", "c": "X", "d": "Y", "e": "Y"}  # gold pairs: ab ac bc de = 4
    # c -> b -> a chains into {a, b, c}; e -> c wrongly joins it; d alone
    links = {"a": None, "b": "a", "c": "b", "d": None, "e": "c"}
    clusters = close_links(ids, links)
    assert clusters["a"] == clusters["b"] == clusters["c"] == clusters["e"] != clusters["d"]
    figures = pairwise_prf(clusters, gold)
    # predicted pairs: C(4,2) = 6 (ab ac ae bc be ce); true: ab ac bc = 3
    assert (figures["predicted_pairs"], figures["gold_pairs"], figures["true_pairs"]) == (6, 4, 3)
    assert close(figures["precision"], 0.5) and close(figures["recall"], 0.75)
    assert close(figures["f1"], 0.6)
    # no links at all: no predicted pairs, recall 0
    alone = pairwise_prf(close_links(ids, {}), gold)
    assert alone["predicted_pairs"] == 0 and alone["recall"] == 0.0 and alone["f1"] == 0.0


def test_close_links_ignores_links_out_of_the_stream():
    clusters = close_links(["a", "b"], {"b": "zzz"})
    assert clusters == {"a": "a", "b": "b"}


# --- language -----------------------------------------------------------------------------
def test_language_tally_counts_abstentions_apart():
    tally = LanguageTally()
    for gold, predicted in [("en", "en"), ("en", "und"), ("de", "nl"), ("de", "de"), ("fr", "und")]:
        tally.add(gold, predicted)
    summary = tally.summary()
    assert summary["n"] == 5 and summary["abstained"] == 2
    assert close(summary["accuracy"], 2 / 5)
    assert close(summary["abstention_share"], 2 / 5)
    assert close(summary["answered_accuracy"], 2 / 3)
    assert tally.confusions == {("de", "nl"): 1}


# --- data location ------------------------------------------------------------------------
def test_missing_data_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["eval", "dedupe", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "evaluation data for 'dedupe' not found" in result.stderr
    with pytest.raises(readers.DataError, match="gold clusters not found"):
        (tmp_path / "stream.jsonl").write_text("{}\n")
        readers.dedupe_files(tmp_path / "stream.jsonl")


# --- each stage on a slice of the shared data ---------------------------------------------
FIGURES = ("precision", "recall", "f1", "accuracy", "answered_accuracy", "abstention_share",
           "line_precision", "line_recall", "line_f1", "articles_no_gold_line_lost")


def _run(stage: str, data) -> dict:
    result = CliRunner().invoke(
        main, ["eval", stage, "--data", str(data), "--limit", "20", "--baseline", "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _figures(node: dict) -> dict[str, float]:
    """The ratio figures of one system's result, nested ones included (kinds, per_label)."""
    found = {}
    for key, value in node.items():
        if key in FIGURES and isinstance(value, (int, float)):
            found[key] = value
        elif isinstance(value, dict) and key in ("kinds", "all", "per_label"):
            for inner_key, inner in value.items():
                if isinstance(inner, dict):
                    found.update({f"{key}.{inner_key}.{k}": v for k, v in _figures(inner).items()})
                elif inner_key in FIGURES:
                    found[f"{key}.{inner_key}"] = inner
    return found


def _check_both_in_unit_interval(result: dict, stage: str) -> None:
    assert result["stage"] == stage and result["limit"] == 20
    assert result["sets"]
    for result_set in result["sets"]:
        assert 0 < result_set["items"] <= 20
        for system in ("ours", "baseline"):
            figures = _figures(result_set[system])
            assert figures, f"no figures for {system} in {result_set['name']}"
            for name, value in figures.items():
                assert 0.0 <= value <= 1.0, f"{result_set['name']} {system} {name} = {value}"


def test_eval_lang_slice(eval_dir):
    result = _run("lang", eval_dir / "lang" / "lang.jsonl")
    _check_both_in_unit_interval(result, "lang")
    ours = result["sets"][0]["ours"]
    assert ours["per_language"] and "accuracy" in ours["all"]


def test_eval_clean_slice(eval_dir):
    result = _run("clean", eval_dir / "clean")
    _check_both_in_unit_interval(result, "clean")
    by_name = {s["name"]: s for s in result["sets"]}
    assert {"html_l3s_gn1", "html_cleaneval_dev", "text_wrapped"} <= set(by_name)
    wrapped = by_name["text_wrapped"]
    assert wrapped["kind"] == "text" and "line_f1" in wrapped["ours"]
    assert wrapped["baseline"]["line_recall"] == 1.0  # identity loses nothing


def test_eval_ner_slice(eval_dir):
    result = _run("ner", eval_dir / "ner")
    _check_both_in_unit_interval(result, "ner")
    assert {"en", "de", "es", "ru", "uk"} <= set(result["by_language"])
    english = result["by_language"]["en"]
    assert english["ours"]["f1"] > 0.2 and english["baseline"]["f1"] > 0.2


def test_eval_dedupe_slice(eval_dir):
    result = _run("dedupe", eval_dir / "dedupe")
    _check_both_in_unit_interval(result, "dedupe")
    ours = result["sets"][0]["ours"]
    assert ours["dedupe_articles_per_second"] > 0
    assert not ours["rejected"]
