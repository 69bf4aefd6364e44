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


@pytest.fixture(params=["memory", "redis"])
def make_clocked(request):
    """A factory of fresh indexes on a clock the test moves: (index, now), now[0] the time."""
    def make(window: int, bucket: int | None = None, threshold: float = THRESHOLD):
        now = [1_000_000.0]
        options = {"threshold": threshold, "window_seconds": window, "bucket_seconds": bucket,
                   "clock": lambda: now[0]}
        if request.param == "memory":
            return MemoryIndex(**options), now
        return RedisIndex(request.getfixturevalue("redis_client"),
                          prefix=request.getfixturevalue("key_prefix"), **options), now
    return make


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
def test_entries_expire_after_window(make_clocked, seed_text):
    """After the window neither the exact copy nor the edited copy is a duplicate."""
    index, now = make_clocked(window=60)
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    now[0] += 30
    assert run(dedupe, "early", seed_text)["duplicate_of"] == "orig"
    now[0] += 31
    assert run(dedupe, "late-exact", seed_text)["duplicate_of"] is None
    now[0] += 61
    assert run(dedupe, "late-edited", edited_copy(seed_text))["duplicate_of"] is None


def test_window_is_exact_across_buckets(make_clocked, seed_text):
    """With buckets shorter than the window, an entry matches until the window ends, exactly."""
    index, now = make_clocked(window=60, bucket=7)
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    now[0] += 59.5
    assert run(dedupe, "edited", edited_copy(seed_text))["duplicate_of"] == "orig"
    assert run(dedupe, "exact", seed_text)["duplicate_of"] == "orig"
    now[0] += 1
    assert run(dedupe, "late-exact", seed_text)["duplicate_of"] is None


def test_decision_is_remembered_while_its_bucket_is_read(make_clocked, seed_text):
    """A redelivery past the window still gets its decision while the bucket is read, not after."""
    index, now = make_clocked(window=60, bucket=60)  # buckets [999960, 1000020), ...
    dedupe = Deduplicator(index, threshold=THRESHOLD)
    run(dedupe, "orig", seed_text)
    now[0] += 10
    assert run(dedupe, "copy", seed_text)["duplicate_of"] == "orig"
    now[0] += 65  # the window has passed for both, but their bucket is still read
    assert run(dedupe, "copy", seed_text)["duplicate_of"] == "orig"
    assert run(dedupe, "other", seed_text)["duplicate_of"] is None
    now[0] += 65  # the bucket is no longer read: the decision is made again
    assert run(dedupe, "copy", seed_text)["duplicate_of"] is None


def _sig(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


QUERY = list(range(1, 129))
BAND = ["0:shared"]  # every crafted document below lands in this one band
SECOND_HALF = _sig([1000 + v for v in QUERY[:64]] + QUERY[64:])  # 0.5 like QUERY
FIRST_HALF = _sig(QUERY[:64] + [2000 + v for v in QUERY[64:]])  # 0.5 like QUERY, 0 like the above


def test_tie_goes_to_the_earlier_indexed_across_buckets(make_clocked):
    """Two candidates equally similar, indexed in different buckets: the earlier one wins."""
    index, now = make_clocked(window=60, bucket=10)
    assert index.check_and_insert("a", "ha", SECOND_HALF, BAND) == (None, None)
    now[0] += 15
    assert index.check_and_insert("b", "hb", FIRST_HALF, BAND) == (None, None)
    now[0] += 15
    assert index.check_and_insert("q", "hq", _sig(QUERY), BAND) == ("a", 0.5)


@pytest.mark.parametrize("bucket", [10, 3600], ids=["across-buckets", "in-one-bucket"])
def test_reindexed_id_moves_behind_in_its_bands(make_clocked, bucket):
    """An id indexed again (new text) goes behind the others in a band, as in a sorted set by
    time, so it loses a tie it won before."""
    index, now = make_clocked(window=60, bucket=bucket)
    index.check_and_insert("a", "ha", SECOND_HALF, BAND)
    now[0] += 15
    index.check_and_insert("b", "hb", FIRST_HALF, BAND)
    assert index.check_and_insert("q1", "hq1", _sig(QUERY), BAND) == ("a", 0.5)
    now[0] += 15
    quarters = _sig(QUERY[:32] + [3000 + v for v in QUERY[32:96]] + QUERY[96:])  # 0.5 like QUERY
    assert index.check_and_insert("a", "ha2", quarters, BAND) == (None, None)
    assert index.check_and_insert("q2", "hq2", _sig(QUERY), BAND) == ("b", 0.5)


def test_reindexed_id_is_compared_by_its_latest_signature(make_clocked):
    """An id indexed again in a later bucket is compared by its new signature, also where it
    is met through an entry of its earlier indexing."""
    index, now = make_clocked(window=60, bucket=10)
    index.check_and_insert("a", "ha", SECOND_HALF, BAND)
    now[0] += 15
    closer = _sig(QUERY[:80] + [4000 + v for v in QUERY[80:]])  # 0.625 like QUERY
    assert index.check_and_insert("a", "ha2", closer, ["1:other"]) == (None, None)
    assert index.check_and_insert("q", "hq", _sig(QUERY), BAND) == ("a", 0.625)


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
        assert 0 < redis_client.ttl(key) <= 3 * HOUR  # window + 2 buckets (a bucket is the window)


def test_redis_unreachable_is_index_unavailable():
    """A Redis that does not answer raises IndexUnavailable (a transient error)."""
    from worker.errors import IndexUnavailable

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    index = RedisIndex(client, prefix="test:down:", threshold=THRESHOLD, window_seconds=HOUR)
    with pytest.raises(IndexUnavailable):
        index.check_and_insert("a", "h", bytes(512), ["0:00"])


# --- the two twins on the evaluation stream --------------------------------------------------
def _stream_events(eval_dir, limit: int) -> list[tuple[str, str, bytes, list[str]]]:
    """The first messages of the dedupe stream as index calls, with redeliveries of earlier
    ones and earlier ids coming back with new text mixed in."""
    from worker.errors import EnrichError
    from worker.evaluation.readers import read_jsonl

    signer = Deduplicator(MemoryIndex(threshold=THRESHOLD, window_seconds=HOUR))
    events: list = []
    for number, record in enumerate(read_jsonl(eval_dir / "dedupe" / "stream.jsonl", limit)):
        try:
            text = cleaned(f"e{number}", record.get("text") or "")["text"]
        except EnrichError:
            continue
        signature = signer.signature(text)
        event = (f"e{number}", content_hash(text), signature, signer.band_keys(signature))
        events.append(event)
        if number % 17 == 0:
            events.append(events[len(events) // 2])  # an earlier message redelivered
        if number % 29 == 0:
            events.append((events[len(events) // 3][0], *event[1:]))  # an earlier id, new text
    return events


def test_redis_and_memory_decide_the_same_on_the_stream(eval_dir, redis_client, key_prefix):
    """On 1,200 stream messages, one second apart, with a 300 s window in 100 s buckets, the
    Redis and the in-memory index give every decision alike; entries did expire and buckets
    did rotate, and Redis kept only the buckets still read plus the one that just died."""
    events = _stream_events(eval_dir, 1200)
    options = {"threshold": THRESHOLD, "window_seconds": 300, "bucket_seconds": 100}
    runs = {}
    for name, make in {
        "redis": lambda clock: RedisIndex(redis_client, prefix=key_prefix, clock=clock, **options),
        "memory": lambda clock: MemoryIndex(clock=clock, **options),
        "no window": lambda clock: MemoryIndex(threshold=THRESHOLD, window_seconds=10**9,
                                               clock=clock),
    }.items():
        now = [1_000_000.0]
        index = make(lambda: now[0])
        runs[name] = []
        for event in events:
            runs[name].append(index.check_and_insert(*event))
            now[0] += 1
        if name == "redis":
            assert len(list(redis_client.scan_iter(match=f"{key_prefix}*"))) <= 300 // 100 + 2
    assert runs["redis"] == runs["memory"]
    assert sum(d is not None for d, _ in runs["redis"]) > 100
    assert runs["memory"] != runs["no window"]


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


def test_several_documents_in_one_call_are_decided_as_one_by_one(make_index, seed_text):
    """A batch's call (many) gives each document the decision that calling the stage on
    each in turn gives: near duplicates inside the batch, an id twice, an exact copy."""
    texts = [("s1", seed_text), ("u1", UNRELATED), ("s2", edited_copy(seed_text)),
             ("s1", seed_text), ("s3", seed_text), ("u2", UNRELATED + "\nOne more line.")]
    docs = [cleaned(doc_id, text) for doc_id, text in texts]
    alone = Deduplicator(make_index(), threshold=THRESHOLD)
    one_by_one = [alone(dict(doc))["dedupe"] for doc in docs]
    index = make_index()
    if isinstance(index, RedisIndex):
        index.prefix += "together:"  # its own keys: nothing of the one-by-one run to find
    together = Deduplicator(index, threshold=THRESHOLD)
    batch = [doc["dedupe"] for doc in together.many([dict(doc) for doc in docs[:3]])]
    batch += [doc["dedupe"] for doc in together.many([dict(doc) for doc in docs[3:]])]
    assert batch == one_by_one
    assert [d["duplicate_of"] for d in batch] == [None, None, "s1", None, "s1", "u1"]
