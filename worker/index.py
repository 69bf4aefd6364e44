"""Dedupe index adapters: the shared Redis index and the in-process one.

Both keep the same rule as ``worker.stages.dedupe.decide``: an exact content-hash owner
wins (similarity 1.0); otherwise the earliest-indexed candidate with the highest estimated
Jaccard at or above the threshold; a document with no match becomes canonical and is
indexed. A decision is remembered per (id, content hash), so a redelivered article gets
the same answer instead of finding itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import redis

from worker.errors import IndexUnavailable
from worker.stages.dedupe import decide, similarity

# One round trip, atomic: two near-duplicates reaching two workers at the same instant are
# decided one after the other by Redis, so exactly one of them becomes canonical.
_CHECK_AND_INSERT = """
local prefix, id, chash, sig = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local threshold, window, nbands = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local dkey = prefix .. 'dd:d:' .. id .. ':' .. chash
local prior = redis.call('GET', dkey)
if prior then return prior end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local hkey = prefix .. 'dd:h:' .. chash
local owner = redis.call('GET', hkey)
local decision
if owner and owner ~= id then
  decision = owner .. '|1'
else
  local best, bestsim, seen, n = nil, 0, {}, #sig / 4
  for i = 1, nbands do
    local bkey = prefix .. 'dd:b:' .. ARGV[7 + i]
    redis.call('ZREMRANGEBYSCORE', bkey, '-inf', now - window)
    for _, m in ipairs(redis.call('ZRANGE', bkey, 0, -1)) do
      if m ~= id and not seen[m] then
        seen[m] = true
        local other = redis.call('GET', prefix .. 'dd:s:' .. m)
        if other and #other == #sig then
          local same = 0
          for k = 1, #sig, 4 do
            if string.sub(sig, k, k + 3) == string.sub(other, k, k + 3) then same = same + 1 end
          end
          local sim = same / n
          if sim > bestsim then best, bestsim = m, sim end
        end
      end
    end
  end
  if best and bestsim >= threshold then
    decision = best .. '|' .. string.format('%.4f', bestsim)
  else
    decision = '|'
    redis.call('SET', hkey, id, 'EX', window)
    redis.call('SET', prefix .. 'dd:s:' .. id, sig, 'EX', window)
    for i = 1, nbands do
      local bkey = prefix .. 'dd:b:' .. ARGV[7 + i]
      redis.call('ZADD', bkey, now, id)
      redis.call('EXPIRE', bkey, window)
    end
  end
end
redis.call('SET', dkey, decision, 'EX', window)
return decision
"""


def _parse(decision: bytes | str) -> tuple[str | None, float | None]:
    text = decision.decode() if isinstance(decision, bytes) else decision
    dup, _, sim = text.partition("|")
    return (dup, round(float(sim), 4)) if dup else (None, None)


class RedisIndex:
    """The LSH index in Redis that every worker shares; one EVALSHA per article."""

    def __init__(
        self, client: redis.Redis, *, prefix: str, threshold: float, window_seconds: int
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.threshold = threshold
        self.window = window_seconds
        self._script = client.register_script(_CHECK_AND_INSERT)

    def check_and_insert(
        self, doc_id: str, content_hash: str, signature: bytes, bands: list[str]
    ) -> tuple[str | None, float | None]:
        args = [self.prefix, doc_id, content_hash, signature, self.threshold, self.window,
                len(bands), *bands]
        try:
            return _parse(self._script(keys=[], args=args))
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise IndexUnavailable(f"dedupe index unreachable: {exc}") from exc


class MemoryIndex:
    """The same index inside one process (embedded mode, tests). Thread-safe."""

    def __init__(self, *, threshold: float, window_seconds: int, clock=time.monotonic) -> None:
        self.threshold = threshold
        self.window = window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[str, float]] = {}  # content hash -> (id, indexed at)
        self._signatures: dict[str, bytes] = {}
        self._bands: dict[str, OrderedDict[str, float]] = {}
        self._decisions: dict[tuple[str, str], tuple[str | None, float | None]] = {}

    def check_and_insert(
        self, doc_id: str, content_hash: str, signature: bytes, bands: list[str]
    ) -> tuple[str | None, float | None]:
        with self._lock:
            key = (doc_id, content_hash)
            if key in self._decisions:
                return self._decisions[key]
            now = self.clock()
            owner = self._owners.get(content_hash)
            if owner is not None and owner[0] != doc_id and owner[1] >= now - self.window:
                decision: tuple[str | None, float | None] = (owner[0], 1.0)
            else:
                seen: dict[str, None] = {}  # candidates in the order the script meets them
                for band in bands:
                    members = self._bands.get(band, OrderedDict())
                    for member, at in list(members.items()):
                        if at < now - self.window:
                            del members[member]
                        elif member != doc_id and member in self._signatures:
                            seen.setdefault(member)
                decision = decide(signature, ((m, self._signatures[m]) for m in seen),
                                  self.threshold)
                if decision[0] is None:
                    self._owners[content_hash] = (doc_id, now)
                    self._signatures[doc_id] = signature
                    for band in bands:
                        self._bands.setdefault(band, OrderedDict())[doc_id] = now
            self._decisions[key] = decision
            return decision


__all__ = ["MemoryIndex", "RedisIndex", "similarity"]
