"""structlog set-up: JSON in production, console on a terminal; stdlib (Celery) logs too.

Task context (article_id, task_id, root_id, stage) is bound in contextvars by the task
signals in worker.tasks, so every line a task writes carries it.
"""

from __future__ import annotations

import logging
import re
import sys
from functools import partial

import structlog

from worker import jsontext

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@")


def redact(text: str) -> str:
    """Hide passwords in any URL inside a string."""
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)


def _redact_event(_logger, _name, event_dict):
    for key, value in event_dict.items():
        if isinstance(value, str) and "://" in value:
            event_dict[key] = redact(value)
    return event_dict


def configure(fmt: str = "auto", level: str = "INFO", stream=None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_event,
    ]
    renderer = (
        # orjson (worker.jsontext); a lone surrogate escaped, so any stream takes the line.
        structlog.processors.JSONRenderer(serializer=partial(jsontext.dumps, ensure_ascii=True))
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # No ExtraAdder: Celery's records carry task args (article bodies) as extras.
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("trafilatura", "htmldate", "courlan", "justext", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Celery's per-task success line carries the task's return value: a whole article.
    # Our own "article enriched" summary line replaces it.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


def get_logger(name: str = "worker"):
    return structlog.get_logger(name)
