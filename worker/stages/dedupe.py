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
import operator
import re
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

_WORDS = re.compile(r"\w+", re.UNICODE)


class Index(Protocol):
    def check_and_insert(
        self, doc_id: str, content_hash: str, signature: bytes, bands: list[str]
    ) -> tuple[str | None, float | None]:
        """Atomically: find the best earlier match; index the document if it has none."""

    def check_and_insert_many(
        self, items: list[tuple[str, str, bytes, list[str]]]
    ) -> list[tuple[str | None, float | None]]:
        """The same for several documents in order, each seeing the ones before it."""


def words(text: str) -> list[str]:
    return _WORDS.findall(text.casefold())


def content_hash(text: str, tokens: list[str] | None = None) -> str:
    """SHA-256 of the normalised text (``tokens``: its words, when already found)."""
    tokens = words(text) if tokens is None else tokens
    return hashlib.sha256(" ".join(tokens).encode("utf-8")).hexdigest()


def shingles(tokens: list[str], size: int) -> list[bytes]:
    """Word ``size``-shingles as UTF-8 (a text of at most ``size`` words is one shingle).
    Built with map/zip, not a Python loop: this is most of the stage's cost."""
    if len(tokens) <= size:
        return [" ".join(tokens).encode("utf-8")] if tokens else []
    return list(map(str.encode, map(" ".join, zip(*(tokens[i:] for i in range(size))))))


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


# --- MinHash, as datasketch 2.0 computes it ----------------------------------------------------
# Signatures are bit-identical to datasketch.MinHash(num_perm, seed=1) with its default
# scheme (affine32: SHA-1's first 4 bytes, MurmurHash3's finalizer, then h -> a*h + b mod
# 2^32 with odd a), and the bands to MinHashLSH's choice (tests/test_minhash.py checks
# both against datasketch). Why not import datasketch here: its package imports
# scipy.integrate for MinHashLSH's parameter search, about 40 MB more in every worker process
# for code the worker never runs. datasketch stays the peer that `enrich eval` and
# `enrich bench` measure against.
_FMIX32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)
_DIGEST = operator.methodcaller("digest")


def _fmix32(hv: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = (np.uint32(v) for v in _FMIX32)
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def minhash(values: list[bytes], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimum of each permutation over the values' hashes (all 2^32-1 when empty)."""
    if not values:
        return np.full(len(a), 0xFFFFFFFF, dtype=np.uint32)
    # SHA-1's first 4 bytes of each value: whole digests joined at C speed, then every fifth
    # little-endian uint32 (a digest is 20 bytes).
    digests = b"".join(map(_DIGEST, map(hashlib.sha1, values)))
    hv = np.frombuffer(digests, dtype="<u4")[::5]
    with np.errstate(over="ignore"):
        return (_fmix32(hv.astype(np.uint32)).reshape(-1, 1) * a + b).min(axis=0)


def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positive + false negative probability, as MinHashLSH
    does (equal weights). The integrands are polynomials of degree <= num_perm, so
    Gauss-Legendre with num_perm // 2 + 1 nodes integrates them exactly."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(f, lo: float, hi: float) -> float:
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2
        return float((hi - lo) / 2 * np.dot(weights, f(s)))

    best, choice = float("inf"), (0, 0)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = integral(lambda s: 1 - (1 - s ** rows) ** bands, 0.0, threshold)
            fn = integral(lambda s: (1 - s ** rows) ** bands, threshold, 1.0)
            if fp + fn < best:
                best, choice = fp + fn, (bands, rows)
    return choice


class Deduplicator:
    """MinHash + LSH near-duplicate detection against an injected shared index."""

    def __init__(
        self, index: Index, *, threshold: float = 0.5, num_perm: int = 128, shingle_size: int = 5
    ) -> None:
        self.index = index
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.bands, self.rows = optimal_bands(threshold, num_perm)
        self._a, self._b = permutations(num_perm)

    def signature(self, text: str, tokens: list[str] | None = None) -> bytes:
        """MinHash of the text's word shingles (``tokens``: its words, when already found)."""
        tokens = words(text) if tokens is None else tokens
        values = minhash(shingles(tokens, self.shingle_size), self._a, self._b)
        return values.astype("<u4").tobytes()

    def band_keys(self, signature: bytes) -> list[str]:
        width = self.rows * 4
        return [
            f"{i}:{hashlib.blake2b(signature[i * width:(i + 1) * width], digest_size=8).hexdigest()}"
            for i in range(self.bands)
        ]

    def _entry(self, doc: dict[str, Any]) -> tuple[str, str, bytes, list[str]]:
        text = doc.get("text") or ""
        tokens = words(text)
        signature = self.signature(text, tokens)
        return doc["id"], content_hash(text, tokens), signature, self.band_keys(signature)

    @staticmethod
    def _decided(doc: dict[str, Any], digest: str, decision: tuple) -> dict[str, Any]:
        duplicate_of, sim = decision
        doc["dedupe"] = {"content_hash": digest, "duplicate_of": duplicate_of, "similarity": sim}
        return doc

    def __call__(self, doc: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(doc)
        return self._decided(doc, entry[1], self.index.check_and_insert(*entry))

    def many(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several documents with one index call (a batch's): the decisions of calling the
        stage on each in turn, at one insert time."""
        entries = [self._entry(doc) for doc in docs]
        decisions = self.index.check_and_insert_many(entries)
        return [self._decided(doc, entry[1], decision)
                for doc, entry, decision in zip(docs, entries, decisions, strict=True)]
