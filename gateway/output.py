"""How the CLI shows results: a readable table by default, JSON or CSV for scripts."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

FORMATS = ("table", "json", "csv")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def emit(
    rows: Sequence[Mapping[str, Any]],
    *,
    fmt: str,
    title: str = "",
    columns: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
) -> None:
    """Print ``rows`` as a table, a JSON document (``{"rows": [...], **extra}``) or CSV."""
    stream = out or sys.stdout
    cols = list(columns or (list(rows[0]) if rows else []))
    if fmt == "json":
        doc: dict[str, Any] = {"rows": [dict(r) for r in rows]}
        if extra:
            doc.update(extra)
        stream.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row))
        return
    table = Table(title=title or None, title_justify="left")
    if len(rows) == 1 and len(cols) > 4:  # one record reads better as "field  value" lines
        table.add_column("field")
        table.add_column("value")
        for col in cols:
            table.add_row(col, _cell(rows[0].get(col)))
        cols = []
        rows = []
    for col in cols:
        sample = next((r.get(col) for r in rows if r.get(col) is not None), None)
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in cols))
    console = Console(file=stream, width=max(140, Console().width))
    console.print(table)
    if extra:
        for key, value in extra.items():
            console.print(f"{key}: {_cell(value)}")


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A progress bar on stderr (so JSON on stdout stays clean); silent when disabled."""
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
    with progress:
        yield progress
