"""The ceiling: the project's own stages in process, no broker, on 1..N processes.

Each process builds the pipeline exactly as embedded mode does
(``Resources(settings, embedded=True).pipeline``: in-memory dedupe index, no store), warms
it up on a few articles (models load), then all processes start together at a barrier and
take articles from one shared counter until none are left. Wall time runs from the barrier
to the last process done; model loading is not in it. Each process fixes glibc's malloc
thresholds first, as the worker does at start (ENRICH_MALLOC_*), so that the ceiling and the
worker run the stages on the same allocator settings.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import time
from typing import Any

from worker.bench import proc

# (index into the article list, timings_ms or None, wall ms of the article, reject reason,
#  CPU ms per stage of this process: the same split with others' load taken out)
Row = tuple[int, dict[str, float] | None, float, str | None, dict[str, float]]


def _child(articles, warmup, counter, barrier, results) -> None:
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    from worker.errors import EnrichError
    from worker.memory import tune_malloc
    from worker.pipeline import STAGES, finish
    from worker.resources import Resources
    from worker.settings import get_settings

    settings = get_settings()
    tune_malloc(settings.malloc_mmap_threshold, settings.malloc_trim_threshold)
    pipeline = Resources(settings, embedded=True).pipeline
    for article in warmup:
        try:
            pipeline.process(dict(article))
        except EnrichError:
            pass
    barrier.wait()
    started, cpu_started = time.monotonic(), time.process_time()
    faults_started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rows: list[Row] = []
    while True:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        if index >= len(articles):
            break
        # Pipeline.process, one stage at a time so that each stage's CPU time is known too.
        t0, cpu = time.perf_counter(), {}
        doc = dict(articles[index])
        try:
            for name in STAGES:
                c0 = time.process_time()
                doc = pipeline.run_stage(name, doc)
                cpu[name] = (time.process_time() - c0) * 1000
            doc = finish(doc)
        except EnrichError as exc:
            rows.append((index, None, (time.perf_counter() - t0) * 1000, exc.reason, cpu))
            continue
        rows.append((index, doc["pipeline"]["timings_ms"], (time.perf_counter() - t0) * 1000,
                     None, cpu))
    results.put({"started": started, "ended": time.monotonic(),
                 "cpu_seconds": time.process_time() - cpu_started,
                 "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                 - faults_started,
                 "rss_kb": proc.status_kb(os.getpid()), "rows": rows})


def run(articles: list[dict[str, Any]], processes: int, warmup: list[dict[str, Any]],
        timeout: float = 3600) -> dict[str, Any]:
    """Process ``articles`` on ``processes`` processes; figures plus the per-article rows."""
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("l", 0)
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [ctx.Process(target=_child, args=(articles, warmup, counter, barrier, results),
                            daemon=True) for _ in range(processes)]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=timeout) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    seconds = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    rows = sorted((row for r in reports for row in r["rows"]), key=lambda row: row[0])
    cpu = sum(r["cpu_seconds"] for r in reports)
    return {
        "processes": processes,
        "articles": len(articles),
        "failed": sum(1 for row in rows if row[3]),
        "seconds": round(seconds, 3),
        "articles_per_s": round(len(articles) / seconds, 3) if seconds else None,
        "cpu_ms_per_article": round(cpu * 1000 / len(articles), 3),
        "cpu_utilisation": round(cpu / (seconds * processes), 3) if seconds else None,
        "minor_faults_per_article": round(sum(r["minor_faults"] for r in reports)
                                          / len(articles), 1),
        "rss_mb_per_process": [round((r["rss_kb"] or 0) / 1024, 1) for r in reports],
        "rows": rows,
    }
