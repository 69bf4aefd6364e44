"""Per-process resources, opened lazily at first use (after the prefork fork).

Models, the Redis client, the store and the pipeline are built once per worker process and
reused by every task it runs. Embedded mode builds its own with an in-process dedupe index.
"""

from __future__ import annotations

import threading
from functools import cached_property, partial
from typing import Any

import redis

from worker.deadletter import DeadLetters
from worker.errors import ConfigurationError
from worker.index import MemoryIndex, RedisIndex
from worker.pipeline import Pipeline
from worker.settings import Settings, get_settings

# spaCy components the entity stage needs; the rest cost time and memory for nothing.
# en_core_web_sm's ner has its own embedding layer: only tagger and parser listen to the
# shared tok2vec, so it goes too (same entities, about 22 % less CPU per English article).
NER_ONLY_EXCLUDE = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter",
                    "morphologizer"]


class ModelRegistry:
    """Language code -> loaded spaCy pipeline, loaded on first request, once; and the place
    gazetteer (``gazetteer()``), built on first request, once (about 2 s and 40 MB)."""

    def __init__(self, models: dict[str, str], *, gazetteer: bool = True) -> None:
        self.models = dict(models)
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._want_gazetteer = gazetteer
        self._gazetteer: Any | None = None

    def __call__(self, language: str) -> Any | None:
        name = self.models.get(language)
        if name is None:
            return None
        with self._lock:
            if name not in self._loaded:
                import spacy

                try:
                    self._loaded[name] = spacy.load(name, exclude=NER_ONLY_EXCLUDE)
                except OSError as exc:
                    raise ConfigurationError(
                        f"spaCy model {name!r} for {language!r} is not installed: {exc}"
                    ) from exc
            return self._loaded[name]

    def gazetteer(self) -> Any | None:
        """The place gazetteer (worker.stages.gazetteer.Gazetteer), or None when turned off."""
        if not self._want_gazetteer:
            return None
        if self._gazetteer is None:
            with self._lock:
                if self._gazetteer is None:
                    from worker.geonames import load_gazetteer_isolated

                    self._gazetteer = load_gazetteer_isolated()
        return self._gazetteer


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30,
        retry_on_timeout=True,
    )


class Resources:
    def __init__(self, settings: Settings, *, embedded: bool = False) -> None:
        self.settings = settings
        self.embedded = embedded

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings.index_redis_url)

    @cached_property
    def broker_redis(self) -> redis.Redis:
        if self.settings.broker_url == self.settings.index_redis_url:
            return self.redis
        return redis_client(self.settings.broker_url)

    @cached_property
    def dead_letters(self) -> DeadLetters:
        # On the broker's Redis, beside the queue: the transport parks malformed items there.
        return DeadLetters(self.broker_redis, self.settings.dead_letter_key)

    @cached_property
    def models(self) -> ModelRegistry:
        return ModelRegistry(self.settings.spacy_models, gazetteer=self.settings.entity_gazetteer)

    @cached_property
    def dedupe_index(self):
        s = self.settings
        if self.embedded:
            return MemoryIndex(threshold=s.dedupe_threshold, window_seconds=s.dedupe_window_seconds)
        return RedisIndex(
            self.redis, prefix=s.key_prefix, threshold=s.dedupe_threshold,
            window_seconds=s.dedupe_window_seconds,
        )

    @cached_property
    def pipeline(self) -> Pipeline:
        # Imported here so that importing this module (the producer does, via tasks'
        # names) never pulls in trafilatura, spaCy or numpy.
        from worker.memory import LibraryPages, at_most_every
        from worker.stages.cleaning import clean
        from worker.stages.dedupe import Deduplicator
        from worker.stages.entities import EntityTagger
        from worker.stages.language import LanguageDetector, Shortlist, lingua_library

        s = self.settings
        # Loaded models live on the heap; the pages of lingua's library they (and each
        # narrower detector built later) were read from need not stay in this process's RSS
        # (worker/memory.py): released once the models are loaded, and after a build at most
        # once a second.
        lingua_pages = LibraryPages(lingua_library()) if s.language_release_pages else None
        language = LanguageDetector(
            languages=s.language_languages, sample_chars=s.language_sample_chars,
            head_chars=s.language_head_chars, candidates=s.language_candidates,
            min_chars=s.language_min_chars, min_confidence=s.language_min_confidence,
            word_min_confidence=s.language_word_min_confidence,
            hint_min_confidence=s.language_hint_min_confidence,
            preload=s.language_preload,
            shortlist=Shortlist() if s.language_shortlist else None,
            shortlist_size=s.language_shortlist,
            after_build=at_most_every(1.0, lingua_pages.release) if lingua_pages else None,
        )
        if lingua_pages is not None:
            lingua_pages.release()
        return Pipeline(
            {
                "clean": partial(clean, include_comments=s.clean_include_comments),
                "language": language,
                "entities": EntityTagger(
                    self.models, gazetteer_for=self.models.gazetteer,
                    fallback_languages=s.entity_fallback_languages,
                ),
                "dedupe": Deduplicator(
                    self.dedupe_index, threshold=s.dedupe_threshold,
                    num_perm=s.dedupe_num_perm, shingle_size=s.dedupe_shingle_size,
                ),
            },
            max_text_bytes=s.max_text_bytes,
            max_html_bytes=s.max_html_bytes,
        )

    @cached_property
    def store(self):
        from worker.store import open_store

        return open_store(self.settings.store_url)


_process_resources: Resources | None = None


def get_resources() -> Resources:
    """This process's resources (worker side)."""
    global _process_resources
    if _process_resources is None:
        _process_resources = Resources(get_settings())
    return _process_resources


def reset_resources() -> None:
    """Forget resources inherited across a fork; the child opens its own."""
    global _process_resources
    _process_resources = None
