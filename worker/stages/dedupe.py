"""Dedupe stage: cleaned text -> {content_hash, duplicate_of, similarity}.

Exact duplicates share the hash of the normalised cleaned text. Near duplicates share
enough MinHash values over word shingles (estimated Jaccard >= threshold); LSH bands
narrow the candidates. Deciding on the *cleaned* text means shared site boilerplate never
makes two different stories look alike.

The index (who is already there) is injected: Redis shared by all workers in production
(worker.index.RedisIndex, one atomic script call per article), in memory in embedded mode
(worker.index.MemoryIndex). Both decide with the same rule, :func:`decide`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

_WORDS = re.compile(r"\w+", re.UNICODE)


class Index(Protocol):
    def check_and_insert(
        self, doc_id: str, content_hash: str, signature: bytes, bands: list[str]
    ) -> tuple[str | None, float | None]:
        """Atomically: find the best earlier match; index the document if it has none."""


def words(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


def content_hash(text: str) -> str:
    return hashlib.sha256(" ".join(words(text)).encode("utf-8")).hexdigest()


def shingles(tokens: list[str], size: int) -> list[bytes]:
    if len(tokens) <= size:
        return [" ".join(tokens).encode("utf-8")] if tokens else []
    return [" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)]


def similarity(a: bytes, b: bytes) -> float:
    """Estimated Jaccard: the share of equal MinHash values (uint32, little-endian)."""
    x = np.frombuffer(a, dtype="<u4")
    y = np.frombuffer(b, dtype="<u4")
    return float(np.count_nonzero(x == y)) / len(x)


def decide(
    signature: bytes, candidates: Iterable[tuple[str, bytes]], threshold: float
) -> tuple[str | None, float | None]:
    """The earliest best candidate at or above threshold, as (id, similarity)."""
    best, best_sim = None, 0.0
    for cand_id, cand_sig in candidates:
        sim = similarity(signature, cand_sig)
        if sim > best_sim:
            best, best_sim = cand_id, sim
    if best is not None and best_sim >= threshold:
        return best, round(best_sim, 4)
    return None, None


class Deduplicator:
    """MinHash + LSH near-duplicate detection against an injected shared index."""

    def __init__(
        self, index: Index, *, threshold: float = 0.5, num_perm: int = 128, shingle_size: int = 5
    ) -> None:
        self.index = index
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.bands, self.rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
        self._seed_minhash = MinHash(num_perm=num_perm, seed=1)

    def signature(self, text: str) -> bytes:
        minhash = self._seed_minhash.copy()
        minhash.update_batch(shingles(words(text), self.shingle_size))
        return minhash.hashvalues.astype("<u4").tobytes()

    def band_keys(self, signature: bytes) -> list[str]:
        width = self.rows * 4
        return [
            f"{i}:{hashlib.blake2b(signature[i * width:(i + 1) * width], digest_size=8).hexdigest()}"
            for i in range(self.bands)
        ]

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        text = doc.get("text") or ""
        digest = content_hash(text)
        signature = self.signature(text)
        duplicate_of, sim = self.index.check_and_insert(
            doc["id"], digest, signature, self.band_keys(signature)
        )
        doc["dedupe"] = {"content_hash": digest, "duplicate_of": duplicate_of, "similarity": sim}
        return doc
