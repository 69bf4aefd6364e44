"""The Celery application: `celery -A worker.app worker` (or `enrich worker`).

Importing this module is cheap (no models, no stages): the producer uses it to send the
chain by task name. The worker imports worker.tasks through `include`.
"""

from __future__ import annotations

from celery import Celery

from worker.settings import Settings, get_settings

TASK_NAMES = {
    "clean": "enrich.clean",
    "language": "enrich.language",
    "entities": "enrich.entities",
    "dedupe": "enrich.dedupe",
    "store": "enrich.store",
}
CHAIN = ("clean", "language", "entities", "dedupe", "store")


def celery_config(settings: Settings) -> dict:
    config = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Sweep unacknowledged messages of dead workers back onto the queue this often.
            "unacked_restore_throttle": 10,
        },
        # JSON only: a pickled message is refused, never executed.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        # At-least-once: ack after the task ran; requeue when a pool child dies under it.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Publishing the chain's next step must outlast a Redis restart: with the default
        # policy (3 quick tries) the finished task failed, was acked, and its article lost.
        "task_publish_retry": True,
        # Keep running tasks when the broker connection drops (their ack is replayed by the
        # visibility timeout if it cannot be sent; stores are idempotent).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_publish_retry_policy": {
            "max_retries": 60, "interval_start": 0.2, "interval_step": 1, "interval_max": 5,
        },
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        # Flower and `celery events` see every task.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # Logging is ours (structlog); Celery's records go through the same processors.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
    }
    if settings.broker_url.startswith("redis://"):
        # Garbage on the queue goes to dead letters instead of stopping the worker.
        config["broker_transport"] = "worker.transport:Transport"
    return config


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery_app = Celery("worker", include=["worker.tasks"])
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = create_app()
