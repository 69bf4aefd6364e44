"""The `enrich` command: publish, run (embedded), worker, get, export, status, schema, demo."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from worker.settings import Settings, get_settings, redact_url

EXIT_REJECTED = 1  # some records were rejected (the rest went through)
EXIT_UNAVAILABLE = 2  # broker or store unreachable, nothing done


def _out(path: str | None):
    if path in (None, "-"):
        return click.get_text_stream("stdout")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller


def _progress(enabled: bool):
    """A rich progress line on stderr for interactive runs; a no-op otherwise."""
    if not enabled:
        return None, lambda *_: None
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        transient=True, console=None)
    task = progress.add_task("starting")

    def update(done: int, rejected: int) -> None:
        progress.update(task, description=f"{done:,} done, {rejected:,} rejected")

    return progress, update


def _print_rejections(rejections, limit: int = 50) -> None:
    for rejection in rejections[:limit]:
        click.echo(f"rejected {rejection}", err=True)
    if len(rejections) > limit:
        click.echo(f"... and {len(rejections) - limit:,} more rejections", err=True)


@click.group()
@click.version_option(package_name="news-enrich-worker")
def main() -> None:
    """News enrichment worker: language, cleaning, entities, near-duplicates."""
    settings = get_settings()
    from worker import logs

    logs.configure(settings.log_format, settings.log_level)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def publish(inputs: tuple[str, ...], as_json: bool) -> None:
    """Validate and publish articles (JSON Lines, JSON arrays, .txt, .html, dirs, - for stdin)."""
    from worker.producer import publish as do_publish
    from worker.producer import read_inputs

    settings = get_settings()
    progress, update = _progress(sys.stderr.isatty() and not as_json)
    try:
        if progress:
            progress.start()
        report = do_publish(read_inputs(inputs, settings), settings=settings, on_progress=update)
    except ConnectionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    finally:
        if progress:
            progress.stop()
    if as_json:
        click.echo(json.dumps(report.summary(), ensure_ascii=False))
    else:
        _print_rejections(report.rejected)
        click.echo(f"published {len(report.published):,}, rejected {len(report.rejected):,}"
                   f" (queue {settings.queue!r} on {redact_url(settings.broker_url)})")
    sys.exit(EXIT_REJECTED if report.rejected else 0)


def run_embedded(inputs, settings: Settings, output, on_progress=None) -> tuple[list, list]:
    """Every stage in this process, in input order; SQLite store, in-process dedupe index."""
    from worker.errors import EnrichError
    from worker.producer import Rejection, RecordError, read_inputs
    from worker.resources import Resources

    resources = Resources(settings, embedded=True)
    done, rejected = [], []
    for where, record in read_inputs(inputs, settings):
        try:
            if isinstance(record, RecordError):
                raise record
            document = resources.pipeline.process(record)
        except EnrichError as exc:
            rid = record.get("id") if isinstance(record, dict) else None
            rejected.append(Rejection(where, exc.reason, exc.message, rid))
        else:
            resources.store.upsert(document)
            output.write(json.dumps(document, ensure_ascii=False) + "\n")
            done.append(document)
        if on_progress:
            on_progress(len(done), len(rejected))
    output.flush()
    return done, rejected


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", default="-", show_default=True,
              help="Where to write enriched documents as JSON Lines (- for stdout).")
def run(inputs: tuple[str, ...], output: str) -> None:
    """Enrich in this process, no broker (embedded mode)."""
    settings = get_settings()
    stream = _out(output)
    progress, update = _progress(sys.stderr.isatty() and output != "-")
    try:
        if progress:
            progress.start()
        done, rejected = run_embedded(inputs, settings, stream, update)
    finally:
        if progress:
            progress.stop()
        if stream is not sys.stdout:
            stream.close()
    _print_rejections(rejected)
    click.echo(f"enriched {len(done):,}, rejected {len(rejected):,}", err=True)
    sys.exit(EXIT_REJECTED if rejected else 0)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=int, default=None, help="Pool processes.")
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (default: ENRICH_QUEUE).")
@click.option("--hostname", "-n", default=None, help="Node name, e.g. worker1@%h.")
@click.option("--loglevel", "-l", default=None, help="Log level (default: ENRICH_LOG_LEVEL).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency, queues, hostname, loglevel, celery_args) -> None:
    """Start a Celery worker (same as `celery -A worker.app worker`); extra args go to celery."""
    settings = get_settings()
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "--queues", queues or settings.queue, "--loglevel", loglevel or settings.log_level,
            "--task-events"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if hostname:
        argv += ["--hostname", hostname]
    argv += list(celery_args)
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # the worker becomes this process: signals reach it


def _store(settings: Settings):
    from worker.errors import StoreUnavailable
    from worker.store import open_store

    try:
        return open_store(settings.store_url)
    except StoreUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)


@main.command()
@click.argument("doc_id")
def get(doc_id: str) -> None:
    """Print one stored document as JSON."""
    document = _store(get_settings()).get(doc_id)
    if document is None:
        click.echo(f"error: no document with id {doc_id!r}", err=True)
        sys.exit(EXIT_REJECTED)
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


@main.command()
@click.option("--output", "-o", default="-", show_default=True, help="File, or - for stdout.")
def export(output: str) -> None:
    """Write every stored document as JSON Lines."""
    stream = _out(output)
    count = 0
    for document in _store(get_settings()).iter_documents():
        stream.write(json.dumps(document, ensure_ascii=False) + "\n")
        count += 1
    stream.flush()
    if output != "-":
        stream.close()
    click.echo(f"exported {count:,} documents", err=True)


def status_figures(settings: Settings) -> dict[str, Any]:
    from worker.broker import queue_depth
    from worker.resources import redis_client

    broker = redis_client(settings.broker_url)
    return {
        "queue_depth": queue_depth(broker, settings.queue),
        "dead_letters": int(broker.llen(settings.dead_letter_key)),
        "stored": _store(settings).count(),
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print {queue_depth, dead_letters, stored}.")
def status(as_json: bool) -> None:
    """Queue depth (waiting + reserved), dead letters and stored documents."""
    import redis

    settings = get_settings()
    try:
        figures = status_figures(settings)
    except redis.RedisError as exc:
        click.echo(f"error: Redis at {redact_url(settings.broker_url)}: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(figures))
        return
    click.echo(f"broker       {redact_url(settings.broker_url)} (queue {settings.queue!r})")
    click.echo(f"store        {redact_url(settings.store_url)}")
    click.echo(f"queue depth  {figures['queue_depth']:,}")
    click.echo(f"dead letters {figures['dead_letters']:,}")
    click.echo(f"stored       {figures['stored']:,}")


@main.command()
def schema() -> None:
    """Print the message contracts (raw article v1, enriched document v1) as JSON Schema."""
    from worker.contracts import json_schemas

    click.echo(json.dumps(json_schemas(), indent=2))


@main.command()
@click.option("--embedded", is_flag=True, help="Skip the broker even when Redis answers.")
@click.option("--timeout", default=180, show_default=True, help="Seconds to wait for the worker.")
def demo(embedded: bool, timeout: int) -> None:
    """The main job end to end on the bundled samples: worker + publish + wait + summary."""
    from worker.demo import run_demo

    sys.exit(run_demo(get_settings(), embedded=embedded, timeout=timeout))


# --- flower: the monitoring UI, authenticated by default (worker/flower.py) ---------------------
from worker.flower import flower as _flower  # noqa: E402 - cheap: click and settings only

main.add_command(_flower)


# --- enrich eval: stage quality on the shared evaluation data (worker/evaluation) ---------
from worker.evaluation.command import eval_command  # noqa: E402

main.add_command(eval_command)


@main.command()
@click.argument("check", type=click.Choice(["live", "ready"]))
def health(check: str) -> None:
    """Liveness (heartbeat fresh, pool progressing) or readiness (+ broker and store answer)."""
    from worker.health import liveness, readiness

    ok, why = (liveness if check == "live" else readiness)(get_settings())
    click.echo(f"{check}: {'ok' if ok else 'FAIL'}: {why}")
    sys.exit(0 if ok else 1)


# --- enrich bench: throughput, latency, memory and Redis cost side by side (worker/bench) --
from worker.bench.command import bench_command  # noqa: E402 - cheap: click only

main.add_command(bench_command)


# --- enrich dlq: list, show, replay and purge dead letters (worker/dlq.py) -------------------
from worker.dlq import dlq as _dlq  # noqa: E402 - cheap: click, redis and settings only

main.add_command(_dlq)


# --- enrich faults: the ledger battery, faults injected into real workers (worker/faults) --
from worker.faults.command import faults_command  # noqa: E402 - cheap: click only

main.add_command(faults_command)


if __name__ == "__main__":
    main()
