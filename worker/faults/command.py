"""`enrich faults`: the ledger battery (worker/faults/battery.py) from the command line.

Runs against ENRICH_BROKER_URL's Redis on queues and key prefixes of its own (removed
afterwards; the broker faults use a private redis-server), with a temporary SQLite store
unless --store-url is given (a PostgreSQL store gets a schema per fault, dropped
afterwards). It starts real worker processes with test-only fault injection: run it on a
development machine, not next to production workers.
"""

from __future__ import annotations

import json
import sys
import time

import click

from worker.settings import get_settings

FAULT_NAMES = ["sigkill_child", "worker_kill", "worker_lost", "sigterm_restart", "poison",
               "crash_after_commit", "outlives_visibility", "redis_restart",
               "redis_client_kill", "redis_pause", "store_unavailable", "publish_twice",
               "near_duplicates", "flood"]


@click.command("faults")
@click.option("--fault", "faults", multiple=True, type=click.Choice(FAULT_NAMES),
              help="Run only this fault (repeatable). Default: all of them.")
@click.option("--full", is_flag=True,
              help="Large counts (repeated kills during 1,000 articles, pairs published "
                   "twice, near-duplicate pairs, a flood across 3 workers; printed above "
                   "the table). Default: small counts, a few minutes.")
@click.option("--articles", "-n", type=int, default=None,
              help="Articles (pairs for the pair faults) for every fault, instead of the "
                   "mode's counts.")
@click.option("--count", "counts", multiple=True, metavar="FAULT=N",
              help="Articles (pairs) for one fault, e.g. --count flood=20000 (repeatable).")
@click.option("--store-url", default=None,
              help="Store for the runs (PostgreSQL needed by store_unavailable); default: "
                   "a temporary SQLite file.")
@click.option("--timeout", type=float, default=None,
              help="Seconds each wait of a fault may take [180; --full: 900].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per fault.")
def faults_command(faults, full, articles, counts, store_url, timeout, as_json) -> None:
    """Inject faults into real workers and count every article: the ledger table.

    Worker settings (ENRICH_VISIBILITY_TIMEOUT, ENRICH_UNACKED_RESTORE_THROTTLE, ...) come
    from the environment, as for any worker; the redelivery column measures what they give.
    """
    from worker.faults.battery import FAULTS, run_fault, table

    names = list(faults) or list(FAULTS)
    per_fault = {}
    for item in counts:
        name, _, value = item.partition("=")
        if name not in FAULTS or not value.isdigit():
            raise click.BadParameter(f"{item!r}: expected FAULT=N with FAULT one of "
                                     f"{', '.join(FAULTS)}", param_hint="--count")
        per_fault[name] = int(value)
    settings = get_settings()
    ledgers = []
    used = {}
    started = time.monotonic()
    for name in names:
        count = per_fault.get(name) or articles or (FAULTS[name].full if full
                                                    else FAULTS[name].small)
        used[name] = count
        if not as_json:
            click.echo(f"running {name} (n={count}) ...", err=True)
        ledger = run_fault(name, settings, articles=count, full=full, timeout=timeout,
                           store_url=store_url)
        ledgers.append(ledger)
        if as_json:
            click.echo(json.dumps(ledger.as_dict()), nl=True)
            sys.stdout.flush()
    if not as_json:
        click.echo("counts (articles; pairs for publish_twice and near_duplicates): "
                   + ", ".join(f"{name}={count:,}" for name, count in used.items()))
        click.echo(table(ledgers))
        click.echo(f"wall time {time.monotonic() - started:.0f} s; visibility timeout "
                   f"{settings.visibility_timeout} s, sweep every "
                   f"{settings.unacked_restore_throttle} s")
        for ledger in ledgers:
            for problem in ledger.problems:
                click.echo(f"PROBLEM {ledger.fault}: {problem}", err=True)
    sys.exit(0 if all(ledger.ok for ledger in ledgers) else 1)
