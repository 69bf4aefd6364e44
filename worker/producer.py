"""Publishing articles: validate against raw article v1, then send them to the workers.

Articles at hand together go in one message of up to ENRICH_PUBLISH_BATCH_SIZE (the task
enrich.batch; see worker/tasks.py): the broker and Celery's per-message work is then paid
once per batch instead of once per article. A lone article (nothing more arrives within
ENRICH_PUBLISH_LINGER_MS) goes alone, as enrich.article, so batching never holds an
article back for long.

    from worker.producer import publish
    report = publish([{"url": "https://...", "text": "..."}])
    report.published, report.rejected

Cheap to import: no spaCy, trafilatura, langdetect or numpy (a test checks this), so a
scraper can depend on it. Every record ends up published or rejected with a reason.
"""

from __future__ import annotations

import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from celery import Celery

from worker.app import ARTICLE_TASK, BATCH_TASK, create_app
from worker.contracts import validate_raw
from worker.errors import EnrichError, InvalidArticle
from worker.settings import Settings, get_settings, redact_url

FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".txt": "text",
              ".text": "text", ".html": "html", ".htm": "html"}
_JSON_SLACK = 1_000_000  # bytes of JSON around text and html in one record
_MAX_JSON_DOCUMENT = 512 * 1024 * 1024


@dataclass
class Rejection:
    where: str
    reason: str
    error: str
    id: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}: {self.error}"


@dataclass
class PublishReport:
    published: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "published": len(self.published),
            "rejected": len(self.rejected),
            "ids": self.published,
            "rejections": [r.__dict__ for r in self.rejected],
        }


class RecordError(EnrichError):
    """A record that could not even be read (bad JSON, bad encoding, too big)."""

    reason = "unreadable"


# --- reading inputs ------------------------------------------------------------------------
def decode(data: bytes, where: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordError(f"not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r})",
                          reason="bad_encoding") from None


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise RecordError("JSON nested too deeply", reason="bad_json") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}",
                          reason="bad_json") from None


def bounded_lines(stream: BinaryIO, limit: int) -> Iterator[bytes | RecordError]:
    """Lines of a byte stream; a line over `limit` bytes is skipped unread, as an error."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # discard the rest of the oversized line in bounded chunks
                rest = stream.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield RecordError(f"line is over the {limit:,}-byte record limit", reason="too_large")
            continue
        yield line


def read_jsonl(stream: BinaryIO, name: str, limit: int) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(bounded_lines(stream, limit), start=1):
        where = f"{name}:{number}"
        if isinstance(line, RecordError):
            yield where, line
            continue
        if not line.strip():
            continue
        try:
            yield where, parse_json(decode(line, where))
        except RecordError as exc:
            yield where, exc


def read_json_document(data: bytes, name: str) -> Iterator[tuple[str, Any]]:
    try:
        value = parse_json(decode(data, name))
    except RecordError as exc:
        yield name, exc
        return
    if isinstance(value, list):
        for number, item in enumerate(value):
            yield f"{name}[{number}]", item
    else:
        yield name, value


def _whole_file(path: Path, limit: int) -> bytes | RecordError:
    size = path.stat().st_size
    if size > limit:
        return RecordError(f"file is {size:,} bytes, over the {limit:,}-byte limit",
                           reason="too_large")
    return path.read_bytes()


def read_path(path: Path, settings: Settings) -> Iterator[tuple[str, Any]]:
    name = str(path)
    kind = FILE_KINDS.get(path.suffix.lower())
    record_limit = settings.max_text_bytes + settings.max_html_bytes + _JSON_SLACK
    if kind is None:
        yield name, RecordError(f"unsupported file type {path.suffix or '(none)'!r}",
                                reason="unsupported_file")
        return
    if kind == "jsonl":
        with path.open("rb") as stream:
            yield from read_jsonl(stream, name, record_limit)
        return
    limit = {"json": _MAX_JSON_DOCUMENT, "text": settings.max_text_bytes,
             "html": settings.max_html_bytes}[kind]
    data = _whole_file(path, limit)
    if isinstance(data, RecordError):
        yield name, data
    elif kind == "json":
        yield from read_json_document(data, name)
    else:
        try:
            content = decode(data, name)
        except RecordError as exc:
            yield name, exc
            return
        yield name, {kind: content, "metadata": {"file": path.name}}


def read_stdin(stream: BinaryIO, settings: Settings) -> Iterator[tuple[str, Any]]:
    """stdin: JSON Lines, a JSON array, HTML or plain text, told apart by the first byte."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream)
    start = buffered.peek(64)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16: decode whole, then sniff
        text = decode(buffered.read(_MAX_JSON_DOCUMENT + 1), "<stdin>").lstrip("\ufeff")
        buffered = io.BufferedReader(io.BytesIO(text.encode("utf-8")))
        start = buffered.peek(64)
    head = start.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    record_limit = settings.max_text_bytes + settings.max_html_bytes + _JSON_SLACK
    if head == b"{":
        yield from read_jsonl(buffered, "<stdin>", record_limit)
        return
    if head == b"[":
        data = buffered.read(_MAX_JSON_DOCUMENT + 1)
        if len(data) > _MAX_JSON_DOCUMENT:
            yield "<stdin>", RecordError(
                f"JSON on stdin is over the {_MAX_JSON_DOCUMENT:,}-byte limit", reason="too_large")
            return
        yield from read_json_document(data, "<stdin>")
        return
    kind = "html" if head == b"<" else "text"
    # Read no more than one record may hold: a 600 MB body is refused after limit + 1 bytes.
    limit = settings.max_html_bytes if kind == "html" else settings.max_text_bytes
    data = buffered.read(limit + 1)
    if len(data) > limit:
        yield "<stdin>", RecordError(f"{kind} on stdin is over the {limit:,}-byte limit",
                                     reason="too_large")
        return
    try:
        content = decode(data, "<stdin>")
    except RecordError as exc:
        yield "<stdin>", exc
        return
    yield "<stdin>", {kind: content}


def read_inputs(
    inputs: Iterable[str], settings: Settings, stdin: BinaryIO | None = None
) -> Iterator[tuple[str, Any]]:
    """(where, record or RecordError) for every record in files, directories and '-'."""
    for item in inputs:
        if item == "-":
            yield from read_stdin(stdin or sys.stdin.buffer, settings)
            continue
        path = Path(item)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in sorted(files):
                    if name.startswith("."):
                        continue  # hidden files (.DS_Store, editor swap files) are not input
                    # Unsupported kinds are reported (read_path), never silently skipped.
                    yield from read_path(Path(root, name), settings)
        elif path.exists():
            yield from read_path(path, settings)
        else:
            yield item, RecordError("no such file or directory", reason="not_found")


# --- publishing ------------------------------------------------------------------------------
def send_article(celery_app: Celery, payload: Any, queue: str, *, start: str = "clean",
                 retry_policy: dict[str, Any] | None = None):
    """One message per article: the enrich.article task, which runs every stage from `start`
    (the raw article at clean; a dead letter's payload at the stage it failed at)."""
    kwargs = {} if start == "clean" else {"start": start}
    return celery_app.send_task(ARTICLE_TASK, args=(payload,), kwargs=kwargs, queue=queue,
                                retry=True, retry_policy=retry_policy)


def send_batch(celery_app: Celery, articles: list[Any], queue: str, *,
               retry_policy: dict[str, Any] | None = None):
    """Several articles in one message: the enrich.batch task (one article: enrich.article)."""
    if len(articles) == 1:
        return send_article(celery_app, articles[0], queue, retry_policy=retry_policy)
    return celery_app.send_task(BATCH_TASK, args=(list(articles),), queue=queue,
                                retry=True, retry_policy=retry_policy)


_END = object()


def gathered(items: Iterable[Any], size: int, linger: float) -> Iterator[list[Any]]:
    """``items`` in groups of up to ``size``: a group is handed on when it is full, when the
    items run out, or when the next item has not arrived ``linger`` seconds after the
    group's first. Size 1 hands on each item at once, read in the caller's thread.

    Otherwise the items are read in a thread of their own (a slow source, a paced scraper
    or a pipe, must not keep an article waiting for company); an exception the source
    raises is raised here, after the items before it.
    """
    if size <= 1:
        for item in items:
            yield [item]
        return
    ahead: queue.Queue = queue.Queue(maxsize=4 * size)
    stop = threading.Event()

    def read() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ahead.put((item, None), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ahead.put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            ahead.put((_END, exc))

    reader = threading.Thread(target=read, name="publish-reader", daemon=True)
    reader.start()
    group: list[Any] = []
    deadline = 0.0
    try:
        while True:
            try:
                wait = None if not group else max(0.0, deadline - time.monotonic())
                item, error = ahead.get(timeout=wait)
            except queue.Empty:
                yield group
                group = []
                continue
            if item is _END:
                if group:
                    yield group
                if error is not None:
                    raise error
                return
            if not group:
                deadline = time.monotonic() + linger
            group.append(item)
            if len(group) >= size:
                yield group
                group = []
    finally:
        stop.set()


def check_broker(celery_app: Celery, settings: Settings) -> None:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
    except Exception as exc:  # kombu raises several kinds
        raise ConnectionError(
            f"cannot reach the broker at {redact_url(settings.broker_url)}: {exc}"
        ) from exc


def publish(
    records: Iterable[Any],
    *,
    settings: Settings | None = None,
    celery_app: Celery | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int | None = None,
) -> PublishReport:
    """Validate and publish records; each is a dict (raw article v1) or (where, record).

    Valid articles at hand together are sent in messages of up to ``batch_size`` (default
    ENRICH_PUBLISH_BATCH_SIZE; see `gathered` for when a message goes out less than full).
    Raises ConnectionError when the broker cannot be reached; the report so far is attached
    as `exc.report`, and an article is in `published` only once its message was sent.
    """
    settings = settings or get_settings()
    celery_app = celery_app or create_app(settings)
    check_broker(celery_app, settings)
    size = settings.publish_batch_size if batch_size is None else batch_size
    report = PublishReport()
    numbered = (item if isinstance(item, tuple) else (f"record {number}", item)
                for number, item in enumerate(records))
    for group in gathered(numbered, size, settings.publish_linger_ms / 1000):
        articles, first_where = [], None
        for where, record in group:
            if isinstance(record, RecordError):
                report.rejected.append(Rejection(where, record.reason, record.message))
                continue
            try:
                article = validate_raw(record, max_text_bytes=settings.max_text_bytes,
                                       max_html_bytes=settings.max_html_bytes)
            except InvalidArticle as exc:
                rid = record.get("id") if isinstance(record, dict) else None
                report.rejected.append(Rejection(where, exc.reason, exc.message,
                                                 rid if isinstance(rid, str) else None))
                continue
            articles.append(article)
            first_where = first_where or where
        if articles:
            try:
                send_batch(celery_app, articles, settings.queue)
            except Exception as exc:
                error = ConnectionError(f"publishing failed at {first_where}: {exc}")
                error.report = report  # type: ignore[attr-defined]
                raise error from exc
            report.published.extend(article["id"] for article in articles)
        if on_progress:
            on_progress(len(report.published), len(report.rejected))
    return report
