"""Where the evaluation data is and how to read it (JSON Lines, first N items per file)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shared evaluation data sits beside the repository (never inside it: research-only
# licences); see ../shared/eval/README.md.
DEFAULT_EVAL_DIR = REPO_ROOT.parent / "shared" / "eval"
DEFAULT_DATA = {
    "lang": DEFAULT_EVAL_DIR / "lang" / "lang.jsonl",
    "clean": DEFAULT_EVAL_DIR / "clean",
    "ner": DEFAULT_EVAL_DIR / "ner",
    "dedupe": DEFAULT_EVAL_DIR / "dedupe",
}
_LANG_PREFIX = re.compile(r"^([a-z]{2})_")


class DataError(Exception):
    """The evaluation data is missing or not in the expected shape."""


def default_data(stage: str) -> Path:
    return DEFAULT_DATA[stage]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` objects of a JSON Lines file (all when limit is None)."""
    return list(iter_jsonl(path, limit))


def iter_jsonl(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"no such data file: {path}")
    count = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: a JSON {type(record).__name__}, not an object")
            count += 1
            yield record


def _missing(stage: str, path: Path) -> DataError:
    hint = ""
    if path == default_data(stage):
        hint = (f" (the default; the evaluation data is expected at {DEFAULT_EVAL_DIR},"
                " beside the repository; pass --data PATH)")
    return DataError(f"evaluation data for {stage!r} not found: {path}{hint}")


def _jsonl_files(stage: str, directory: Path, pattern: str = "*.jsonl") -> list[Path]:
    files = sorted(p for p in directory.glob(pattern) if p.is_file())
    if not files:
        raise DataError(f"no {pattern} files for {stage!r} in {directory}")
    return files


def lang_file(path: Path) -> Path:
    """lang.jsonl itself, or a directory holding it."""
    if path.is_dir():
        path = path / "lang.jsonl"
    if not path.is_file():
        raise _missing("lang", path)
    return path


def clean_files(path: Path) -> list[Path]:
    """One set file, or every set (*.jsonl) in a directory."""
    if path.is_dir():
        return _jsonl_files("clean", path)
    if not path.is_file():
        raise _missing("clean", path)
    return [path]


def ner_files(path: Path) -> list[Path]:
    """One set file, or every *.docs.jsonl / *.sentences.jsonl in a directory."""
    if path.is_dir():
        files = sorted(
            p for p in path.glob("*.jsonl")
            if p.name.endswith((".docs.jsonl", ".sentences.jsonl"))
        )
        if not files:
            raise DataError(f"no *.docs.jsonl or *.sentences.jsonl files for 'ner' in {path}")
        return files
    if not path.is_file():
        raise _missing("ner", path)
    return [path]


def dedupe_files(path: Path) -> tuple[Path, Path]:
    """(stream, gold): the dedupe/ folder, or the stream file with gold.jsonl beside it."""
    if path.is_dir():
        stream, gold = path / "stream.jsonl", path / "gold.jsonl"
    else:
        stream, gold = path, path.with_name("gold.jsonl")
    if not stream.is_file():
        raise _missing("dedupe", stream if path.exists() else path)
    if not gold.is_file():
        raise DataError(f"gold clusters not found beside the stream: {gold}")
    return stream, gold


def set_name(path: Path) -> str:
    """File name without .jsonl (en_conll2003_dev.docs, text_wrapped...)."""
    return path.name.removesuffix(".jsonl")


def set_language(path: Path) -> str | None:
    """The language of an NER set, from its name's prefix (``en_conll2003_dev`` -> en)."""
    found = _LANG_PREFIX.match(path.name)
    return found.group(1) if found else None
