"""Reading inputs for `enrich publish`: files, directories and stdin, every record accounted for."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest

from worker.producer import RecordError, bounded_lines, decode, read_inputs, read_jsonl, read_stdin
from worker.settings import Settings

TEXT = "The harbour council voted on Tuesday to keep the last ferry running."
HTML = "<html><body><p>Ferry stays.</p></body></html>"


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, max_text_bytes=10_000, max_html_bytes=20_000)


def records(items):
    """Split read_inputs output into (where, record) and (where, RecordError) lists."""
    good, bad = [], []
    for where, item in items:
        (bad if isinstance(item, RecordError) else good).append((where, item))
    return good, bad


# --- files -----------------------------------------------------------------------------------
def test_jsonl_malformed_line_rejected_with_file_and_line(tmp_path, settings):
    """A bad JSONL line is reported as bad_json at file:line; the other lines are read."""
    path = tmp_path / "batch.jsonl"
    path.write_text(
        json.dumps({"id": "a", "text": TEXT}) + "\n"
        + '{"id": "b", "text": \n'
        + "\n"
        + json.dumps({"id": "c", "text": TEXT}) + "\n",
        encoding="utf-8",
    )
    good, bad = records(read_inputs([str(path)], settings))
    assert [(w, r["id"]) for w, r in good] == [(f"{path}:1", "a"), (f"{path}:4", "c")]
    assert len(bad) == 1
    where, error = bad[0]
    assert where == f"{path}:2"
    assert error.reason == "bad_json"


def test_jsonl_line_that_is_not_an_object_is_passed_on(tmp_path, settings):
    """A JSONL line holding valid JSON that is not an object is read; validation judges it later."""
    path = tmp_path / "odd.ndjson"
    path.write_text('[1, 2]\n"text"\n', encoding="utf-8")
    good, bad = records(read_inputs([str(path)], settings))
    assert [r for _, r in good] == [[1, 2], "text"]
    assert bad == []


def test_json_array_gives_one_record_per_item(tmp_path, settings):
    """A .json file holding an array yields each item with its index."""
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([{"id": "a", "text": TEXT}, {"id": "b", "html": HTML}]),
                    encoding="utf-8")
    good, bad = records(read_inputs([str(path)], settings))
    assert [(w, r["id"]) for w, r in good] == [(f"{path}[0]", "a"), (f"{path}[1]", "b")]
    assert bad == []


def test_json_object_file_is_one_record(tmp_path, settings):
    """A .json file holding one object is one record."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"id": "solo", "text": TEXT}), encoding="utf-8")
    good, _ = records(read_inputs([str(path)], settings))
    assert good == [(str(path), {"id": "solo", "text": TEXT})]


def test_text_file_is_one_text_record(tmp_path, settings):
    """A .txt file becomes one record with its text and the file name in metadata."""
    path = tmp_path / "story.txt"
    path.write_text(TEXT + "\nSecond line.\n", encoding="utf-8")
    good, bad = records(read_inputs([str(path)], settings))
    assert good == [(str(path), {"text": TEXT + "\nSecond line.\n",
                                 "metadata": {"file": "story.txt"}})]
    assert bad == []


def test_html_file_is_one_html_record(tmp_path, settings):
    """A .html file becomes one record with its html."""
    path = tmp_path / "page.HTML"
    path.write_text(HTML, encoding="utf-8")
    good, _ = records(read_inputs([str(path)], settings))
    assert good == [(str(path), {"html": HTML, "metadata": {"file": "page.HTML"}})]


def test_text_file_over_limit_is_too_large(tmp_path, settings):
    """A .txt file larger than max_text_bytes is rejected as too_large, not read."""
    path = tmp_path / "huge.txt"
    path.write_bytes(b"a" * (settings.max_text_bytes + 1))
    _, bad = records(read_inputs([str(path)], settings))
    assert [(w, e.reason) for w, e in bad] == [(str(path), "too_large")]


def test_missing_path_is_reported(tmp_path, settings):
    """A path that does not exist is reported as not_found."""
    missing = tmp_path / "nope.jsonl"
    _, bad = records(read_inputs([str(missing)], settings))
    assert [(w, e.reason) for w, e in bad] == [(str(missing), "not_found")]


def test_unsupported_file_named_explicitly_is_reported(tmp_path, settings):
    """A file with an unsupported extension is reported as unsupported_file."""
    path = tmp_path / "data.csv"
    path.write_text("a,b\n", encoding="utf-8")
    _, bad = records(read_inputs([str(path)], settings))
    assert [(w, e.reason) for w, e in bad] == [(str(path), "unsupported_file")]


def test_directory_read_recursively_in_sorted_order(tmp_path, settings):
    """A directory is walked recursively: each directory's files by name, then its subdirectories by name."""
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "z").mkdir(parents=True)
    (tmp_path / "c.txt").write_text("C text", encoding="utf-8")
    (tmp_path / "b" / "2.txt").write_text("B2 text", encoding="utf-8")
    (tmp_path / "b" / "1.html").write_text(HTML, encoding="utf-8")
    (tmp_path / "a" / "z" / "deep.jsonl").write_text(json.dumps({"id": "deep", "text": TEXT}) + "\n",
                                                    encoding="utf-8")
    (tmp_path / "a" / "first.json").write_text(json.dumps([{"id": "j0", "text": TEXT}]),
                                              encoding="utf-8")
    good, bad = records(read_inputs([str(tmp_path)], settings))
    assert bad == []
    assert [w for w, _ in good] == [
        str(tmp_path / "c.txt"),
        str(tmp_path / "a" / "first.json") + "[0]",
        str(tmp_path / "a" / "z" / "deep.jsonl") + ":1",
        str(tmp_path / "b" / "1.html"),
        str(tmp_path / "b" / "2.txt"),
    ]


def test_directory_unsupported_extension_reported(tmp_path, settings):
    """A file of an unsupported kind inside a directory is reported, not silently skipped."""
    (tmp_path / "keep.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "notes.csv").write_text("a,b\n", encoding="utf-8")
    good, bad = records(read_inputs([str(tmp_path)], settings))
    assert [w for w, _ in good] == [str(tmp_path / "keep.txt")]
    assert [(w, e.reason) for w, e in bad] == [(str(tmp_path / "notes.csv"), "unsupported_file")]


# --- stdin -----------------------------------------------------------------------------------
def stdin(data: bytes, settings: Settings):
    return list(read_inputs(["-"], settings, stdin=io.BytesIO(data)))


def test_stdin_starting_with_brace_is_jsonl(settings):
    """stdin starting with '{' (after whitespace) is read as JSON Lines."""
    data = b"\n  " + json.dumps({"id": "a", "text": TEXT}).encode() + b"\n" \
        + json.dumps({"id": "b", "text": TEXT}).encode() + b"\n"
    good, bad = records(stdin(data, settings))
    assert [r["id"] for _, r in good] == ["a", "b"]
    assert [w for w, _ in good] == ["<stdin>:2", "<stdin>:3"]
    assert bad == []


def test_stdin_starting_with_bracket_is_json_array(settings):
    """stdin starting with '[' is one JSON array of records."""
    data = json.dumps([{"id": "a", "text": TEXT}, {"id": "b", "text": TEXT}]).encode()
    good, _ = records(stdin(data, settings))
    assert [(w, r["id"]) for w, r in good] == [("<stdin>[0]", "a"), ("<stdin>[1]", "b")]


def test_stdin_starting_with_angle_bracket_is_html(settings):
    """stdin starting with '<' is one HTML record."""
    assert stdin(HTML.encode(), settings) == [("<stdin>", {"html": HTML})]


def test_stdin_other_content_is_text(settings):
    """Anything else on stdin is one text record."""
    assert stdin(TEXT.encode(), settings) == [("<stdin>", {"text": TEXT})]


def test_stdin_non_utf8_is_bad_encoding(settings):
    """Bytes that are not UTF-8 on stdin are reported as bad_encoding."""
    _, bad = records(stdin("Café crème".encode("latin-1"), settings))
    assert [(w, e.reason) for w, e in bad] == [("<stdin>", "bad_encoding")]


def test_read_stdin_accepts_a_buffered_reader(settings):
    """read_stdin works on an already-buffered stream too."""
    stream = io.BufferedReader(io.BytesIO(b'{"text": "x"}\n'))
    assert list(read_stdin(stream, settings)) == [("<stdin>:1", {"text": "x"})]


# --- encodings -------------------------------------------------------------------------------
def test_non_utf8_file_is_bad_encoding(tmp_path, settings):
    """A .txt file in Latin-1 is rejected as bad_encoding, naming the byte."""
    path = tmp_path / "latin.txt"
    path.write_bytes("Grüße aus Köln".encode("latin-1"))
    _, bad = records(read_inputs([str(path)], settings))
    assert [(w, e.reason) for w, e in bad] == [(str(path), "bad_encoding")]
    assert "byte" in bad[0][1].message


def test_non_utf8_jsonl_line_is_bad_encoding(tmp_path, settings):
    """One Latin-1 line in a JSONL file is bad_encoding at its line; the rest are read."""
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "ok"}\n' + '{"text": "Köln"}\n'.encode("latin-1")
                     + b'{"text": "fine"}\n')
    good, bad = records(read_inputs([str(path)], settings))
    assert [r["text"] for _, r in good] == ["ok", "fine"]
    assert [(w, e.reason) for w, e in bad] == [(f"{path}:2", "bad_encoding")]


def test_utf16_with_bom_is_decoded(tmp_path, settings):
    """A UTF-16 file with a byte order mark is decoded (both byte orders)."""
    for name, encoding in (("le.txt", "utf-16-le"), ("be.txt", "utf-16-be")):
        path = tmp_path / name
        path.write_bytes("\ufeffGrüße, 北京".encode(encoding))
        good, bad = records(read_inputs([str(path)], settings))
        assert bad == []
        assert good[0][1]["text"] == "Grüße, 北京"


def test_utf8_bom_is_stripped():
    """A UTF-8 byte order mark does not end up in the text."""
    assert decode(b"\xef\xbb\xbfhello", "x") == "hello"


def test_decode_rejects_invalid_utf8_with_reason():
    """decode raises RecordError(bad_encoding) on invalid UTF-8."""
    with pytest.raises(RecordError) as info:
        decode(b"ok \xff\xfe? no, just \xc3", "x")
    assert info.value.reason == "bad_encoding"


# --- limits and hostile input ----------------------------------------------------------------
class CountingStream(io.BytesIO):
    """Records how many bytes each readline call returned."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def readline(self, size=-1):
        line = super().readline(size)
        self.reads.append(len(line))
        return line


def test_oversized_line_skipped_without_reading_it_whole():
    """A line over the limit is reported too_large and skipped in bounded reads; the next line survives."""
    big = b"x" * (5 * (1 << 20)) + b"\n"  # 5 MiB line
    stream = CountingStream(b"short\n" + big + b"after\n")
    out = list(bounded_lines(stream, limit=100))
    assert out[0] == b"short\n"
    assert isinstance(out[1], RecordError) and out[1].reason == "too_large"
    assert out[2] == b"after\n"
    assert len(out) == 3
    assert max(stream.reads) <= 1 << 20  # never the whole 5 MiB line at once


def test_line_exactly_at_limit_is_kept():
    """A line of exactly `limit` bytes (plus its newline) is not oversized."""
    out = list(bounded_lines(io.BytesIO(b"a" * 10 + b"\nb\n"), limit=10))
    assert out == [b"a" * 10 + b"\n", b"b\n"]


def test_oversized_last_line_without_newline():
    """An oversized final line with no newline is reported and ends the stream cleanly."""
    out = list(bounded_lines(io.BytesIO(b"ok\n" + b"y" * 50), limit=10))
    assert out[0] == b"ok\n"
    assert isinstance(out[1], RecordError)
    assert len(out) == 2


def test_jsonl_oversized_line_reported_at_its_line():
    """read_jsonl reports an oversized line at name:line and goes on."""
    data = b'{"text": "a"}\n' + b'{"text": "' + b"z" * 500 + b'"}\n' + b'{"text": "b"}\n'
    out = list(read_jsonl(io.BytesIO(data), "in.jsonl", limit=100))
    assert [w for w, _ in out] == ["in.jsonl:1", "in.jsonl:2", "in.jsonl:3"]
    assert out[1][1].reason == "too_large"
    assert out[2][1] == {"text": "b"}


def test_deeply_nested_json_is_bad_json_not_a_crash(tmp_path, settings):
    """10,000 nested '[' give bad_json in a .json file, a JSONL line and on stdin."""
    nested = b"[" * 10_000 + b"]" * 10_000
    (tmp_path / "deep.json").write_bytes(nested)
    (tmp_path / "deep.jsonl").write_bytes(b'{"a": ' + nested + b"}\n")
    _, bad = records(read_inputs([str(tmp_path / "deep.json"), str(tmp_path / "deep.jsonl")],
                                 settings))
    assert [e.reason for _, e in bad] == ["bad_json", "bad_json"]
    _, bad_stdin = records(stdin(b"[" * 10_000, settings))
    assert [e.reason for _, e in bad_stdin] == ["bad_json"]


def test_invalid_json_array_file_is_bad_json(tmp_path, settings):
    """A truncated JSON array file is reported once as bad_json."""
    path = tmp_path / "cut.json"
    path.write_text('[{"text": "a"}, {"text": ', encoding="utf-8")
    good, bad = records(read_inputs([str(path)], settings))
    assert good == []
    assert [(w, e.reason) for w, e in bad] == [(str(path), "bad_json")]


# --- cheap to import -------------------------------------------------------------------------
def test_producer_import_does_not_load_heavy_libraries():
    """`import worker.producer` in a fresh interpreter loads no spaCy, trafilatura, langdetect, datasketch or numpy."""
    code = textwrap.dedent("""
        import sys
        import worker.producer
        heavy = ("spacy", "trafilatura", "langdetect", "datasketch", "numpy")
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b""])
def test_stdin_jsonl_with_or_without_utf8_bom_is_read_as_records(settings, bom):
    """A UTF-8 byte-order mark in front of JSON Lines on stdin does not turn it into text."""
    data = bom + b'{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n'
    records = [r for _, r in read_stdin(io.BytesIO(data), settings)]
    assert [r["id"] for r in records] == ["a", "b"]


def test_stdin_utf16_json_array_is_decoded_and_sniffed(settings):
    """UTF-16 (with BOM) on stdin is decoded before it is told apart."""
    data = '[{"id": "u", "text": "Grüße aus Köln"}]'.encode("utf-16")
    ((_, record),) = list(read_stdin(io.BytesIO(data), settings))
    assert record == {"id": "u", "text": "Grüße aus Köln"}


def test_hidden_files_in_a_directory_are_not_input(tmp_path, settings):
    """.DS_Store and dot-directories are passed over; real files are read."""
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("not an article")
    (tmp_path / "story.txt").write_text("A real story about the harbour.")
    found = list(read_inputs([str(tmp_path)], settings))
    assert [where for where, _ in found] == [str(tmp_path / "story.txt")]
