"""One error hierarchy, grouped by what the worker does with each error.

- ``Reject``: the input can never succeed; the article goes to the dead-letter list with
  the reason, the message is acknowledged, nothing is retried.
- ``Transient``: something outside us is down (store, Redis); the task retries with
  exponential backoff and is dead-lettered only when retries run out.
- ``Skip``: a stage cannot do its work for this article (no model for its language); the
  stage records the reason in the document and the chain goes on.

Anything else raised in a task is a bug: it is dead-lettered with reason ``internal``.
"""

from __future__ import annotations


class EnrichError(Exception):
    """Base of every error this project raises on purpose."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.reason


# --- reject to dead letters --------------------------------------------------------------
class Reject(EnrichError):
    reason = "rejected"


class InvalidArticle(Reject):
    """The record breaks the raw-article contract (see worker.contracts)."""

    reason = "invalid_article"


class TooLarge(InvalidArticle):
    reason = "too_large"


class PoisonMessage(Reject):
    """The message was delivered more often than allowed (it kills or hangs workers)."""

    reason = "too_many_deliveries"


# --- retry with backoff ------------------------------------------------------------------
class Transient(EnrichError):
    reason = "transient"


class StoreUnavailable(Transient):
    reason = "store_unavailable"


class IndexUnavailable(Transient):
    reason = "index_unavailable"


# --- skip (recorded in the document, chain continues) ------------------------------------
class Skip(EnrichError):
    reason = "skipped"


class NoModelForLanguage(Skip):
    reason = "no_model_for_language"


# --- configuration (refuse to start) -----------------------------------------------------
class ConfigurationError(EnrichError):
    reason = "configuration"
