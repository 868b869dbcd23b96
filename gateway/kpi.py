"""``fieldstream kpi``: the KPI tables, as the projection stage keeps them.

Reads the projection store (``DATA_DIR/projections.sqlite3``, or the ``--db`` PostgreSQL
database), never the log's records: the numbers are those ``fieldstream process`` last
committed. It says how many records the projection has not read yet, and ``--publish``
sends the selected days' KPI snapshots to fs.kpi for downstream analytics.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.cli import CliError, _common
from gateway.output import FORMATS, emit, progress_bar
from projections import HEADLINE, METRIC_BY_NAME, METRICS
from projections.fold import TOPICS
from streams.bootstrap import open_log
from streams.config import Config
from streams.projection_stage import publish_day
from streams.projection_store import STORE_FILE, ProjectionStore, open_projection_store

BY_CHOICES = ("all", "technician", "team", "region", "job-type")


def open_store(config: Config) -> ProjectionStore:
    """The projection store the configuration names; refuses to create an empty one."""
    if not config.db and not (config.data_dir / STORE_FILE).exists():
        raise CliError(
            f"no projections in {config.data_dir}: run `fieldstream process --data-dir "
            f"{config.data_dir} --until-idle` first"
        )
    return open_projection_store(config.data_dir, config.db)


async def projection_lag(config: Config, store: ProjectionStore) -> int:
    """Records on the projection's inputs that it has not read yet."""
    log = await open_log(config, create_topics=False)
    try:
        existing = await log.topics()
        offsets = store.offsets()
        behind = 0
        for topic in TOPICS:
            if topic not in existing:
                continue
            for p, end in (await log.end_offsets(topic)).items():
                behind += max(0, end - offsets.get((topic, p), 0))
        return behind
    finally:
        await log.close()


def select_days(store: ProjectionStore, day: str | None) -> list[str]:
    days = store.days()
    if not days:
        raise CliError("the projection holds no KPI yet (nothing projected)")
    if day is None:
        return days[-1:]
    if day == "all":
        return days
    if day not in days:
        raise CliError(f"no KPIs for {day}; days held: {', '.join(days)}")
    return [day]


def select_metrics(text: str | None, fmt: str) -> list[str]:
    if text is None:
        return list(HEADLINE) if fmt == "table" else [m.name for m in METRICS]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRIC_BY_NAME]
    if unknown:
        raise CliError(
            f"unknown metric {', '.join(unknown)}; choose from {', '.join(METRIC_BY_NAME)}"
        )
    return names


def kpi_table(
    store: ProjectionStore, days: Sequence[str], dimension: str
) -> dict[tuple[str, str], dict[str, float | None]]:
    """(day, group) -> metric -> value, for one dimension."""
    table: dict[tuple[str, str], dict[str, float | None]] = {}
    for day, _dim, group, metric, value in store.kpi_rows(days, dimension):
        table.setdefault((day, group), {})[metric] = value
    return table


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def shown(value: float | None, unit: str) -> str:
    """A KPI value for people: shares as percentages, counts whole, the rest to 0.1 or 0.01."""
    if value is None:
        return "-"
    if unit == "share":
        return f"{value:.1%}"
    if unit in ("visits", "work orders", "ratings", "invoices", "technicians", "count"):
        return f"{value:,.0f}"
    if unit in ("EUR", "ratio", "jobs", "0-10"):
        return f"{value:,.2f}"
    return f"{value:,.1f}"


def _header(name: str) -> str:
    unit = METRIC_BY_NAME[name].unit
    text = name.replace("_", " ")
    return f"{text} ({unit})" if unit in ("km", "EUR") and unit not in text else text


def render_fleet(days: Sequence[str], values: dict[str, dict[str, float | None]],
                 metrics: Sequence[str]) -> None:  # fmt: skip
    """All work: a row per metric, a column per day."""
    table = Table(title="KPIs, all work", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("unit")
    for day in days:
        table.add_column(day, justify="right")
    for name in metrics:
        unit = METRIC_BY_NAME[name].unit
        table.add_row(name, unit, *(shown(values[day].get(name), unit) for day in days))
    Console(width=max(100, Console().width)).print(table)


def render_groups(
    title: str,
    first: Sequence[str],
    rows: Sequence[tuple[Sequence[str], dict[str, float | None]]],
    metrics: Sequence[str],
) -> None:
    """A row per group, a column per metric; headers wrap (rich would cut long names)."""
    table = Table(title=title, title_justify="left")
    for name in first:
        table.add_column(name, no_wrap=True)
    for name in metrics:
        header = _header(name)
        longest = max(len(word) for word in header.split())
        table.add_column(header, justify="right", min_width=max(6, longest))
    for labels, values in rows:
        table.add_row(*labels, *(shown(values.get(n), METRIC_BY_NAME[n].unit) for n in metrics))
    Console(width=max(160, Console().width)).print(table)


def cmd_kpi(args: argparse.Namespace, config: Config) -> int:
    dimension = args.by.replace("-", "_")
    store = open_store(config)
    try:
        with progress_bar(args.format == "table") as progress:
            task = progress.add_task("read the KPI tables", total=3)
            days = select_days(store, args.day)
            metrics = select_metrics(args.metrics, args.format)
            progress.advance(task)
            table = kpi_table(store, days, dimension)
            progress.advance(task)
            lag = asyncio.run(projection_lag(config, store))
            progress.advance(task)
            published = 0
            if args.publish:
                published = asyncio.run(_publish(config, store, days))
    finally:
        store.close()
    extra: dict[str, Any] = {"days": ", ".join(days), "records not yet projected": lag}
    if args.publish:
        extra["KpiSnapshot events published to fs.kpi"] = published
    if lag:
        extra["note"] = "run `fieldstream process` to project the rest"
    if args.format == "table":
        if dimension == "all":
            render_fleet(days, {day: table.get((day, "all"), {}) for day in days}, metrics)
        else:
            single = len(days) == 1
            render_groups(
                f"KPIs by {dimension}" + (f", {days[0]}" if single else ""),
                [dimension] if single else ["day", dimension],
                [
                    (([group] if single else [day, group]), values)
                    for (day, group), values in sorted(table.items())
                ],
                metrics,
            )
        for key, value in extra.items():
            print(f"{key}: {value}")
        return 0
    rows = [
        {
            "day": day,
            "dimension": dimension,
            "group": group,
            **{name: _rounded(values.get(name)) for name in metrics},
        }
        for (day, group), values in sorted(table.items())
    ]
    if args.format == "json":
        emit(rows, fmt="json", extra={"days": list(days), "lag": lag, "published": published})
    else:
        emit(rows, fmt="csv")
    return 0


async def _publish(config: Config, store: ProjectionStore, days: Sequence[str]) -> int:
    log = await open_log(config)
    try:
        return sum([len(await publish_day(store, log, day)) for day in days])
    finally:
        await log.close()


def add_parser(sub: Any) -> None:
    """Register ``fieldstream kpi`` (called by gateway.cli.build_parser)."""
    p = sub.add_parser("kpi", help="print the KPI tables (by day, technician, team, ...)")
    p.add_argument("--day", help="YYYY-MM-DD, or all (default: the latest day)")
    p.add_argument("--by", choices=BY_CHOICES, default="all", help="group by (default all)")
    p.add_argument(
        "--metrics", help="comma-separated metric names (default: the headline ones in tables)"
    )
    p.add_argument("--publish", action="store_true", help="also publish KpiSnapshot to fs.kpi")
    _common(p, FORMATS)
    p.set_defaults(handler=cmd_kpi)
