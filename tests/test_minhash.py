"""Our MinHash and LSH banding equal datasketch's (the dedupe stage computes them itself to
keep scipy out of the worker): same signatures, same (bands, rows)."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from worker.stages.dedupe import Deduplicator, minhash, optimal_bands, permutations, shingles


def _datasketch_signature(values: list[bytes], num_perm: int) -> np.ndarray:
    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch(values)
    return m.hashvalues


@pytest.mark.parametrize("num_perm", [16, 128, 256])
def test_signatures_equal_datasketch_minhash(num_perm):
    """Random texts of 0..400 words, word 5-shingles: identical uint32 values."""
    rng = random.Random(num_perm)
    vocabulary = [f"w{i}" for i in range(300)] + ["ünïcode", "слово", "新闻"]
    a, b = permutations(num_perm)
    for _ in range(60):
        words = [rng.choice(vocabulary) for _ in range(rng.randrange(0, 400))]
        values = shingles(words, 5)
        ours = minhash(values, a, b)
        assert ours.dtype == np.uint32
        assert np.array_equal(ours, _datasketch_signature(values, num_perm))


def test_no_shingles_give_the_empty_signature():
    """No words at all: every value is 2^32 - 1, as datasketch's fresh MinHash."""
    a, b = permutations(128)
    assert np.array_equal(minhash([], a, b), MinHash(num_perm=128, seed=1).hashvalues)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [32, 128])
def test_bands_equal_minhashlsh_choice(threshold, num_perm):
    assert optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_the_dedupe_stage_does_not_import_scipy_or_datasketch():
    """The worker's dedupe stage stays free of scipy (about 40 MB per process)."""
    code = ("import sys; from worker.stages.dedupe import Deduplicator; "
            "print(sorted(m for m in ('scipy', 'datasketch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_deduplicator_uses_25_bands_of_5_rows():
    """threshold 0.5, 128 permutations: the banding the README and the index assume."""
    dedup = Deduplicator(index=None, threshold=0.5, num_perm=128)
    assert (dedup.bands, dedup.rows) == (25, 5)
