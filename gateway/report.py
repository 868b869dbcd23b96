"""``fieldstream report --out report.html``: a self-contained HTML report of the KPI tables.

One file, no external resource: the charts are PNGs drawn with matplotlib (the Agg backend,
no display needed) and embedded as base64 ``data:`` URIs, the styles are inline. Charts:

* **KPI trends by day and team**: on-time rate, first-time fix rate, utilisation and NPS,
  one line per team (the busiest teams) and the whole fleet in black;
* **ETA calibration**: for each quantile the ETA engine publishes (P10, P50, P90) the share
  of arrivals that came at or before it, 30 minutes ahead, against its nominal level, and
  the P10-P90 window's coverage against 80 %;
* **Alert lead time**: how long before the promised window ended the first late alert of a
  visit was raised, split by whether the visit really was late.

The numbers come from the projection store (what ``fieldstream process`` committed); the
report's "as of" is the newest event time projected, never the wall clock.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from events.codec import format_time
from gateway.cli import CliError, _common
from gateway.kpi import kpi_table, open_store
from gateway.output import emit, progress_bar
from projections import HEADLINE, METRIC_BY_NAME
from streams.config import Config
from streams.projection_store import ProjectionStore

TREND_METRICS = ("on_time_rate", "first_time_fix_rate", "utilisation", "nps")
CHART_SIZES = {"trends": (1000, 600), "calibration": (600, 600), "lead_times": (800, 450)}
"""Pixel size of each chart (figure inches x DPI 100)."""
DPI = 100
MAX_TEAMS = 8


def _figure(name: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    width, height = CHART_SIZES[name]
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def trends_chart(
    days: Sequence[str],
    fleet: Mapping[str, Mapping[str, float | None]],
    teams: Mapping[str, Mapping[str, Mapping[str, float | None]]],
) -> bytes:
    """KPI trends by day: the fleet (``fleet[day][metric]``) and each team
    (``teams[team][day][metric]``)."""
    figure = _figure("trends")
    axes = figure.subplots(2, 2)
    x = list(range(len(days)))
    for ax, metric in zip(axes.flat, TREND_METRICS, strict=True):
        for team, by_day in teams.items():
            ys = [by_day.get(d, {}).get(metric) for d in days]
            ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o",
                    linewidth=1, markersize=3, alpha=0.7, label=team)  # fmt: skip
        ys = [fleet.get(d, {}).get(metric) for d in days]
        ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", color="black",
                linewidth=2.5, markersize=6, label="all")  # fmt: skip
        meta = METRIC_BY_NAME[metric]
        ax.set_title(f"{metric} ({meta.unit})", fontsize=10)
        ax.set_xticks(x, [d[5:] for d in days], fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(9, len(labels)), fontsize=8)
    figure.suptitle("KPI trends by day and team", fontsize=12)
    figure.subplots_adjust(hspace=0.4, wspace=0.25, left=0.07, right=0.98, top=0.9, bottom=0.14)
    return _png(figure)


def calibration_points(visits: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Observed shares for the calibration chart, from visit facts with an ETA 30 min ahead."""
    judged = [v for v in visits if v["eta_p50"] is not None and v["arrived_at"] is not None]
    n = len(judged)

    def share(test: Any) -> float | None:
        return sum(1 for v in judged if test(v)) / n if n else None

    return {
        "n": n,
        "levels": [0.1, 0.5, 0.9],
        "observed": [
            share(lambda v: v["arrived_at"] <= v["eta_p10"]),
            share(lambda v: v["arrived_at"] <= v["eta_p50"]),
            share(lambda v: v["arrived_at"] <= v["eta_p90"]),
        ],
        "coverage": share(lambda v: v["eta_p10"] <= v["arrived_at"] <= v["eta_p90"]),
    }


def calibration_chart(points: Mapping[str, Any]) -> bytes:
    figure = _figure("calibration")
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    observed = [float("nan") if y is None else y for y in points["observed"]]
    ax.plot(points["levels"], observed, marker="o", markersize=8, color="tab:blue",
            label="P10, P50, P90: arrivals at or before")  # fmt: skip
    coverage = points["coverage"]
    if coverage is not None:
        ax.plot([0.8], [coverage], marker="s", markersize=9, color="tab:orange",
                linestyle="none", label="P10-P90 window coverage")  # fmt: skip
    for level, y in zip(points["levels"], points["observed"], strict=True):
        if y is not None:
            ax.annotate(f"{y:.2f}", (level, y), textcoords="offset points", xytext=(6, -12))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal level")
    ax.set_ylabel("observed share of arrivals")
    ax.set_title(f"ETA calibration, 30 min ahead ({points['n']} arrivals)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    figure.subplots_adjust(left=0.12, right=0.96, top=0.92, bottom=0.1)
    return _png(figure)


def lead_time_chart(visits: Sequence[Mapping[str, Any]]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure = _figure("lead_times")
    ax = figure.subplots()
    late = [v["alert_lead_min"] for v in visits if v["alert_lead_min"] is not None and v["late"]]
    fine = [
        v["alert_lead_min"] for v in visits if v["alert_lead_min"] is not None and not v["late"]
    ]
    top = max([*late, *fine, 60.0])
    bins = [b * 10.0 for b in range(int(top // 10) + 2)]
    ax.hist([late, fine], bins=bins, stacked=True, color=["tab:red", "tab:grey"],
            label=[f"late arrival ({len(late)})", f"arrived in time ({len(fine)})"])  # fmt: skip
    ax.set_xlabel("minutes between the first late alert and the end of the promised window")
    ax.set_ylabel("visits")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Alert lead time", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.subplots_adjust(left=0.08, right=0.97, top=0.9, bottom=0.13)
    return _png(figure)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "share":
        return f"{value:.1%}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    width, height = CHART_SIZES[name]
    return (
        f'<img id="{name}" alt="{html.escape(alt)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{data}">'
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f0f0f0; }
img { display: block; margin: 1em 0; border: 1px solid #eee; }
.note { color: #666; font-size: 0.85em; }
"""


def build_report(store: ProjectionStore, source: str) -> tuple[str, dict[str, bytes]]:
    """The HTML document and its charts (PNG bytes by name)."""
    days = store.days()
    if not days:
        raise CliError("the projection holds no KPI yet: run `fieldstream process` first")
    fleet_table = kpi_table(store, days, "all")
    team_table = kpi_table(store, days, "team")
    fleet = {day: fleet_table.get((day, "all"), {}) for day in days}
    volume: dict[str, float] = {}
    teams: dict[str, dict[str, dict[str, float | None]]] = {}
    for (day, team), values in team_table.items():
        teams.setdefault(team, {})[day] = values
        volume[team] = volume.get(team, 0.0) + (values.get("visits") or 0.0)
    busiest = sorted(volume, key=lambda t: (-volume[t], t))[:MAX_TEAMS]
    visits = store.visit_facts()
    charts = {
        "trends": trends_chart(days, fleet, {t: teams[t] for t in sorted(busiest)}),
        "calibration": calibration_chart(calibration_points(visits)),
        "lead_times": lead_time_chart(visits),
    }
    meta = store.meta()
    as_of = format_time(int(meta["watermark"])) if meta.get("watermark") else "-"
    last = days[-1]

    def cells(values: Mapping[str, float | None], names: Sequence[str]) -> list[str]:
        return [_fmt(values.get(n), METRIC_BY_NAME[n].unit) for n in names]

    headline = _table(
        ["metric", "unit", *days],
        [
            [name, METRIC_BY_NAME[name].unit, *(cells(fleet[d], [name])[0] for d in days)]
            for name in METRIC_BY_NAME
        ],
    )
    per_team = _table(
        ["team", *HEADLINE],
        [
            [team, *cells(team_table.get((last, team), {}), HEADLINE)]
            for team in sorted({t for (d, t) in team_table if d == last})
        ],
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>fieldstream KPI report {html.escape(days[0])} to {html.escape(last)}</title>
<style>{_STYLE}</style></head><body>
<h1>Field-service KPIs</h1>
<p class="note">{html.escape(source)}; days {html.escape(days[0])} to {html.escape(last)};
as of the newest event projected, {html.escape(as_of)}. Each KPI's formula is in docs/kpis.md.</p>
<h2>KPI trends by day and team</h2>
{_img("trends", charts["trends"], "KPI trends by day and team")}
<p class="note">Teams shown: the {len(busiest)} with the most visits; black: all work.</p>
<h2>ETA calibration</h2>
{_img("calibration", charts["calibration"], "ETA calibration: nominal versus observed")}
<h2>Alert lead time</h2>
{_img("lead_times", charts["lead_times"], "Alert lead-time histogram")}
<h2>Every KPI, all work, by day</h2>
{headline}
<h2>By team, {html.escape(last)}</h2>
{per_team}
</body></html>
"""
    return doc, charts


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    out: Path = args.out
    store = open_store(config)
    try:
        with progress_bar(args.format == "table") as progress:
            task = progress.add_task("report: read the KPI tables, draw the charts", total=2)
            doc, charts = build_report(store, config.describe())
            progress.advance(task)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(doc, encoding="utf-8")
            progress.advance(task)
    finally:
        store.close()
    summary = {
        "file": str(out),
        "bytes": out.stat().st_size,
        "charts": ", ".join(f"{n} {CHART_SIZES[n][0]}x{CHART_SIZES[n][1]}" for n in charts),
    }
    emit([summary], fmt=args.format, title="report written", columns=list(summary))
    return 0


def add_parser(sub: Any) -> None:
    """Register ``fieldstream report`` (called by gateway.cli.build_parser)."""
    p = sub.add_parser("report", help="write a self-contained HTML report with charts")
    p.add_argument("--out", type=Path, required=True, help="the .html file to write")
    _common(p)
    p.set_defaults(handler=cmd_report)
