"""The worker's JSON log lines: each one parses, whatever the event carries."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from worker import logs


@pytest.fixture
def json_lines():
    """Log through the worker's JSON configuration into a buffer; yields a reader of the
    lines written so far (parsed). The root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("json", "INFO", stream=stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


class Opaque:
    def __repr__(self) -> str:
        return "<opaque thing>"


def test_a_task_line_keeps_its_context_and_non_ascii_text(json_lines):
    """Bound context and non-ASCII values come out as the same values, text unescaped."""
    structlog.contextvars.bind_contextvars(article_id="статья-1", task_id="t-1")
    try:
        logs.get_logger("worker.tasks").info("article enriched", language="uk",
                                             place="Київ", timings_ms={"clean": 1.5})
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = json_lines()
    assert line["event"] == "article enriched"
    assert line["article_id"] == "статья-1" and line["task_id"] == "t-1"
    assert line["place"] == "Київ" and line["timings_ms"] == {"clean": 1.5}
    assert line["level"] == "info" and line["logger"] == "worker.tasks"


def test_values_orjson_refuses_still_make_a_json_line(json_lines):
    """A lone surrogate, a non-string key, a huge integer and an object without a JSON form
    each still give one parseable line holding the value."""
    log = logs.get_logger("worker.tasks")
    log.warning("surrogate", error="bad \ud800 byte")
    log.warning("int keys", counts={1: "one"})
    log.warning("big", value=2 ** 70)
    log.warning("object", thing=Opaque())
    surrogate, int_keys, big, thing = json_lines()
    assert surrogate["error"] == "bad \ud800 byte"
    assert int_keys["counts"] == {"1": "one"}
    assert big["value"] == 2 ** 70
    assert thing["thing"] == "<opaque thing>"


def test_passwords_in_urls_are_hidden_in_json_lines(json_lines):
    """A URL with a password is written with the password masked."""
    logs.get_logger("worker").error("store down", url="postgresql://app:s3cret@db:5432/x")
    (line,) = json_lines()
    assert line["url"] == "postgresql://app:***@db:5432/x"
    assert "s3cret" not in json.dumps(line)
