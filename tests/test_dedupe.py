"""Dedupe stage and both index adapters (in memory, real Redis): exact, near, unrelated, races."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from worker.index import MemoryIndex, RedisIndex
from worker.stages.cleaning import clean
from worker.stages.dedupe import Deduplicator, content_hash, decide, shingles, similarity, words

THRESHOLD = 0.5
HOUR = 3600

UNRELATED = """Volunteers count record number of grey seal pups on the east coast

Volunteers counting grey seal pups on a remote shingle spit recorded more than two thousand births this winter, the conservation trust said on Thursday, the highest number since counts began.
Rangers said the colony had grown steadily since the first pups were born on the spit several decades ago, and it is now one of the largest breeding sites in the country.
The trust asked visitors to keep at least ten metres from the animals and to keep dogs on leads, after several pups were abandoned by their mothers when walkers came too close.
A ranger said the rise showed how well the seals were protected, but warned that winter storms could still wash young pups off the beach before they learn to swim.
"""

OTHER_TITLE = "Kremlin claims full control of Luhansk after fall of frontline city"


@pytest.fixture(params=["memory", "redis"])
def make_index(request):
    """A factory of fresh indexes of the parametrised kind (Redis: real server, own key prefix)."""
    if request.param == "memory":
        return lambda threshold=THRESHOLD: MemoryIndex(threshold=threshold, window_seconds=HOUR)
    client = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("key_prefix")
    return lambda threshold=THRESHOLD: RedisIndex(client, prefix=prefix, threshold=threshold,
                                                  window_seconds=HOUR)


@pytest.fixture
def dedupe(make_index) -> Deduplicator:
    return Deduplicator(make_index(), threshold=THRESHOLD)


def cleaned(doc_id: str, text: str) -> dict:
    return clean({"id": doc_id, "text": text})


def run(dedupe: Deduplicator, doc_id: str, text: str) -> dict:
    return dedupe(cleaned(doc_id, text))["dedupe"]


def edited_copy(seed_text: str) -> str:
    """The seed with another headline, one more ad marker and its first story sentence gone."""
    lines = seed_text.splitlines()
    headline_at = next(i for i, line in enumerate(lines) if line.strip() and line.strip() != "Advertisement")
    lines[headline_at] = OTHER_TITLE
    story_at = next(i for i, line in enumerate(lines) if len(line) > 200 and ". " in line
                    and i > headline_at + 3)
    first, _, rest = lines[story_at].partition(". ")
    assert rest, "the chosen paragraph should have more than one sentence"
    lines[story_at] = rest
    lines.insert(story_at + 1, "Advertisement")
    return "\n".join(lines)


# --- pure parts ------------------------------------------------------------------------------
def test_content_hash_ignores_case_punctuation_and_spacing():
    """The content hash is over the words only: case, punctuation and whitespace do not matter."""
    assert content_hash("The Ferry, stays!\n\n") == content_hash("the ferry   stays")
    assert content_hash("the ferry stays") != content_hash("the ferry goes")


def test_shingles_of_short_and_long_texts():
    """Texts shorter than a shingle are one shingle; longer ones slide one word at a time."""
    assert shingles([], 3) == []
    assert shingles(["a", "b"], 3) == [b"a b"]
    assert shingles(words("a b c d"), 3) == [b"a b c", b"b c d"]


def test_similarity_is_share_of_equal_values():
    """similarity() is the share of equal uint32 values of two signatures."""
    a = (1).to_bytes(4, "little") + (2).to_bytes(4, "little")
    b = (1).to_bytes(4, "little") + (3).to_bytes(4, "little")
    assert similarity(a, a) == 1.0
    assert similarity(a, b) == 0.5


def test_decide_takes_earliest_best_at_or_above_threshold():
    """decide() picks the highest similarity, the earliest on ties, and nothing under threshold."""
    sig = bytes(range(16))
    half = sig[:8] + bytes(8)
    assert decide(sig, [("x", bytes(16)), ("h1", half), ("h2", half)], 0.5) == ("h1", 0.5)
    assert decide(sig, [("h", half), ("full", sig)], 0.5) == ("full", 1.0)
    assert decide(sig, [("h", half)], 0.75) == (None, None)
    assert decide(sig, [], 0.5) == (None, None)


def test_signature_is_deterministic():
    """The same text gives the same signature in two deduplicators (fixed MinHash seed)."""
    one = Deduplicator(MemoryIndex(threshold=THRESHOLD, window_seconds=HOUR))
    two = Deduplicator(MemoryIndex(threshold=THRESHOLD, window_seconds=HOUR))
    assert one.signature(UNRELATED) == two.signature(UNRELATED)
    assert len(one.signature(UNRELATED)) == 128 * 4
    assert len(one.band_keys(one.signature(UNRELATED))) == one.bands


# --- both indexes ----------------------------------------------------------------------------
def test_first_article_is_canonical(dedupe, seed_text):
    """The first article seen has no duplicate_of and carries its content hash."""
    result = run(dedupe, "orig", seed_text)
    assert result["duplicate_of"] is None
    assert result["similarity"] is None
    assert len(result["content_hash"]) == 64


def test_exact_duplicate_has_similarity_one(dedupe, seed_text):
    """The same article under another id is a duplicate of the first with similarity 1.0."""
    first = run(dedupe, "orig", seed_text)
    second = run(dedupe, "copy", seed_text)
    assert second == {"content_hash": first["content_hash"], "duplicate_of": "orig",
                      "similarity": 1.0}


def test_edited_copy_is_near_duplicate(dedupe, seed_text):
    """Another title, an extra ad marker and one sentence fewer: still a duplicate of the original."""
    original = run(dedupe, "orig", seed_text)
    copy_text = edited_copy(seed_text)
    copy = run(dedupe, "edited", copy_text)
    assert copy["content_hash"] != original["content_hash"]
    assert copy["duplicate_of"] == "orig"
    assert THRESHOLD <= copy["similarity"] < 1.0


def test_unrelated_article_is_not_a_duplicate(dedupe, seed_text):
    """A different story is not a duplicate of the seed."""
    run(dedupe, "orig", seed_text)
    result = run(dedupe, "seals", UNRELATED)
    assert result["duplicate_of"] is None
    assert result["similarity"] is None


def test_shared_boilerplate_does_not_make_duplicates(dedupe):
    """Two different stories wrapped in the same site boilerplate are not duplicates."""
    chrome_top = "Menu\nHome\nNews\nSign up for our daily newsletter\n"
    chrome_bottom = "\nShare this article\nFacebook\nTwitter\n© 2025 Coast Gazette\nTerms of use | Privacy policy\n"
    story_two = (
        "Harbour council keeps last ferry\n"
        "The harbour council voted on Tuesday evening to keep the last passenger ferry running for at "
        "least five more years, after a petition signed by three thousand residents.\n"
        "The ferry carries about four hundred people a day between the old quay and the island, most "
        "of them commuters and schoolchildren, and it has run every day since the new pier opened.\n"
    )
    run(dedupe, "seals", chrome_top + UNRELATED + chrome_bottom)
    result = run(dedupe, "ferry", chrome_top + story_two + chrome_bottom)
    assert result["duplicate_of"] is None


def test_redelivered_canonical_gets_same_answer(dedupe, seed_text):
    """Re-checking the canonical article's id gives the same answer; it is never its own duplicate."""
    first = run(dedupe, "orig", seed_text)
    again = run(dedupe, "orig", seed_text)
    assert again == first
    assert again["duplicate_of"] is None


def test_redelivered_duplicate_gets_same_answer(dedupe, seed_text):
    """Re-checking a duplicate's id gives the same duplicate_of and similarity."""
    run(dedupe, "orig", seed_text)
    first = run(dedupe, "edited", edited_copy(seed_text))
    again = run(dedupe, "edited", edited_copy(seed_text))
    assert again == first
    assert again["duplicate_of"] == "orig"


def test_updated_article_is_not_its_own_duplicate(dedupe, seed_text):
    """The same id with lightly edited text (new hash, same bands) does not match itself."""
    run(dedupe, "orig", seed_text)
    result = run(dedupe, "orig", edited_copy(seed_text))
    assert result["duplicate_of"] is None


def test_duplicate_points_to_canonical_not_to_other_duplicate(dedupe, seed_text):
    """A third copy points at the canonical article, since duplicates are not indexed."""
    run(dedupe, "orig", seed_text)
    run(dedupe, "edited", edited_copy(seed_text))
    third = run(dedupe, "third", edited_copy(seed_text))
    assert third["duplicate_of"] == "orig"


def test_index_threshold_is_respected(make_index, seed_text):
    """With a threshold above the edited copy's similarity, only exact copies are duplicates."""
    index = make_index(threshold=0.999)
    strict = Deduplicator(index, threshold=THRESHOLD)
    run(strict, "orig", seed_text)
    assert run(strict, "edited", edited_copy(seed_text))["duplicate_of"] is None
    assert run(strict, "exact", seed_text)["duplicate_of"] == "orig"


# --- time window -----------------------------------------------------------------------------
def test_memory_index_entries_expire_after_window(seed_text):
    """In memory, after the window neither the exact copy nor the edited copy is a duplicate."""
    now = [1000.0]
    index = MemoryIndex(threshold=THRESHOLD, window_seconds=60, clock=lambda: now[0])
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    now[0] += 30
    assert run(dedupe, "early", seed_text)["duplicate_of"] == "orig"
    now[0] += 61
    assert run(dedupe, "late-exact", seed_text)["duplicate_of"] is None


def test_memory_index_near_duplicate_expires_after_window(seed_text):
    """In memory, a near duplicate arriving after the window is canonical."""
    now = [1000.0]
    index = MemoryIndex(threshold=THRESHOLD, window_seconds=60, clock=lambda: now[0])
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    now[0] += 61
    assert run(dedupe, "late-edited", edited_copy(seed_text))["duplicate_of"] is None


def test_redis_index_entries_expire_after_window(redis_client, key_prefix, seed_text):
    """On Redis with a 1 s window, a copy arriving 2 s later is not a duplicate."""
    index = RedisIndex(redis_client, prefix=key_prefix, threshold=THRESHOLD, window_seconds=1)
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    assert run(dedupe, "soon", seed_text)["duplicate_of"] == "orig"
    time.sleep(2.1)
    assert run(dedupe, "late-exact", seed_text)["duplicate_of"] is None
    assert run(dedupe, "late-edited", edited_copy(seed_text))["duplicate_of"] == "late-exact"


def test_redis_index_keys_have_ttl(redis_client, key_prefix, seed_text):
    """Every key the Redis index writes has an expiry, so the index cannot grow forever."""
    index = RedisIndex(redis_client, prefix=key_prefix, threshold=THRESHOLD, window_seconds=HOUR)
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    run(dedupe, "copy", seed_text)
    keys = list(redis_client.scan_iter(match=f"{key_prefix}*"))
    assert keys
    for key in keys:
        assert 0 < redis_client.ttl(key) <= HOUR


def test_redis_unreachable_is_index_unavailable():
    """A Redis that does not answer raises IndexUnavailable (a transient error)."""
    from worker.errors import IndexUnavailable

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    index = RedisIndex(client, prefix="test:down:", threshold=THRESHOLD, window_seconds=HOUR)
    with pytest.raises(IndexUnavailable):
        index.check_and_insert("a", "h", bytes(512), ["0:00"])


# --- concurrency -----------------------------------------------------------------------------
def test_redis_race_gives_exactly_one_canonical(redis_url, key_prefix, seed_text):
    """Two workers submitting near-duplicates at the same instant: exactly one becomes canonical (30 rounds)."""
    signer = Deduplicator(MemoryIndex(threshold=THRESHOLD, window_seconds=HOUR), threshold=THRESHOLD)
    texts = [cleaned("a", seed_text)["text"], cleaned("b", edited_copy(seed_text))["text"]]
    prepared = []
    for text in texts:
        signature = signer.signature(text)
        prepared.append((content_hash(text), signature, signer.band_keys(signature)))
    assert prepared[0][0] != prepared[1][0]

    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        for round_number in range(30):
            prefix = f"{key_prefix}race{round_number}:"
            indexes = [RedisIndex(c, prefix=prefix, threshold=THRESHOLD, window_seconds=HOUR)
                       for c in clients]
            ids = [f"r{round_number}-{side}-{uuid.uuid4().hex[:8]}" for side in ("a", "b")]
            barrier = threading.Barrier(2)
            results: list = [None, None]
            errors: list = []

            def submit(side: int) -> None:
                try:
                    barrier.wait(timeout=10)
                    digest, signature, bands = prepared[side]
                    results[side] = indexes[side].check_and_insert(ids[side], digest, signature, bands)
                except Exception as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=submit, args=(side,)) for side in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert not errors, errors
            canonical = [side for side in (0, 1) if results[side][0] is None]
            assert len(canonical) == 1, (round_number, results)
            other = 1 - canonical[0]
            assert results[other][0] == ids[canonical[0]]
            assert results[other][1] >= THRESHOLD
    finally:
        for client in clients:
            client.close()


def test_memory_race_gives_exactly_one_canonical(seed_text):
    """In memory, threads submitting near-duplicates together also leave exactly one canonical."""
    for round_number in range(30):
        dedupe = Deduplicator(MemoryIndex(threshold=THRESHOLD, window_seconds=HOUR),
                              threshold=THRESHOLD)
        docs = [cleaned(f"m{round_number}a", seed_text),
                cleaned(f"m{round_number}b", edited_copy(seed_text))]
        barrier = threading.Barrier(2)

        def submit(doc: dict) -> None:
            barrier.wait(timeout=10)
            dedupe(doc)

        threads = [threading.Thread(target=submit, args=(doc,)) for doc in docs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        outcomes = [doc["dedupe"]["duplicate_of"] for doc in docs]
        assert outcomes.count(None) == 1, outcomes
        assert set(outcomes) - {None} <= {docs[0]["id"], docs[1]["id"]}
