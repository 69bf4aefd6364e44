"""Pages of lingua's library out of the worker's RSS, and glibc's malloc thresholds fixed in
the worker (worker/memory.py), on the real library, the real allocator and the real /proc."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import textwrap
import time

import pytest

from pydantic import ValidationError

from worker.memory import LibraryPages, _read_only_ranges, at_most_every, tune_malloc
from worker.resources import Resources
from worker.settings import Settings
from worker.stages.language import LanguageDetector, lingua_library

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

TEXTS = {
    "de": "Die Stadtverwaltung hat am Montag angekündigt, dass die alte Brücke über den Fluss "
          "im nächsten Frühjahr vollständig erneuert werden soll.",
    "ru": "Городской совет в понедельник объявил, что старый мост через реку будет полностью "
          "отремонтирован следующей весной.",
    "en": "The city council announced on Monday that the old bridge over the river will be "
          "completely rebuilt next spring.",
}

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fd:01 42 /lib/x.so
Rss:                 400 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r-xp 00100000 fd:01 42 /lib/x.so
Rss:                 300 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00200000 fd:01 42 /lib/x.so
Rss:                  64 kB
Anonymous:            64 kB
7f0000300000-7f0000400000 r--p 00000000 fd:01 43 /lib/y.so
Rss:                 100 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r--p 00300000 fd:01 42 /lib/x.so
Rss:                  12 kB
Anonymous:             0 kB
"""


def test_only_never_written_read_only_mappings_of_the_file_are_chosen():
    """Code, another file, and a read-only mapping holding written pages (relocations) are
    left alone: dropping those would lose what was written."""
    assert _read_only_ranges("/lib/x.so", SMAPS) == [
        (0x7F0000000000, 0x7F0000100000, 400), (0x7F0000400000, 0x7F0000500000, 12)]


def test_release_drops_the_library_pages_and_detection_answers_the_same():
    """With all of lingua's read-only data resident, releasing leaves (almost) none of it,
    and every answer after it is the one before."""
    detector = LanguageDetector(preload=True)
    before = {code: detector.detect(text) for code, text in TEXTS.items()}
    pages = LibraryPages(lingua_library())
    for start, length in pages._ranges:  # read it all, whatever this process did before
        ctypes.string_at(start, length)
    resident = pages.resident_kb()
    assert resident > 20 * 1024, "lingua's models are not in its library's read-only data?"
    pages.release()
    assert pages.resident_kb() < 1024
    after = {code: detector.detect(text) for code, text in TEXTS.items()}
    assert after == before
    assert {code: found["code"] for code, found in after.items()} == {
        "de": "de", "ru": "ru", "en": "en"}


def test_a_file_that_is_not_mapped_releases_nothing():
    """A path this process has not loaded: nothing to release, and no error."""
    pages = LibraryPages("/nonexistent/library.so")
    pages.release()
    assert pages.resident_kb() == 0


def test_at_most_every_skips_calls_within_the_interval():
    """The first call runs; calls within the interval do not; with no interval each does."""
    calls = []
    throttled = at_most_every(3600, lambda: calls.append(1))
    for _ in range(5):
        throttled()
    assert calls == [1]
    every = at_most_every(0, lambda: calls.append(2))
    every()
    every()
    assert calls == [1, 2, 2]


def test_the_workers_language_stage_releases_lingua_pages_after_building_detectors():
    """The pipeline a worker builds releases lingua's pages once the models are loaded, and
    hands the language stage a release to run after it builds a narrower detector (at most
    once a second)."""
    stage = Resources(Settings(language_preload=True), embedded=True).pipeline.stages["language"]
    pages = LibraryPages(lingua_library())
    assert pages.resident_kb() < 1024, "not released after the models were loaded"
    for code, text in TEXTS.items():  # long texts: narrower detectors are built
        assert stage.detect(" ".join([text] * 20))["code"] == code
    for start, length in pages._ranges:  # all of it resident, so the release must show
        ctypes.string_at(start, length)
    assert pages.resident_kb() > 20 * 1024
    time.sleep(1.05)
    stage.after_build()
    assert pages.resident_kb() < 1024


def test_with_release_pages_off_the_language_stage_gets_no_release():
    """ENRICH_LANGUAGE_RELEASE_PAGES=false: lingua's pages are left as the kernel maps them."""
    stage = Resources(Settings(language_release_pages=False),
                      embedded=True).pipeline.stages["language"]
    assert stage.after_build is None


# --- malloc thresholds ---------------------------------------------------------------------
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc's mallopt")

# A batch as the worker handles one: many mid-sized blocks and a large one, all freed at the
# end. The faults of 20 such batches after a first are printed (by a forked child with
# "fork": it inherits the process's thresholds, as a pool child does from the worker).
BATCHES = textwrap.dedent("""
    import os, resource, sys

    def batches():
        def batch():
            blocks = [b"x" * 100_000 for _ in range(200)]
            large = b"y" * 800_000
            del blocks, large
        batch()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            batch()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
""")


def _faults(setup: str, env: dict[str, str] | None = None, fork: bool = False) -> int:
    child = ("read, write = os.pipe()\n"
             "if os.fork() == 0:\n"
             "    os.write(write, str(batches()).encode()); os._exit(0)\n"
             "os.wait(); print(os.read(read, 64).decode())\n") if fork else "print(batches())\n"
    out = subprocess.run([sys.executable, "-c", BATCHES + setup + "\n" + child],
                         env={**os.environ, **(env or {})}, capture_output=True, text=True,
                         check=True, timeout=120)
    return int(out.stdout.split()[-1])


@glibc
def test_fixed_thresholds_keep_a_batchs_memory_for_the_next_batch():
    """With glibc's moving thresholds every batch gives its heap back and faults it in again
    (thousands of faults a batch); with the worker's default thresholds fixed the next
    batches take almost none."""
    moving = _faults("")
    fixed = _faults("from worker.memory import tune_malloc\n"
                    "from worker.settings import Settings\n"
                    "s = Settings()\n"
                    "assert tune_malloc(s.malloc_mmap_threshold, s.malloc_trim_threshold) == "
                    "{'mmap_threshold': True, 'trim_threshold': True}")
    assert moving > 20 * 1000, moving
    assert fixed < moving / 100, (fixed, moving)


@glibc
def test_the_worker_fixes_the_thresholds_at_start_and_its_forked_children_inherit_them():
    """The worker_init handler (run in the worker's main process before the pool forks)
    applies ENRICH_MALLOC_*; a child forked after it keeps its batches' memory, and with both
    set to 0 glibc's own thresholds are left."""
    start = "import worker.tasks\nfrom celery import signals\nsignals.worker_init.send(sender=None)"
    on = _faults(start, fork=True)
    off = _faults(start, {"ENRICH_MALLOC_MMAP_THRESHOLD": "0",
                          "ENRICH_MALLOC_TRIM_THRESHOLD": "0"}, fork=True)
    assert off > 20 * 1000, off
    assert on < off / 100, (on, off)


def test_thresholds_outside_what_glibc_takes_are_refused_when_settings_load():
    """A threshold mallopt cannot take (an int) stops the worker at start with a clear error,
    not a silent glibc default later."""
    with pytest.raises(ValidationError, match="malloc_mmap_threshold"):
        Settings(malloc_mmap_threshold=2**31)
    with pytest.raises(ValidationError, match="malloc_trim_threshold"):
        Settings(malloc_trim_threshold=-1)
