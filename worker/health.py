"""Health checks for probes: `enrich health live` and `enrich health ready`.

Cheap and side-effect free (no metrics import): they read the heartbeat file the worker's
consumer loop writes (worker.ops.Heartbeat) and, for readiness, ask the broker and store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from worker.settings import Settings


def write_heartbeat(path: str, data: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(target)  # atomic: a reader never sees half a file


def liveness(settings: Settings, now: float | None = None) -> tuple[bool, str]:
    """(alive, why) from the heartbeat file alone (no broker round trip)."""
    now = time.time() if now is None else now
    try:
        beat = json.loads(Path(settings.heartbeat_file).read_text())
    except (OSError, ValueError) as exc:
        return False, f"no heartbeat at {settings.heartbeat_file}: {exc}"
    age = now - beat["at"]
    if age > settings.heartbeat_max_age:
        return False, f"heartbeat is {age:.0f}s old (limit {settings.heartbeat_max_age}s)"
    stalled = now - beat["progress_at"]
    if beat["active"] and stalled > settings.stall_seconds:
        return False, (f"{beat['active']} task(s) active and none finished for {stalled:.0f}s "
                       f"(limit {settings.stall_seconds}s)")
    return True, f"heartbeat {age:.0f}s old, {beat['active']} active, {beat['processed']} done"


def readiness(settings: Settings) -> tuple[bool, str]:
    """(ready, why): the consumer runs, the broker answers and the store opens."""
    alive, why = liveness(settings)
    if not alive:
        return False, why
    from worker.resources import redis_client
    from worker.settings import redact_url
    from worker.store import open_store

    try:
        redis_client(settings.broker_url).ping()
    except Exception as exc:  # noqa: BLE001
        return False, f"broker {redact_url(settings.broker_url)} not answering: {exc}"
    try:
        store = open_store(settings.store_url)
        store.count()
        store.close()
    except Exception as exc:  # noqa: BLE001
        return False, f"store {redact_url(settings.store_url)} not usable: {exc}"
    return True, "ready"
