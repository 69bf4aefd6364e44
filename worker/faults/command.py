"""`enrich faults`: the ledger battery (worker/faults/battery.py) from the command line.

Runs against ENRICH_BROKER_URL's Redis on queues and key prefixes of its own (removed
afterwards), with a temporary SQLite store unless --store-url is given (rows with ids
`faults-*` are then left in that store). It starts real worker processes with test-only
fault injection: run it on a development machine, not next to production workers.
"""

from __future__ import annotations

import json
import sys

import click

from worker.settings import get_settings


@click.command("faults")
@click.option("--fault", "faults", multiple=True,
              type=click.Choice(["sigkill_child", "crash_after_commit", "publish_twice",
                                 "near_duplicates", "poison", "worker_lost",
                                 "store_unavailable"]),
              help="Run only this fault (repeatable). Default: all of them.")
@click.option("--quick", is_flag=True,
              help="The quick subset: sigkill_child, crash_after_commit, publish_twice, "
                   "near_duplicates.")
@click.option("--articles", "-n", default=12, show_default=True,
              help="Articles (near_duplicates: pairs) per fault.")
@click.option("--store-url", default=None,
              help="Store for the runs (PostgreSQL needed by store_unavailable); default: "
                   "a temporary SQLite file.")
@click.option("--timeout", default=180, show_default=True, help="Seconds per fault.")
@click.option("--visibility-timeout", default=10, show_default=True,
              help="For worker_lost: a short visibility timeout so it ends in seconds "
                   "(production default: 300).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per fault.")
def faults_command(faults, quick, articles, store_url, timeout, visibility_timeout,
                   as_json) -> None:
    """Inject faults into real workers and count every article: the ledger table."""
    from worker.faults.battery import FAULTS, QUICK, run_fault, table

    names = list(faults) or list(QUICK if quick else FAULTS)
    settings = get_settings()
    ledgers = []
    for name in names:
        if not as_json:
            click.echo(f"running {name} ...", err=True)
        ledger = run_fault(name, settings, articles=articles, timeout=timeout,
                           store_url=store_url, visibility_timeout=visibility_timeout)
        ledgers.append(ledger)
        if as_json:
            click.echo(json.dumps(ledger.as_dict()))
    if not as_json:
        click.echo(table(ledgers))
        for ledger in ledgers:
            for problem in ledger.problems:
                click.echo(f"PROBLEM {ledger.fault}: {problem}", err=True)
    sys.exit(0 if all(ledger.ok for ledger in ledgers) else 1)
