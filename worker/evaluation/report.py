"""Rendering of evaluation results: one rich table per stage (ours vs baseline) + notes."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def _delta(ours: Any, base: Any) -> str:
    if isinstance(ours, float) and isinstance(base, (int, float)) and abs(ours) <= 1 >= abs(base):
        diff = ours - base
        colour = "green" if diff > 0.0005 else "red" if diff < -0.0005 else "dim"
        return f"[{colour}]{diff:+.3f}[/{colour}]"
    return ""


def render(result: dict[str, Any], module, console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped: wide enough for the table, not 80 columns
            console = Console(width=max(console.width, 110))
    has_base = any("baseline" in s for s in result["sets"])
    table = Table(title=f"enrich eval {result['stage']}"
                  + (f" (first {result['limit']:,} per file)" if result.get("limit") else ""),
                  show_lines=False)
    table.add_column("set", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("ours", justify="right")
    if has_base:
        table.add_column("baseline", justify="right")
        table.add_column("Δ", justify="right")
    for index, result_set in enumerate(result["sets"]):
        name = result_set["name"]
        if "language" in result_set:
            name = f"{name} [{result_set['language']}]"
        rows = module.rows(result_set)
        for row_index, (metric, ours, base) in enumerate(rows):
            cells = [name if row_index == 0 else "", metric, _cell(ours)]
            if has_base:
                cells += [_cell(base), _delta(ours, base)]
            last = row_index == len(rows) - 1 and index < len(result["sets"]) - 1
            table.add_row(*cells, end_section=last)
    console.print(table)
    if result.get("by_language"):
        summary = Table(title="F1 per language (docs set when there is one)")
        summary.add_column("language")
        summary.add_column("set")
        summary.add_column("ours F1", justify="right")
        if has_base:
            summary.add_column("baseline F1", justify="right")
        for language, entry in result["by_language"].items():
            cells = [language, entry["set"], _cell(entry["ours"]["f1"])]
            if has_base:
                cells.append(_cell((entry.get("baseline") or {}).get("f1")))
            summary.add_row(*cells)
        console.print(summary)
    for result_set in result["sets"]:
        for line in module.notes(result_set):
            console.print(f"{result_set['name']}: {line}", highlight=False, markup=False)
        seconds = result_set.get("seconds") or {}
        if seconds:
            console.print(f"{result_set['name']}: seconds "
                          + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()),
                          highlight=False, markup=False)
    console.print(f"settings: {result.get('settings')}", highlight=False, markup=False)
