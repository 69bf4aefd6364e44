"""The README stays true to the code it documents."""

from __future__ import annotations

from pathlib import Path

from worker.settings import Settings, readme_table_rows

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_settings_table():
    """Each ENRICH_* variable the Settings class reads has a row in the README."""
    missing = [f"ENRICH_{name.upper()}" for name in Settings.model_fields
               if f"| `ENRICH_{name.upper()}` |" not in README]
    assert missing == []


def test_readme_settings_rows_show_the_current_defaults_and_descriptions():
    """Every row is what worker.settings.readme_table_rows() makes from the code (a changed
    default or description means regenerating the table; its docstring says how)."""
    stale = [row for row in readme_table_rows() if row not in README.splitlines()]
    assert stale == []


def test_readme_commands_exist():
    """The two commands the README gives a newcomer are real files / the CI's command."""
    root = Path(__file__).resolve().parent.parent
    assert "./deploy/quickstart.sh" in README and (root / "deploy" / "quickstart.sh").exists()
    assert ".venv/bin/python -m pytest" in README
    assert ".venv/bin/python -m pytest" in (root / ".ci" / "run").read_text()
