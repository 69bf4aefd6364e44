"""Give back the pages a loaded library's read-only data no longer needs to hold in RSS.

lingua keeps its language models compressed inside its shared library (a 100 MB file). They
are read from it when loaded (all at once with ENRICH_LANGUAGE_PRELOAD) and decompressed onto
the heap, and each narrower detector the language stage builds reads from it again. The
pages read stay mapped in the process, and how many depends on the kernel's page cache, not
on us. Measured here (kernel 6.18, ext4): after preloading every model, 24 MB of the library
mapped when the file had just been written by pip (cached in large folios, mapped a folio at
a time), 9.7 MB once the same file had been dropped from the cache and read back; after 16
articles, 69 MB. Those pages are clean file cache, shared, and droppable by the kernel at any
time, but they count in every process's RSS, which operators and memory limits watch: the
bench's worker read 371-392 MB on a fresh install where earlier runs read 300-315 MB.

``LibraryPages(path).release()`` drops this process's mapping of such pages (madvise
MADV_DONTNEED on the file's read-only private mappings that hold no written page). That is
safe by definition for those mappings: a later read faults the same bytes back in from the
file. Mappings that were ever written (relocations, .data) are left alone. Linux only; a
no-op elsewhere or when anything about it fails.

``tune_malloc`` (below) fixes glibc's malloc thresholds so that a worker does not give its
heap back and fault it in again on every batch.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from worker import logs

log = logs.get_logger(__name__)

_MADV_DONTNEED = 4
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+ *(.*)$")


def _read_only_ranges(path: str, smaps: str) -> list[tuple[int, int, int]]:
    """(start, end, rss_kb) of ``path``'s mappings in ``smaps`` that are read-only, private
    and hold no anonymous (written) page."""
    ranges: list[tuple[int, int, int]] = []
    current: list | None = None  # [start, end, rss_kb, anonymous_kb]
    for line in smaps.splitlines():
        header = _HEADER.match(line)
        if header:
            if current is not None and current[3] == 0:
                ranges.append((current[0], current[1], current[2]))
            start, end, perms, name = header.groups()
            current = ([int(start, 16), int(end, 16), 0, 0]
                       if name == path and perms == "r--p" else None)
        elif current is not None:
            if line.startswith("Rss:"):
                current[2] = int(line.split()[1])
            elif line.startswith("Anonymous:"):
                current[3] = int(line.split()[1])
    if current is not None and current[3] == 0:
        ranges.append((current[0], current[1], current[2]))
    return ranges


class LibraryPages:
    """The read-only data of one loaded library, found once; ``release()`` drops this
    process's resident pages of it (one madvise per mapping, no /proc read): cheap enough to
    call while the process works. ``path`` must already be loaded."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.realpath(path)
        self._ranges: list[tuple[int, int]] = []
        self._madvise = None
        try:
            found = _read_only_ranges(self.path, Path("/proc/self/smaps").read_text())
            if found:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                self._madvise = libc.madvise
                self._ranges = [(start, end - start) for start, end, _ in found]
        except (OSError, AttributeError, ValueError) as exc:
            log.debug("library pages not found", path=self.path, error=str(exc))

    def resident_kb(self) -> int:
        """What of it is resident in this process now (reads /proc: for tests and probes)."""
        try:
            smaps = Path("/proc/self/smaps").read_text()
        except OSError:
            return 0
        return sum(rss for _, _, rss in _read_only_ranges(self.path, smaps))

    def release(self) -> None:
        for start, length in self._ranges:
            self._madvise(start, length, _MADV_DONTNEED)


def at_most_every(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """``action``, skipped when it last ran less than ``seconds`` ago."""
    last = -float("inf")

    def maybe() -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds:
            last = now
            action()

    return maybe


# --- glibc malloc thresholds ---------------------------------------------------------------
# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int, trim_threshold: int) -> dict[str, bool]:
    """Fix glibc's two malloc thresholds for this process and the children it forks.

    By default glibc moves both with what the process frees: a freed block served by mmap
    raises the mmap threshold to its size, and the top of the heap is given back to the OS
    once more than the trim threshold (twice that) is free there. A pool child that parses a
    16-article message, builds its documents and frees them all then gives pages back and
    faults them in anew on every message, at 2.6-3.2 us a fault on these VMs. Fixed
    thresholds keep blocks under ``mmap_threshold`` on the heap and up to ``trim_threshold``
    of free heap top resident for the next message. Measured over the corpus (pool children,
    minor faults per article, RSS): glibc's own 52, 291-307 MB; 1 MiB / 32 MiB 17-28,
    297-307 MB; 4 / 64 MiB 7-13, 315-343 MB; 16 / 256 MiB 0.1, 369-371 MB. 0 leaves that
    threshold to glibc, but glibc stops moving both once either is set: with only one set,
    the other stays at its fixed default (128 KiB). Returns which were set; anything but glibc (or a value it refuses:
    older releases capped the mmap threshold at 32 MiB on 64-bit) leaves them as they were.
    """
    applied = {"mmap_threshold": False, "trim_threshold": False}
    wanted = [(name, param, value) for name, param, value in (
        ("mmap_threshold", _M_MMAP_THRESHOLD, mmap_threshold),
        ("trim_threshold", _M_TRIM_THRESHOLD, trim_threshold)) if value > 0]
    if not wanted:
        return applied
    try:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
    except (OSError, AttributeError) as exc:
        log.debug("mallopt not available", error=str(exc))
        return applied
    for name, param, value in wanted:
        applied[name] = value <= 2**31 - 1 and mallopt(param, value) == 1
        if not applied[name]:
            log.warning("malloc threshold refused, glibc's own kept", threshold=name,
                        value=value)
    return applied
