"""Dedupe index adapters: the shared Redis index and the in-process one.

Both keep the same rule as ``worker.stages.dedupe.decide``: an exact content-hash owner
wins (similarity 1.0); otherwise the earliest-indexed candidate with the highest estimated
Jaccard at or above the threshold (candidates in band order, then in order of indexing
within a band); a document with no match becomes canonical and is indexed. A decision is
remembered per (id, content hash), so a redelivered article gets the same answer instead
of finding itself.

Layout: time is cut into buckets of ``bucket_seconds`` (default: the window), and each
bucket is one Redis hash, ``<prefix>dd:<bucket_seconds>:<bucket number>``, so that one
check costs a handful of commands (TIME, one HMGET per live bucket, one HMGET of candidate
signatures per bucket that may hold them, one HSET) instead of one or two per LSH band.
Its fields:

- ``b:<band key>``: the canonical documents in that band, each packed as
  (insert time, id) in the order they were indexed; an id's last entry is the one that
  counts, so an id indexed again moves to the end, as in the sorted sets of old;
- ``s:<id>``: a canonical document's signature (its latest, in the newest bucket);
- ``h:<content hash>``: (insert time, id) of the document owning that exact text;
- ``d:<content hash>:<id>``: the decision given to that article;
- ``e``: set when the bucket is created, which is when it gets its expiry.

Window: a band entry or content-hash owner matches for exactly ``window_seconds`` after it
was indexed (its insert time is stored with it), as before buckets. A remembered decision
is kept while its bucket is read: at least the window, less than window + one bucket. A
bucket is read while it may hold a live entry and expires one bucket after that; the
first check in a new bucket UNLINKs the bucket that just died, so a big hash is freed off
Redis's main thread rather than by a synchronous expiry. So Redis holds the entries of
window + 1 bucket (2 windows at the default), of window + 2 buckets at most when no check
has come since a bucket died; every key has a TTL. MemoryIndex keeps the same buckets and
drops one as soon as it is no longer read, so both twins decide the same.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import redis

from worker.errors import IndexUnavailable
from worker.stages.dedupe import decide, similarity

Decision = tuple[str | None, float | None]
Entry = tuple[str, str, bytes, list[str]]  # id, content hash, signature, band keys

# One round trip, atomic: two near-duplicates reaching two workers at the same instant are
# decided one after the other by Redis, so exactly one of them becomes canonical. One call
# decides several documents (a batch's), one after the other, exactly as that many calls
# in a row would (the later ones see the earlier ones), at one insert time.
# ARGV: prefix, threshold, window, span, now ('' = the server's TIME), bands per document,
# then per document: id, content hash, signature, its band keys.
_CHECK_AND_INSERT = """
local prefix, threshold = ARGV[1], tonumber(ARGV[2])
local window, span, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local nbands = tonumber(ARGV[6])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local current = math.floor(now / span)
local oldest = math.floor((now - window) / span)  -- older buckets hold no live entry
local function key(b) return prefix .. 'dd:' .. ARGV[4] .. ':' .. string.format('%d', b) end

local function check(id, chash, sig, band)
  local dfield = 'd:' .. chash .. ':' .. id
  local fields = {dfield, 'h:' .. chash, 'e'}
  for i = 1, nbands do fields[3 + i] = 'b:' .. band[i] end
  local rows = {}  -- newest bucket first
  for b = current, oldest, -1 do
    local row = redis.call('HMGET', key(b), unpack(fields))
    if row[1] then return row[1] end
    rows[#rows + 1] = row
  end

  local decision
  local owner
  for _, row in ipairs(rows) do
    if row[2] then owner = row[2] break end
  end
  if owner and struct.unpack('>d', owner) >= now - window and string.sub(owner, 9) ~= id then
    decision = string.sub(owner, 9) .. '|1'
  else
    -- Candidates in the order the sorted sets of one key per band gave them before buckets:
    -- band by band, then by (latest) insert time.
    local cands, seen = {}, {}
    for i = 1, nbands do
      local order, last = {}, {}
      for r = #rows, 1, -1 do
        local packed, pos = rows[r][3 + i], 1
        while packed and pos <= #packed do
          local at, m
          at, m, pos = struct.unpack('>dHc0', packed, pos)
          order[#order + 1] = m
          last[m] = {#order, at}
        end
      end
      for k, m in ipairs(order) do
        if last[m][1] == k and last[m][2] >= now - window and m ~= id and not seen[m] then
          seen[m] = true
          cands[#cands + 1] = m
        end
      end
    end
    local sigs, missing = {}, cands
    for r = 1, #rows do
      if #missing == 0 then break end
      local want, still = {}, {}
      for k, m in ipairs(missing) do want[k] = 's:' .. m end
      local got = {}
      for from = 1, #want, 1000 do  -- unpack() takes at most ~8000 values
        local part = redis.call('HMGET', key(current - r + 1),
                                unpack(want, from, math.min(from + 999, #want)))
        for j = 1, #part do got[from + j - 1] = part[j] end
      end
      for k, m in ipairs(missing) do
        if got[k] then sigs[m] = got[k] else still[#still + 1] = m end
      end
      missing = still
    end
    local best, bestsim, n = nil, 0, #sig / 4
    for _, m in ipairs(cands) do
      local other = sigs[m]
      if other and #other == #sig then
        local same = 0
        for k = 1, #sig, 4 do
          if string.sub(sig, k, k + 3) == string.sub(other, k, k + 3) then same = same + 1 end
        end
        local sim = same / n
        if sim > bestsim then best, bestsim = m, sim end
      end
    end
    if best and bestsim >= threshold then
      decision = best .. '|' .. string.format('%.4f', bestsim)
    end
  end

  local set = {dfield, decision or '|'}
  if not decision then
    local entry = struct.pack('>dH', now, #id) .. id
    set[3], set[4], set[5], set[6] = 'h:' .. chash, struct.pack('>d', now) .. id, 's:' .. id, sig
    for i = 1, nbands do  -- an earlier entry of an id indexed again stays; its last one counts
      set[#set + 1] = 'b:' .. band[i]
      set[#set + 1] = (rows[1][3 + i] or '') .. entry
    end
  end
  local created = not rows[1][3]
  if created then set[#set + 1] = 'e' set[#set + 1] = '1' end
  redis.call('HSET', key(current), unpack(set))
  if created then
    local ttl = math.ceil((current + 2) * span + window - now)  -- relative: clock may be a test's
    redis.call('EXPIRE', key(current), string.format('%d', ttl))
    redis.call('UNLINK', key(oldest - 1))
  end
  return decision or '|'
end

local decisions, per = {}, 3 + nbands
for base = 6, #ARGV - per, per do
  local band = {}
  for i = 1, nbands do band[i] = ARGV[base + 3 + i] end
  decisions[#decisions + 1] = check(ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], band)
end
return decisions
"""


def _parse(decision: bytes | str) -> Decision:
    text = decision.decode() if isinstance(decision, bytes) else decision
    dup, _, sim = text.partition("|")
    return (dup, round(float(sim), 4)) if dup else (None, None)


class RedisIndex:
    """The LSH index in Redis that every worker shares; one EVALSHA per article (or batch)."""

    def __init__(
        self, client: redis.Redis, *, prefix: str, threshold: float, window_seconds: int,
        bucket_seconds: int | None = None, clock=None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.threshold = threshold
        self.window = window_seconds
        self.bucket = bucket_seconds or window_seconds
        self.clock = clock  # None: the Redis server's TIME, one clock for all workers
        self._script = client.register_script(_CHECK_AND_INSERT)

    def check_and_insert(
        self, doc_id: str, content_hash: str, signature: bytes, bands: list[str]
    ) -> Decision:
        return self.check_and_insert_many([(doc_id, content_hash, signature, bands)])[0]

    def check_and_insert_many(self, items: list[Entry]) -> list[Decision]:
        """Several documents in one script call, decided in order as if one by one."""
        if not items:
            return []
        nbands = len(items[0][3])
        if any(len(bands) != nbands for *_, bands in items):
            raise ValueError("every document of one call needs the same number of bands")
        args = [self.prefix, self.threshold, self.window, self.bucket,
                "" if self.clock is None else repr(self.clock()), nbands]
        for doc_id, content_hash, signature, bands in items:
            args += [doc_id, content_hash, signature, *bands]
        try:
            return [_parse(decision) for decision in self._script(keys=[], args=args)]
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise IndexUnavailable(f"dedupe index unreachable: {exc}") from exc


@dataclass
class _Bucket:
    owners: dict[str, tuple[str, float]] = field(default_factory=dict)  # hash -> (id, at)
    signatures: dict[str, bytes] = field(default_factory=dict)
    bands: dict[str, dict[str, float]] = field(default_factory=dict)  # band -> {id: at}
    decisions: dict[tuple[str, str], Decision] = field(default_factory=dict)


class MemoryIndex:
    """The same index inside one process (embedded mode, tests), bucket for bucket as in
    Redis so that both decide the same. Thread-safe."""

    def __init__(self, *, threshold: float, window_seconds: int, bucket_seconds: int | None = None,
                 clock=time.monotonic) -> None:
        self.threshold = threshold
        self.window = window_seconds
        self.bucket = bucket_seconds or window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, _Bucket] = {}

    def check_and_insert(
        self, doc_id: str, content_hash: str, signature: bytes, bands: list[str]
    ) -> Decision:
        with self._lock:
            return self._check(self.clock(), doc_id, content_hash, signature, bands)

    def check_and_insert_many(self, items: list[Entry]) -> list[Decision]:
        """In order, at one insert time, as RedisIndex.check_and_insert_many."""
        with self._lock:
            now = self.clock()
            return [self._check(now, *item) for item in items]

    def _check(self, now: float, doc_id: str, content_hash: str, signature: bytes,
               bands: list[str]) -> Decision:
        current = math.floor(now / self.bucket)
        oldest = math.floor((now - self.window) / self.bucket)
        for number in [b for b in self._buckets if b < oldest]:
            del self._buckets[number]
        live = [self._buckets[b] for b in range(current, oldest - 1, -1) if b in self._buckets]
        key = (doc_id, content_hash)
        for bucket in live:
            if key in bucket.decisions:
                return bucket.decisions[key]
        owner = next((b.owners[content_hash] for b in live if content_hash in b.owners), None)
        if owner is not None and owner[0] != doc_id and owner[1] >= now - self.window:
            decision: Decision = (owner[0], 1.0)
        else:
            seen: dict[str, bytes] = {}  # candidates in the order the script meets them
            for band in bands:
                members: dict[str, float] = {}
                for bucket in reversed(live):
                    for member, at in bucket.bands.get(band, {}).items():
                        members.pop(member, None)  # its latest entry counts, as in Redis
                        members[member] = at
                for member, at in members.items():
                    if at >= now - self.window and member != doc_id and member not in seen:
                        seen[member] = next((b.signatures[member] for b in live
                                             if member in b.signatures), b"")
            decision = decide(signature, ((m, s) for m, s in seen.items()
                                          if len(s) == len(signature)), self.threshold)
        bucket = self._buckets.setdefault(current, _Bucket())
        if decision[0] is None:
            bucket.owners[content_hash] = (doc_id, now)
            bucket.signatures[doc_id] = signature
            for band in bands:
                entries = bucket.bands.setdefault(band, {})
                entries.pop(doc_id, None)
                entries[doc_id] = now
        bucket.decisions[key] = decision
        return decision


__all__ = ["MemoryIndex", "RedisIndex", "similarity"]
