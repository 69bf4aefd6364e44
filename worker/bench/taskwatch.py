"""Tasks per name as Flower sees them: Celery's event state fed by an event receiver.

Flower builds its task list from the same two pieces (celery.events: a Receiver on the
event exchange, a State it feeds), so a stage counted here is a stage an operator sees as a
task of its own in Flower, with its runtime.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class TaskWatch:
    def __init__(self, celery_app: Any) -> None:
        self.app = celery_app
        self.state = celery_app.events.State(max_tasks_in_memory=1_000_000)
        self._receiver = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-watch", daemon=True)

    def __enter__(self) -> TaskWatch:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: Any) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(
                connection, handlers={"*": self.state.event})
            # Redis subscribes on the first poll, just after this: events sent before it are
            # not delivered to anyone (pub/sub keeps nothing), so start watching early.
            self._receiver.on_consume_ready = lambda *_, **__: self._ready.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def succeeded(self) -> dict[str, int]:
        """Succeeded tasks per name."""
        return dict(Counter(task.name for task in list(self.state.tasks.values())
                            if task.state == "SUCCESS" and task.name))

    def runtimes(self, name: str) -> list[float]:
        return [task.runtime for task in list(self.state.tasks.values())
                if task.name == name and task.runtime is not None]
