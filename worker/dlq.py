"""`enrich dlq`: read, replay and purge the dead-letter list (`<ENRICH_KEY_PREFIX>dead`).

    enrich dlq list [--reason R] [--limit N] [--json]
    enrich dlq show ID
    enrich dlq replay ID... | --all [--reason R]
    enrich dlq purge [--yes]

ID is an entry's `entry_id` (shown by `list`), or an article id when only one entry has
it, or `#N` (position in `list`) for entries written before entries had ids.

Replay re-sends the entry's payload as an article task starting at the stage it failed at
(that stage's input; the stages after it follow, up to the store), and removes the entry
only after the broker took the message (a failed send leaves it in place). Entries without a payload cannot be replayed:
`malformed_message` items (not a Celery message at all: there is nothing to re-send; the
first 2,000 characters are kept in `payload_truncated` to read) and payloads over 1 MB.
Cheap to import: Celery is imported only to replay.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import click
import redis

from worker.deadletter import DeadLetters
from worker.errors import ConfigurationError
from worker.logs import redact
from worker.settings import Settings, get_settings, redact_url

EXIT_PARTIAL = 1  # something asked for was not found or not replayable
EXIT_UNAVAILABLE = 2  # Redis unreachable or configuration refused

_STAGES = ("clean", "language", "entities", "dedupe", "store")  # worker.app.CHAIN (cheap here)
# Entries written when every stage was a task of its own name their stage by the task.
_STAGE_OF_TASK = {f"enrich.{stage}": stage for stage in _STAGES}


class NotReplayable(Exception):
    pass


@dataclass
class Entry:
    position: int
    raw: bytes
    record: dict[str, Any]

    @property
    def ref(self) -> str:
        return self.record.get("entry_id") or f"#{self.position}"

    @property
    def stage(self) -> str | None:
        stage = self.record.get("stage") or _STAGE_OF_TASK.get(self.record.get("task") or "")
        return stage if stage in _STAGES else None

    def why_not_replayable(self) -> str | None:
        record = self.record
        if record.get("reason") == "malformed_message" or not record.get("task"):
            return ("malformed message: it was not a Celery message, so there is no payload "
                    "or task to re-send (read it with `enrich dlq show`, then purge it)")
        if self.stage is None:
            return f"unknown stage {record.get('stage')!r} of task {record.get('task')!r}"
        if record.get("payload") is None:
            return "the payload was not kept (over 1 MB); only payload_truncated remains"
        return None


def _fail(message: str, code: int = EXIT_UNAVAILABLE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def dead_letters(settings: Settings) -> DeadLetters:
    """The dead-letter list on the broker's Redis (TLS settings checked as the worker does)."""
    from worker.app import redis_tls_options
    from worker.resources import redis_client

    try:
        redis_tls_options(settings.broker_url, what="ENRICH_BROKER_URL",
                          allow_insecure=settings.tls_insecure_skip_verify)
    except ConfigurationError as exc:
        _fail(exc.message)
    return DeadLetters(redis_client(settings.broker_url), settings.dead_letter_key)


def load(letters: DeadLetters) -> list[Entry]:
    entries = []
    for position, raw in enumerate(letters.raw()):
        try:
            record = json.loads(raw)
        except ValueError:
            record = {"reason": "unreadable_entry", "error": "not JSON",
                      "payload_truncated": raw[:2000].decode("utf-8", "replace")}
        entries.append(Entry(position, raw, record if isinstance(record, dict) else
                             {"reason": "unreadable_entry", "payload": record}))
    return entries


def resolve(entries: list[Entry], ref: str) -> Entry:
    """One entry by entry_id, #position, or a unique article id; NotReplayable otherwise."""
    if ref.startswith("#") and ref[1:].isdigit():
        position = int(ref[1:])
        if position < len(entries):
            return entries[position]
        raise LookupError(f"{ref}: no entry at that position")
    by_entry = [e for e in entries if e.record.get("entry_id") == ref]
    if by_entry:
        return by_entry[0]
    by_article = [e for e in entries if e.record.get("id") == ref]
    if len(by_article) == 1:
        return by_article[0]
    if by_article:
        refs = ", ".join(e.ref for e in by_article)
        raise LookupError(f"{ref}: {len(by_article)} entries for this article ({refs}); "
                          "name one by its entry id")
    raise LookupError(f"{ref}: no such dead letter")


def replay(entry: Entry, celery_app, letters: DeadLetters, settings: Settings) -> str:
    """Send the entry's payload again; remove the entry once sent. Returns the new task id."""
    from worker.producer import send_article

    why = entry.why_not_replayable()
    if why:
        raise NotReplayable(why)
    result = send_article(celery_app, entry.record["payload"], settings.queue,
                          start=entry.stage, retry_policy={
                              "max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                              "interval_max": 1})
    if not letters.remove(entry.raw):
        click.echo(f"warning: {entry.ref} was sent, but was no longer in the list "
                   "(replayed or purged by someone else at the same time?)", err=True)
    return result.id


def _one_line(entry: Entry) -> str:
    r = entry.record
    error = " ".join(str(r.get("error") or "").split())
    if len(error) > 70:
        error = error[:69] + "…"
    at = str(r.get("at") or "")[:19].replace("T", " ")
    replayable = "no" if entry.why_not_replayable() else "yes"
    return (f"{entry.ref:<13} {at:<19}  {str(r.get('reason')):<22} {entry.stage or '-':<9}"
            f" {replayable:<6} {str(r.get('id') or '-'):<24} {error}")


# --- commands ----------------------------------------------------------------------------
@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay or purge them."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only entries with this reason.")
@click.option("--limit", default=200, show_default=True, help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, without payloads.")
def list_command(reason: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, oldest first: entry id, time, reason, stage, replayable, article."""
    settings = get_settings()
    try:
        entries = load(dead_letters(settings))
    except redis.RedisError as exc:
        _fail(f"Redis at {redact_url(settings.broker_url)}: {exc}")
    shown = [e for e in entries if reason in (None, e.record.get("reason"))]
    if as_json:
        for entry in shown[:limit]:
            summary = {k: v for k, v in entry.record.items() if k != "payload"}
            summary.update(ref=entry.ref, stage=entry.stage,
                           replayable=entry.why_not_replayable() is None)
            click.echo(json.dumps(summary, ensure_ascii=False))
        return
    if not shown:
        click.echo("no dead letters" + (f" with reason {reason!r}" if reason else ""))
        return
    click.echo(f"{'ENTRY':<13} {'AT (UTC)':<19}  {'REASON':<22} {'STAGE':<9} {'REPLAY':<6}"
               f" {'ARTICLE':<24} ERROR")
    for entry in shown[:limit]:
        click.echo(_one_line(entry))
    more = f" (showing {limit:,})" if len(shown) > limit else ""
    click.echo(f"{len(shown):,} dead letters{more}")


@dlq.command("show")
@click.argument("ref")
def show_command(ref: str) -> None:
    """Print one dead letter as JSON, payload included."""
    settings = get_settings()
    try:
        entries = load(dead_letters(settings))
    except redis.RedisError as exc:
        _fail(f"Redis at {redact_url(settings.broker_url)}: {exc}")
    try:
        entry = resolve(entries, ref)
    except LookupError as exc:
        _fail(str(exc), EXIT_PARTIAL)
    click.echo(json.dumps(entry.record, ensure_ascii=False, indent=2))
    why = entry.why_not_replayable()
    click.echo(f"replayable: {'no: ' + why if why else 'yes, from ' + str(entry.stage)}",
               err=True)


@dlq.command("replay")
@click.argument("refs", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every replayable entry.")
@click.option("--reason", default=None, help="With --all: only entries with this reason.")
def replay_command(refs: tuple[str, ...], replay_all: bool, reason: str | None) -> None:
    """Re-send entries to the stage they failed at (the stages after it follow)."""
    if bool(refs) == replay_all:
        raise click.UsageError("give entry ids, or --all (not both)")
    if reason and not replay_all:
        raise click.UsageError("--reason goes with --all")
    settings = get_settings()
    from worker.app import create_app
    from worker.producer import check_broker

    try:
        celery_app = create_app(settings)
        check_broker(celery_app, settings)
        letters = dead_letters(settings)
        entries = load(letters)
    except ConfigurationError as exc:
        _fail(exc.message)
    except ConnectionError as exc:  # check_broker: the URL in it is already redacted
        _fail(str(exc))
    except redis.RedisError as exc:
        _fail(f"Redis at {redact_url(settings.broker_url)}: {exc}")

    problems = 0
    chosen: list[Entry] = []
    if replay_all:
        chosen = [e for e in entries if reason in (None, e.record.get("reason"))]
    else:
        for ref in refs:
            try:
                entry = resolve(entries, ref)
            except LookupError as exc:
                click.echo(f"not replayed: {exc}", err=True)
                problems += 1
            else:
                if all(entry is not other for other in chosen):
                    chosen.append(entry)
    replayed = 0
    for entry in chosen:
        what = f"{entry.ref} ({entry.record.get('id') or 'no article id'})"
        try:
            task_id = replay(entry, celery_app, letters, settings)
        except NotReplayable as exc:
            click.echo(f"not replayed: {what}: {exc}", err=True)
            problems += 1
        except Exception as exc:  # noqa: BLE001 - kombu/redis raise several kinds
            click.echo(f"not replayed: {what}: sending failed, entry kept: "
                       f"{redact(str(exc))}", err=True)
            problems += 1
        else:
            replayed += 1
            click.echo(f"replayed {what} from {entry.stage} as task {task_id}")
    click.echo(f"replayed {replayed:,}, not replayed {problems:,}")
    sys.exit(EXIT_PARTIAL if problems else 0)


@dlq.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_command(yes: bool) -> None:
    """Delete every dead letter (entries added while this runs are kept)."""
    settings = get_settings()
    try:
        letters = dead_letters(settings)
        count = letters.count()
    except redis.RedisError as exc:
        _fail(f"Redis at {redact_url(settings.broker_url)}: {exc}")
    if count == 0:
        click.echo("no dead letters")
        return
    if not yes and not click.confirm(f"Delete {count:,} dead letters?", default=False):
        click.echo("nothing deleted")
        sys.exit(EXIT_PARTIAL)
    try:
        removed = letters.drop_oldest(count)
    except redis.RedisError as exc:
        _fail(f"Redis at {redact_url(settings.broker_url)}: {exc}")
    click.echo(f"deleted {removed:,} dead letters")
