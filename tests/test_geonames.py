"""The place gazetteer is built in a child interpreter, so its parsing garbage never stays in
a worker process; when that fails the worker still gets one, and says why."""

from __future__ import annotations

import sys

from structlog.testing import capture_logs

import worker.geonames as geonames
from worker.stages.gazetteer import Gazetteer


def _no_build_here(*_, **__):
    raise AssertionError("the gazetteer was built in the test process, not in the child")


def test_gazetteer_built_in_a_child_equals_one_built_in_process(monkeypatch):
    """The child's gazetteer, unpickled, holds the same places as one built in process."""
    here = geonames.load_gazetteer()
    monkeypatch.setattr(geonames, "load_gazetteer", _no_build_here)
    with capture_logs() as logs:
        there = geonames.load_gazetteer_isolated()
    assert logs == []
    assert len(there) == len(here)
    for name in ("Kramatorsk", "Краматорськ", "Germany", "Deutschland", "Texas"):
        assert there.place(name) is not None, name
        assert there.place(name).geonameid == here.place(name).geonameid


def test_what_the_child_prints_on_stdout_does_not_spoil_the_gazetteer(monkeypatch, tmp_path):
    """A library printing on the child's stdout (here sitecustomize) leaves the pickle intact."""
    (tmp_path / "sitecustomize.py").write_text("print('hello from a chatty library')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(geonames, "load_gazetteer", _no_build_here)
    with capture_logs() as logs:
        gazetteer = geonames.load_gazetteer_isolated()
    assert logs == []
    assert isinstance(gazetteer, Gazetteer)
    assert gazetteer.place("Kramatorsk") is not None


def test_a_failing_child_falls_back_to_building_here_with_a_warning_naming_why(
        monkeypatch, tmp_path):
    """When the child fails, the gazetteer is built in process and a warning gives its error."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'MemoryError: the child ran out' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    built_here = Gazetteer()
    monkeypatch.setattr(geonames, "load_gazetteer", lambda: built_here)
    with capture_logs() as logs:
        gazetteer = geonames.load_gazetteer_isolated()
    assert gazetteer is built_here
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert "built in this process" in warning["event"]
    assert "exited with 3" in warning["reason"]
    assert "the child ran out" in warning["reason"]


def test_a_child_that_takes_too_long_falls_back_with_a_warning(monkeypatch):
    """A child over its time limit is abandoned: built here, and the warning says it timed out."""
    built_here = Gazetteer()
    monkeypatch.setattr(geonames, "load_gazetteer", lambda: built_here)
    with capture_logs() as logs:
        gazetteer = geonames.load_gazetteer_isolated(timeout=0.001)
    assert gazetteer is built_here
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert "TimeoutExpired" in warning["reason"]
