"""`enrich bench [CORPUS]`: the throughput, latency, memory and Redis figures of the issue
"Performance", side by side in one run, with each target reported as met or not met.

Cheap to import (the CLI imports it at start-up): the phases load what they need when the
command runs.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import click

EXIT_FAILED = 1  # a phase failed or was interrupted: some figures are missing
EXIT_NO_DATA = 2
# Defaults of a full run, and of --quick (CI and tests: every figure, small counts).
FULL = {"articles": None, "latency_articles": 600, "rss_at": "5000,20000",
        "accounting_articles": 50, "warmup": 16, "idle_seconds": 5.0}
QUICK = {"articles": 24, "latency_articles": 12, "rss_at": "100,160",
         "accounting_articles": 6, "warmup": 8, "idle_seconds": 1.0}
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _counts(value: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in value.replace(" ", "").split(",") if x})
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of counts: {value!r}") from None
    if not counts or counts[0] < 1:
        raise click.BadParameter("give at least one positive count, e.g. 5000,20000")
    return counts


def _stop_on_sigterm(*_) -> None:
    raise KeyboardInterrupt("SIGTERM")


@click.command("bench")
@click.argument("corpus_path", required=False, type=click.Path(path_type=Path))
@click.option("--articles", "-n", type=click.IntRange(min=2), default=None,
              help="Articles for the ceiling, naive and end-to-end runs (default: the corpus "
                   "once; more reuses it with new ids).")
@click.option("--latency-articles", type=click.IntRange(min=2), default=None,
              help="Articles published at a pace for the latency figures (default 600).")
@click.option("--latency-load", type=click.FloatRange(0.05, 1.0), default=0.5, show_default=True,
              help="Publishing pace of the latency phase, as a share of the measured "
                   "end-to-end throughput.")
@click.option("--rss-at", default=None,
              help="Articles through the worker at which its pool children's RSS is read "
                   "(default 5000,20000).")
@click.option("--accounting-articles", type=click.IntRange(min=0), default=None,
              help="Articles published under Redis MONITOR to split commands by origin "
                   "(default 50; 0 skips).")
@click.option("--concurrency", "-c", type=click.IntRange(min=2), default=2, show_default=True,
              help="Pool processes of the worker, and processes of the second ceiling run.")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Repeat the throughput runs (naive, ceilings, end to end) this often. "
                   "End to end ÷ ceiling and 1 -> N processes are taken within each round "
                   "(both ceilings split around its end-to-end run) and their figure is the "
                   "median of the rounds; the other runs' figure is their best round.")
@click.option("--postgres-url", envvar="ENRICH_BENCH_POSTGRES_URL", default=DEFAULT_POSTGRES,
              show_default=True, help="PostgreSQL where a schema is made for the run and "
                                      "dropped after it (env ENRICH_BENCH_POSTGRES_URL).")
@click.option("--redis-server", default="redis-server", show_default=True,
              help="redis-server binary: the run starts its own on a free port.")
@click.option("--worker-args", default="",
              help="Extra arguments for `enrich worker` (experiments), e.g. "
                   "'--max-tasks-per-child 1000'.")
@click.option("--quick", is_flag=True,
              help="Small counts (24 articles, RSS at 100 and 160): every figure, for CI "
                   "and tests.")
@click.option("--json", "as_json", is_flag=True, help="Print only the figures, as one JSON object.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Also write the figures as JSON to this file (rewritten after each phase).")
def bench_command(corpus_path, articles, latency_articles, latency_load, rss_at,
                  accounting_articles, concurrency, rounds, postgres_url, redis_server, worker_args,
                  quick, as_json, output) -> None:
    """Measure throughput (ceiling, end to end, naive peer), per-stage cost, latency, worker
    memory and Redis traffic on one corpus; report each target of the issue as met or not."""
    from worker.bench import report
    from worker.bench.corpus import load
    from worker.bench.runner import Options, run_bench
    from worker.evaluation.readers import DataError

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    # Steady state on both sides: every language model loaded before the clock starts, in
    # the ceiling's processes and the worker's children alike (inherited environment). With
    # lazy loading each side would pay a model's first load (about 15 ms) for every language
    # its run meets first, which a long-running worker pays once. The RSS figures are then
    # those of a worker that has met every language. ENRICH_LANGUAGE_PRELOAD=false overrides.
    os.environ.setdefault("ENRICH_LANGUAGE_PRELOAD", "true")
    from worker.settings import get_settings

    get_settings.cache_clear()
    preset = QUICK if quick else FULL
    try:
        corpus = load(corpus_path)
    except DataError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_NO_DATA)
    options = Options(
        articles=articles or preset["articles"] or len(corpus),
        latency_articles=latency_articles or preset["latency_articles"],
        rss_at=_counts(rss_at or preset["rss_at"]),
        accounting_articles=preset["accounting_articles"] if accounting_articles is None
        else accounting_articles,
        concurrency=concurrency, rounds=rounds, latency_load=latency_load, warmup=preset["warmup"],
        idle_seconds=preset["idle_seconds"], postgres_url=postgres_url,
        redis_server=redis_server, quick=quick, worker_args=shlex.split(worker_args),
    )
    started = time.monotonic()

    def say(message: str) -> None:
        click.echo(f"[{time.monotonic() - started:7.1f}s] {message}", err=True)

    def save(figures) -> None:
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            partial = output.with_name(output.name + ".tmp")
            partial.write_text(json.dumps(figures, ensure_ascii=False, indent=2), encoding="utf-8")
            os.replace(partial, output)

    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        figures = run_bench(corpus, options, say, save)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not as_json:
        from rich.console import Console

        report.render(figures, Console(width=None if sys.stdout.isatty() else 110))
    click.echo(json.dumps(figures, ensure_ascii=False))
    if figures["errors"]:
        sys.exit(EXIT_FAILED)
