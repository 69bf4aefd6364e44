"""Figures from the phases' rows, the issue's targets (met / not met), and the table."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

STAGES = ("clean", "language", "entities", "dedupe")

# (key, what, threshold, higher is better)
TARGETS = (
    ("e2e_vs_ceiling", "end to end ÷ 2-process ceiling, each stage its own task", 0.95, True),
    ("ceiling_vs_naive", "ceiling per core ÷ naive peer", 2.0, True),
    ("light_stages_ms", "language + cleaning + dedupe, ms per article", 2.0, False),
    ("scaling_1_to_2", "ceiling 1 → 2 processes", 1.85, True),
    ("latency_p99_ms", "p99 publish → stored at half capacity, ms", 1000.0, False),
    ("rss_max_mb", "RSS per worker process, MB", 350.0, False),
    ("rss_growth_pct", "RSS growth between the first and last checkpoint, %", 5.0, False),
    ("redis_commands_per_article", "Redis commands per article", 25.0, False),
)


def percentile(values: Iterable[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return None
    rank = (len(data) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return data[low] + (data[high] - data[low]) * (rank - low)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def stage_figures(rows: list[tuple], chars: Callable[[int], int],
                  lang: Callable[[int], str] | None = None,
                  stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Per stage: ms per article (mean, p50, p95) and ms per 1,000 input characters.

    ``rows`` are (index, timings_ms, total ms or None, reject reason[, CPU ms per stage]);
    ``chars(index)`` the article's characters as published. Timings are wall time, so
    others' load on the machine inflates them; where rows carry CPU ms (the ceiling), each
    stage also gets ``cpu_ms_per_article``. With ``lang``, the mean ms by language.
    """
    done = [row for row in rows if row[1]]
    if not done:
        return {}
    total_chars = sum(chars(row[0]) for row in done)
    figures: dict[str, Any] = {"articles": len(done),
                               "chars_per_article": round(total_chars / len(done))}
    for stage in stages:
        values = [float(row[1].get(stage, 0.0)) for row in done]
        figures[stage] = {
            "ms_per_article": _r(sum(values) / len(values)),
            "p50_ms": _r(percentile(values, 50)),
            "p95_ms": _r(percentile(values, 95)),
            "ms_per_1000_chars": _r(sum(values) * 1000 / total_chars) if total_chars else None,
        }
        cpu = [row[4].get(stage) for row in done if len(row) > 4 and row[4]]
        if cpu and len(cpu) == len(done) and None not in cpu:
            figures[stage]["cpu_ms_per_article"] = _r(sum(cpu) / len(cpu))
    totals = [row[2] for row in done if row[2] is not None]
    if len(totals) == len(done):
        stage_sum = sum(figures[s]["ms_per_article"] for s in stages)
        mean_total = sum(totals) / len(totals)
        figures["total"] = {"ms_per_article": _r(mean_total),
                            "ms_per_1000_chars": _r(sum(totals) * 1000 / total_chars)}
        figures["outside_stages_ms_per_article"] = _r(mean_total - stage_sum)
    if lang is not None:
        by_lang: dict[str, list[tuple]] = {}
        for row in done:
            by_lang.setdefault(lang(row[0]), []).append(row)
        figures["by_language_ms_per_article"] = {
            code: {"articles": len(group),
                   **{s: _r(sum(float(r[1].get(s, 0.0)) for r in group) / len(group))
                      for s in stages}}
            for code, group in sorted(by_lang.items())
        }
    return figures


def light_stages_ms(stages: dict[str, Any], key: str = "ms_per_article") -> float | None:
    try:
        return _r(sum(stages[s][key] for s in ("clean", "language", "dedupe")))
    except (KeyError, TypeError):
        return None


def latency_figures(values_ms: list[float]) -> dict[str, Any]:
    return {"p50_ms": _r(percentile(values_ms, 50), 1), "p95_ms": _r(percentile(values_ms, 95), 1),
            "p99_ms": _r(percentile(values_ms, 99), 1),
            "max_ms": _r(max(values_ms), 1) if values_ms else None}


def memory_figures(checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest RSS of a pool child at any checkpoint, and growth from the first checkpoint to
    the last of each child present at both (same pid)."""
    if not checkpoints:
        return {"checkpoints": []}
    first, last = checkpoints[0], checkpoints[-1]
    before = dict(zip(first["pool_pids"], first["rss_mb"], strict=True))
    growth = [(rss - before[pid]) * 100 / before[pid]
              for pid, rss in zip(last["pool_pids"], last["rss_mb"], strict=True)
              if before.get(pid)]
    return {
        "checkpoints": checkpoints,
        "max_rss_mb": max((max(c["rss_mb"]) for c in checkpoints if c["rss_mb"]), default=None),
        "growth_pct": _r(max(growth), 2) if growth else None,
        "same_processes": first["pool_pids"] == last["pool_pids"],
    }


def targets(values: dict[str, Any], notes: dict[str, str] | None = None,
            noisy: dict[str, bool | None] | None = None,
            estimates: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Each issue target with the measured value and met / not met (None: not measured).

    ``noisy``: whether others' load on the machine during the phases behind a figure was
    over the threshold (then the wall-time figure says more about the machine than the
    code). ``estimates``: the same figure from CPU time per article (``cpu_estimate``),
    shown beside the measured one; met / not met is always decided on the measured one."""
    notes, noisy, estimates = notes or {}, noisy or {}, estimates or {}
    result = []
    for key, what, threshold, higher in TARGETS:
        value = values.get(key)
        met = None if value is None else (value >= threshold if higher else value <= threshold)
        if key == "e2e_vs_ceiling" and met and not values.get("stages_own_tasks"):
            met = False
        result.append({"key": key, "target": what, "threshold": ("≥ " if higher else "≤ ")
                       + f"{threshold:g}", "value": value, "met": met,
                       "noisy": noisy.get(key), "cpu_estimate": estimates.get(key),
                       "basis": notes.get(key, "")})
    return result


# --- rendering -----------------------------------------------------------------------------
def _fmt(value: Any, digits: int | None = 2) -> str:
    """``digits=None``: every digit the value was rounded to where it was computed."""
    if value is None:
        return "-"
    if isinstance(value, float) and digits is not None:
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def combined_noise(flags: Iterable[bool | None]) -> bool | None:
    """Whether others' load touched any of these runs or rounds (None: not known for all)."""
    flags = list(flags)
    if not flags or None in flags:
        return None
    return any(flags)


_GROUPS = (("worker_pool", "pool children"), ("worker_main", "main process"),
           ("redis", "Redis"), ("postgres", "PostgreSQL"))


def _gap_table(pairs: list[dict[str, Any]]):
    """Each round's end to end ÷ ceiling split in two: CPU per article (whose), and how much
    of the cores each kept busy (runner.gap)."""
    from rich.table import Table

    table = Table(title="Where end to end loses against the ceiling: e2e ÷ N = CPU ratio × "
                        "cores-busy ratio (CPU ms per article; share of the cores busy; "
                        "minor page faults per article)")
    for column in ("round", "e2e ÷ N", "CPU ratio", "cores-busy ratio (e2e / ceiling)",
                   "ceiling CPU", *(name for _, name in _GROUPS),
                   "faults: pool (ceiling)"):
        table.add_column(column, justify="right")
    for p in pairs:
        gap = p.get("gap") or {}
        cpu, busy = gap.get("cpu_ms_per_article") or {}, gap.get("cores_busy") or {}
        faults = gap.get("minor_faults_per_article") or {}
        ceiling = cpu.get("ceiling")
        pool = cpu.get("worker_pool")
        pool_text = _fmt(pool)
        if pool and ceiling:
            pool_text += f" ({(pool / ceiling - 1) * 100:+.1f} %)"
        table.add_row(str(p["round"]), _fmt(p["ratio"], None), _fmt(p["cpu_ratio"], None),
                      f"{_fmt(gap.get('cores_busy_ratio'), None)} ({_fmt(busy.get('e2e'), 3)}"
                      f" / {_fmt(busy.get('ceiling'), 3)})",
                      _fmt(ceiling), pool_text,
                      *(_fmt(cpu.get(key)) for key, _ in _GROUPS[1:]),
                      f"{_fmt(faults.get('worker_pool'), 1)} ({_fmt(faults.get('ceiling'), 1)})")
    return table


def render(figures: dict[str, Any], console) -> None:
    """The figures as tables (rich) on ``console``."""
    from rich.table import Table

    runs = Table(title="Throughput (same articles, same cores; best of the rounds)")
    for column in ("run", "processes", "articles", "seconds", "articles/s", "every round",
                   "CPU ms/article", "others' load (cores)"):
        runs.add_column(column, justify="right" if column != "run" else "left")
    ceilings = sorted(figures["ceiling"].items(), key=lambda kv: int(kv[0]))
    for name, run in (*(("ceiling", run) for _, run in ceilings),
                      ("end to end", figures.get("e2e")), ("naive peer", figures.get("naive"))):
        if not run:
            continue
        cpu = run.get("cpu_ms_per_article")
        if isinstance(cpu, dict):  # by process group; the benchmark's own polling left out
            cpu = sum(v for k, v in cpu.items() if k != "bench")
        runs.add_row(name, _fmt(run.get("processes")), _fmt(run.get("articles")),
                     _fmt(run.get("seconds")), _fmt(run.get("articles_per_s")),
                     " ".join(_fmt(x, 1) for x in run.get("rounds_articles_per_s", [])),
                     _fmt(cpu, 1), _fmt((run.get("phase") or {}).get("other_cores")))
    console.print(runs)

    pairs = figures.get("e2e_vs_ceiling_rounds") or []
    scaling = {p["round"]: p for p in figures.get("scaling_rounds") or []}
    if pairs:
        paired = Table(title="Round by round (each ceiling half before and half after the "
                             "round's end-to-end run)")
        for column in ("round", "end to end /s", "ceiling N /s (halves)", "e2e ÷ N",
                       "from CPU", "ceiling 1 /s (halves)", "N ÷ 1", "from CPU", "noise"):
            paired.add_column(column, justify="right")

        def rate(value, halves) -> str:
            return f"{_fmt(value, 1)} ({' / '.join(_fmt(x, 1) for x in halves or [])})"

        for p in pairs:
            sc = scaling.get(p["round"], {})
            noisy = combined_noise([p["noisy"], sc["noisy"]] if sc else [p["noisy"]])
            paired.add_row(str(p["round"]), _fmt(p["e2e"], 1),
                           rate(p["ceiling"], p.get("ceiling_halves")),
                           _fmt(p["ratio"], None), _fmt(p["cpu_ratio"], None),
                           rate(sc.get("ceiling_1"), sc.get("ceiling_1_halves")) if sc else "-",
                           _fmt(sc.get("ratio"), None), _fmt(sc.get("cpu_ratio"), None),
                           {True: "others busy", False: "quiet", None: "-"}[noisy])
        console.print(paired)
        console.print(_gap_table(pairs))

    stages = Table(title="Per stage: wall ms per article (per 1,000 characters) [CPU ms]")
    stages.add_column("stage")
    sources = [(k, v) for k, v in figures["stages"].items() if v]
    for name, _ in sources:
        stages.add_column(name, justify="right")
    for stage in (*STAGES, "total"):
        cells = []
        for _, data in sources:
            cell = data.get(stage)
            text = (f"{cell['ms_per_article']:.2f} ({cell['ms_per_1000_chars']:.2f})"
                    if cell else "-")
            if cell and "cpu_ms_per_article" in cell:
                text += f" [{cell['cpu_ms_per_article']:.2f}]"
            cells.append(text)
        if any(c != "-" for c in cells):
            stages.add_row(stage, *cells)
    light = []
    for _, data in sources:
        wall, cpu = light_stages_ms(data), light_stages_ms(data, "cpu_ms_per_article")
        light.append("-" if wall is None else f"{wall:.2f}" + (f" [{cpu:.2f}]" if cpu else ""))
    stages.add_row("clean+language+dedupe", *light)
    console.print(stages)

    other = Table(title="Latency, memory, Redis")
    other.add_column("figure")
    other.add_column("value", justify="right")
    latency = figures.get("latency") or {}
    if latency:
        stored = latency["stored_at"]
        drain = latency.get("drain_after_last_publish_s")
        other.add_row(f"publish → stored at {latency['rate_per_s']:.1f}/s "
                      f"({latency['articles']} articles) p50 / p95 / p99 ms"
                      + (f"; last stored {drain:.1f} s after the last publish"
                         if drain is not None else ""),
                      f"{_fmt(stored['p50_ms'], 0)} / {_fmt(stored['p95_ms'], 0)} / "
                      f"{_fmt(stored['p99_ms'], 0)}")
    for point in (figures.get("memory") or {}).get("checkpoints", []):
        pss = point.get("pss_mb") or [None] * len(point["rss_mb"])
        other.add_row(f"pool children after {point['articles']:,} articles: RSS (peak) [PSS], MB",
                      " / ".join(f"{_fmt(x, 1)} ({_fmt(y, 1)})" + (f" [{_fmt(z, 1)}]" if z else "")
                                 for x, y, z in zip(point["rss_mb"], point["hwm_mb"], pss,
                                                    strict=True)))
    redis_figures = figures.get("redis") or {}
    if redis_figures:
        other.add_row("Redis commands per article (INFO commandstats, incl. inside scripts)",
                      _fmt(redis_figures.get("commands_per_article"), 1))
        accounting = redis_figures.get("accounting") or {}
        if accounting:
            other.add_row("  of which sent by clients / run by the dedupe script (MONITOR)",
                          f"{_fmt(accounting.get('client_commands_per_article'), 1)} / "
                          f"{_fmt(accounting.get('script_commands_per_article'), 1)}")
        other.add_row("Redis bytes per article in / out",
                      f"{_fmt(redis_figures.get('bytes_in_per_article'), 0)} / "
                      f"{_fmt(redis_figures.get('bytes_out_per_article'), 0)}")
    warnings = figures.get("worker_log_warnings")
    if warnings is not None:
        other.add_row("the worker's log: warnings and errors (count)",
                      "\n".join(f"{event} ({count})" for event, count in warnings.items())
                      or "none")
    console.print(other)

    goals = Table(title="Targets")
    for column in ("target", "threshold", "measured", "met", "noise", "from CPU time"):
        goals.add_column(column, justify="left" if column == "target" else "right")
    for target in figures["targets"]:
        met = {True: "[green]met[/green]", False: "[red]not met[/red]",
               None: "[yellow]not measured[/yellow]"}[target["met"]]
        noise = {True: "others busy", False: "quiet", None: "-"}[target.get("noisy")]
        # The value a target is decided on, not rounded again (0.9498 would print as 0.95).
        goals.add_row(target["target"], target["threshold"], _fmt(target["value"], None), met,
                      noise, _fmt(target.get("cpu_estimate"), None))
    console.print(goals)
