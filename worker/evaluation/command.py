"""`enrich eval {lang,clean,ner,dedupe}`: measure a stage on the shared evaluation data.

Cheap to import (the CLI imports it at start-up): stages, models and rich load only when
the command runs.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import click

STAGES = ("lang", "clean", "ner", "dedupe")
EXIT_NO_DATA = 2


def run_eval(stage: str, data: Path | None = None, *, baseline: bool = False,
             limit: int | None = None, progress=None) -> tuple[dict, object]:
    """Evaluate one stage; returns (result dict, the stage's evaluation module)."""
    from worker.evaluation import readers
    from worker.evaluation.base import no_progress

    module = importlib.import_module(f"worker.evaluation.{stage}")
    path = data if data is not None else readers.default_data(stage)
    result = module.evaluate(path, baseline=baseline, limit=limit,
                             progress=progress or no_progress)
    return result, module


@click.command("eval")
@click.argument("stage", type=click.Choice(STAGES))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Data file (clean, ner: or a directory of sets; dedupe: the folder with "
                   "stream.jsonl and gold.jsonl, or the stream). Default: ../shared/eval/...")
@click.option("--baseline", is_flag=True, help="Also run the plain peer, side by side.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N items of each file.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def eval_command(stage: str, data: Path | None, baseline: bool, limit: int | None,
                 as_json: bool) -> None:
    """Measure a stage's quality (and with --baseline a plain peer's) on evaluation data."""
    import time

    from worker.evaluation.readers import DataError

    interactive = sys.stderr.isatty()
    progress_bar, update = None, None
    if interactive:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress_bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                                console=Console(stderr=True))
        task = progress_bar.add_task("loading", total=None)

        def update(description: str, done: int, total: int) -> None:
            progress_bar.update(task, description=description, completed=done, total=total)

    # trafilatura logs every page it cannot parse at ERROR: noise next to the figures.
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    started = time.perf_counter()
    try:
        if progress_bar:
            progress_bar.start()
        result, module = run_eval(stage, data, baseline=baseline, limit=limit, progress=update)
    except DataError as exc:
        if progress_bar:
            progress_bar.stop()
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_NO_DATA)
    finally:
        if progress_bar:
            progress_bar.stop()
    result["elapsed_seconds"] = round(time.perf_counter() - started, 3)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    from worker.evaluation.report import render

    render(result, module)
    click.echo(f"elapsed {result['elapsed_seconds']:.1f} s")
