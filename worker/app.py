"""The Celery application: `celery -A worker.app worker` (or `enrich worker`).

Importing this module is cheap (no models, no stages): the producer uses it to send the
article task by name. The worker imports worker.tasks through `include`.
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from celery import Celery
from kombu.serialization import register
from kombu.utils.json import dumps as kombu_json_dumps
from kombu.utils.json import loads as kombu_json_loads

from worker.errors import ConfigurationError
from worker.settings import Settings, get_settings, redact_url

# One task per message (worker/tasks.py): one article, or several published together; each
# stage of each article is shown in Flower under its own name (enrich.clean ...
# enrich.store, worker/stage_events.py).
ARTICLE_TASK = "enrich.article"
BATCH_TASK = "enrich.batch"
MAX_BATCH = 64  # articles in one enrich.batch message (ENRICH_PUBLISH_BATCH_SIZE's bound)
CHAIN = ("clean", "language", "entities", "dedupe", "store")


# Task bodies as UTF-8 JSON. kombu's "json" escapes every non-ASCII character (\u0436: 6
# bytes for a Cyrillic letter that UTF-8 spells in 2), and the Redis transport then base64s
# the body: a 16-article message of the shared corpus was 127 KB, 74 KB this way (210 against
# 76 KB for Russian alone). Every copy of it is cheaper: Redis's queue, pending list and
# unacked record, the worker's check of the body, the pipe to the pool child and its decode.
# Same content type and decoder as "json": any JSON consumer reads it, and workers read
# messages published either way.
JSON_UTF8 = "json-utf8"


def dumps_utf8(obj) -> bytes:
    """``obj`` as kombu's JSON (its types: datetimes, UUIDs ...), non-ASCII left unescaped;
    escaped as kombu does when the text cannot be UTF-8 (a lone surrogate)."""
    text = kombu_json_dumps(obj, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return kombu_json_dumps(obj).encode("ascii")


register(JSON_UTF8, dumps_utf8, kombu_json_loads, content_type="application/json",
         content_encoding="utf-8")

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_TRUE = {"true", "1", "yes"}


def redis_tls_options(url: str, *, what: str, allow_insecure: bool = False) -> dict | None:
    """TLS options for a rediss:// URL (None for any other scheme), verification required.

    kombu turns a bare `rediss://` into `ssl_cert_reqs=CERT_NONE` with only a warning (seen
    here); redis-py, which opens the dead-letter and dedupe-index connections from the same
    URLs, defaults to `required`. Here an absent `ssl_cert_reqs` means `required`, and
    `none`/`optional` or `ssl_check_hostname=false` refuse to start unless
    ENRICH_TLS_INSECURE_SKIP_VERIFY is set. A private CA: `?ssl_ca_certs=/path/ca.pem`.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    options: dict = {k: v for k, v in query.items() if k.startswith("ssl_")}
    where = f"{what} {redact_url(url)}"
    reqs = options.get("ssl_cert_reqs", "required")
    if reqs not in _CERT_REQS:
        raise ConfigurationError(
            f"{where}: ssl_cert_reqs={reqs!r} is not understood; use ssl_cert_reqs=required "
            "(lowercase: kombu and redis-py both read this URL), or leave it out (= required)")
    options["ssl_cert_reqs"] = _CERT_REQS[reqs]
    if "ssl_check_hostname" in options:
        options["ssl_check_hostname"] = options["ssl_check_hostname"].lower() in _TRUE
    insecure = reqs != "required" or options.get("ssl_check_hostname") is False
    if insecure and not allow_insecure:
        raise ConfigurationError(
            f"{where} would connect without verifying the server's certificate "
            f"(ssl_cert_reqs={reqs}, ssl_check_hostname="
            f"{options.get('ssl_check_hostname', True)}): anyone on the path could read the "
            "articles and the Redis password. Use ssl_cert_reqs=required (the default when "
            "left out) with ssl_ca_certs=/path/ca.pem for a private CA; "
            "ENRICH_TLS_INSECURE_SKIP_VERIFY=true allows it for a throwaway test set-up only.")
    return options


def _without_ssl_query(url: str) -> str:
    """kombu lets ssl_* URL parameters replace broker_use_ssl wholesale: keep them in one place."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.startswith("ssl_")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def celery_config(settings: Settings) -> dict:
    """The Celery configuration; raises ConfigurationError on an unsafe one (see TLS below)."""
    insecure_ok = settings.tls_insecure_skip_verify
    broker_tls = redis_tls_options(settings.broker_url, what="ENRICH_BROKER_URL",
                                   allow_insecure=insecure_ok)
    if settings.redis_url:
        redis_tls_options(settings.redis_url, what="ENRICH_REDIS_URL", allow_insecure=insecure_ok)
    config = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # Redelivery. Redis has no broker-side acks: kombu keeps each delivered message in
        # an `unacked` hash until the worker acks it. Two ways back onto the queue:
        # - a pool process dies under a task (SIGKILL, OOM killer, segfault, the hard time
        #   limit below): the worker rejects the message with requeue at once
        #   (task_reject_on_worker_lost) - back within 5 s (Celery notices the dead process
        #   at once or at its 5-second pool check; measured 0.02-5.3 s), though at the back
        #   of the queue;
        # - the whole worker dies (node lost, main process killed): it stops renewing the
        #   leases of the messages it holds (worker/transport.py re-stamps them every fifth
        #   of the visibility timeout), and once a message's lease is older than the
        #   visibility timeout a live worker's sweep (every ENRICH_UNACKED_RESTORE_THROTTLE
        #   s) requeues it: back after at most visibility timeout + throttle (15 + 5 s;
        #   measured 13.9-19.7 s, tests/test_transport.py).
        # With leases the visibility timeout no longer has to outlast the longest task (the
        # hard time limit, a retry countdown held unacknowledged): a live worker's message
        # is never handed out again however long it runs. It only has to outlast a missed
        # renewal: a worker whose event loop stalls for about 4/5 of it (12 s by default)
        # has its running task handed to another worker too.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Sweep unacknowledged messages of dead workers back onto the queue this often.
            # kombu 5.6.2 ignores this option (its sweep runs every 100 s); the hardened
            # transport implements it.
            "unacked_restore_throttle": settings.unacked_restore_throttle,
            # One list per queue, no priority lists: the transport can then take a message
            # with BLMOVE (one source key) so it is never out of Redis between pop and
            # record. Nothing here publishes with a priority.
            "priority_steps": [0],
            # A worker killed while holding the sweep's lock (held for milliseconds) leaves
            # it to expire after this many seconds; kombu's 300 s would stop every sweep.
            "unacked_mutex_expire": 10,
        },
        # Bounds a hung task: its pool process is killed and the message requeued (counted by
        # the delivery counter) instead of acknowledged as failed and lost.
        "task_time_limit": settings.task_time_limit,
        "task_acks_on_failure_or_timeout": False,
        # JSON only: a pickled message is refused, never executed. Sent as UTF-8 (above).
        "task_serializer": JSON_UTF8,
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        # At-least-once: ack after the task ran; requeue when a pool child dies under it.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A retry's publish must outlast a Redis restart: with the default policy (3 quick
        # tries) a 5-task chain lost an article whose finished step could not publish the next.
        "task_publish_retry": True,
        # Keep running tasks when the broker connection drops (their ack is replayed by the
        # visibility timeout if it cannot be sent; stores are idempotent).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_publish_retry_policy": {
            "max_retries": 60, "interval_start": 0.2, "interval_step": 1, "interval_max": 5,
        },
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        # Flower and `celery events` see every task from the moment a worker receives it. No
        # task-sent event from producers: one more Redis PUBLISH per article, and Flower would
        # keep a PENDING entry for every queued article; the backlog is the queue depth
        # (enrich_queue_depth, Flower's Broker tab).
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "task_track_started": True,
        # Logging is ours (structlog); Celery's records go through the same processors.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
    }
    if broker_tls is not None:
        # Verification on by default; the same options for a Redis result backend, if any.
        config["broker_url"] = _without_ssl_query(settings.broker_url)
        config["broker_use_ssl"] = broker_tls
        config["redis_backend_use_ssl"] = dict(broker_tls)
        config["broker_transport_options"]["tls_required"] = True
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Garbage on the queue goes to dead letters instead of stopping the worker. For
        # rediss:// kombu only adds TLS by itself when the transport is its own, so TLS is
        # always passed explicitly above (broker_use_ssl), and the transport refuses a
        # plain connection when tls_required is set.
        config["broker_transport"] = "worker.transport:Transport"
    return config


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery_app = Celery("worker", include=["worker.tasks", "worker.ops"])
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = create_app()
