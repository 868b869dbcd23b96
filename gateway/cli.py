"""The ``fieldstream`` command: one CLI, one subcommand per job.

Every subcommand takes ``--data-dir DIR`` (embedded mode; default ``./fieldstream-data`` or
``$FIELDSTREAM_DATA_DIR``) or ``--kafka HOST:PORT`` / ``--db URL`` (scale-out mode), and
``--format table|json`` (tables for people, JSON for scripts). Long work shows a progress bar
on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from events import kinds as k
from events.catalog import TOPICS, TOPICS_BY_NAME
from events.codec import format_time, parse_time
from events.schema import all_event_schemas, asyncapi_document
from gateway.feed import Clock, feed
from gateway.output import FORMATS, emit, progress_bar
from streams.bootstrap import build_stages, open_log, open_state_store
from streams.config import Config
from streams.ingest import Ingestor, IngestReport, batched, read_lines
from streams.pipeline import run_until_idle

if TYPE_CHECKING:
    from eta_engine.roads import RoadGraph
    from simulator import SimParams, Simulation

Handler = Callable[[argparse.Namespace, Config], int]


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _common(parser: argparse.ArgumentParser, formats: Sequence[str] = ("table", "json")) -> None:
    where = parser.add_argument_group("where the data lives")
    where.add_argument(
        "--data-dir",
        type=Path,
        help="embedded mode: the data directory (default ./fieldstream-data, "
        "or $FIELDSTREAM_DATA_DIR)",
    )
    where.add_argument("--kafka", metavar="HOST:PORT", help="scale-out mode: a Kafka broker")
    where.add_argument("--db", metavar="URL", help="scale-out mode: postgresql://... for stores")
    parser.add_argument("--format", choices=formats, default="table", help="output format")


def _config(args: argparse.Namespace) -> Config:
    config = Config.from_env()
    if args.data_dir is not None:
        config = replace(config, data_dir=args.data_dir)
    if args.kafka:
        config = replace(config, kafka=args.kafka)
    if args.db:
        config = replace(config, db=args.db)
    return config


# -- ingest ------------------------------------------------------------------------------------


async def ingest_file(
    config: Config, path: Path | None, *, show_progress: bool, batch_size: int
) -> IngestReport:
    """Ingest a JSON-lines file (``None`` = stdin) into the configured log."""
    log = await open_log(config)
    report = IngestReport()
    name = "stdin" if path is None else path.name
    ingestor = Ingestor(log, max_future_skew_ms=config.max_future_skew_ms, source=name)
    try:
        stream = sys.stdin.buffer if path is None else path.open("rb")
        total = None if path is None else path.stat().st_size
        with stream, progress_bar(show_progress) as progress:
            task = progress.add_task(f"ingest {name}", total=total)
            chunks = iter(lambda: stream.read(1 << 20), b"")
            line_no = 1
            for batch in batched(read_lines(chunks), batch_size):
                report.merge(await ingestor.ingest(batch, first_line=line_no))
                line_no += len(batch)
                progress.advance(task, sum(len(line) + 1 for line in batch))
    finally:
        await log.close()
    return report


def _report_rows(report: IngestReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"outcome": "accepted", "topic / rule": topic, "records": n}
        for topic, n in sorted(report.by_topic.items())
        if topic != "fs.dlq"
    ]
    rows += [
        {
            "outcome": "rejected",
            "topic / rule": rule,
            "records": n,
            "example": report.examples[rule],
        }
        for rule, n in report.by_rule.most_common()
    ]
    return rows


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    path = None if str(args.file) == "-" else Path(args.file)
    if path is not None and not path.is_file():
        raise CliError(f"no such file: {path}")
    report = asyncio.run(
        ingest_file(config, path, show_progress=args.format == "table", batch_size=args.batch)
    )
    summary = {
        "records": report.records,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "blank_lines": report.blank,
        "log": config.describe(),
    }
    if args.format == "json":
        emit(
            [],
            fmt="json",
            extra={**summary, "by_topic": dict(report.by_topic), "by_rule": dict(report.by_rule)},
        )
    else:
        emit(
            _report_rows(report),
            fmt="table",
            title=f"ingest {args.file}",
            columns=["outcome", "topic / rule", "records", "example"],
            extra=summary,
        )
    return 0


# -- topics ------------------------------------------------------------------------------------


async def topic_summary(config: Config) -> list[dict[str, Any]]:
    """One row per topic: partitions, records, key and event types (from the catalog)."""
    log = await open_log(config)
    try:
        existing = await log.topics()
        rows = []
        for name in sorted(existing):
            ends = await log.end_offsets(name)
            topic = TOPICS_BY_NAME.get(name)
            rows.append(
                {
                    "topic": name,
                    "partitions": existing[name],
                    "records": sum(ends.values()),
                    "key": topic.key if topic else "",
                    "events": ", ".join(c.__name__ for c in topic.events) if topic else "",
                }
            )
        return rows
    finally:
        await log.close()


def cmd_topics(args: argparse.Namespace, config: Config) -> int:
    rows = asyncio.run(topic_summary(config))
    emit(rows, fmt=args.format, title=f"topics ({config.describe()})")
    return 0


# -- schemas -----------------------------------------------------------------------------------


def cmd_schemas(args: argparse.Namespace, config: Config) -> int:
    from importlib.metadata import version

    out: Path = args.out
    (out / "schemas").mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_event_schemas().items():
        path = out / "schemas" / f"{name}.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n")
        written.append({"file": str(path), "event": name})
    doc = asyncapi_document(version("fieldstream"))
    path = out / "asyncapi.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    written.append({"file": str(path), "event": f"{len(TOPICS)} topics"})
    emit(written, fmt=args.format, title="schemas written")
    return 0


# -- process ---------------------------------------------------------------------------------


async def run_pipeline(
    config: Config, *, until_idle: bool, show: bool, stop: asyncio.Event | None = None
) -> dict[str, int]:
    """Run every stage until the log is drained (``until_idle``) or until ``stop`` is set."""
    log = await open_log(config)
    store = open_state_store(config.data_dir, config.db)
    stages = build_stages(log, store, config)
    totals: dict[str, int] = {}
    try:
        backlog = sum([await s.lag() for s in stages])
        with progress_bar(show) as progress:
            task = progress.add_task("process", total=backlog or None)
            while stop is None or not stop.is_set():
                done = await run_until_idle(stages, on_progress=lambda n: progress.advance(task, n))
                if until_idle:
                    break
                if done == 0:
                    await asyncio.sleep(0.2)
                backlog = sum([await s.lag() for s in stages])
                progress.update(task, total=progress.tasks[0].completed + backlog)
        for stage in stages:
            for name, n in stage.totals.items():
                totals[f"{stage.name}.{name}"] = n
    finally:
        store.close()
        await log.close()
    return totals


def cmd_process(args: argparse.Namespace, config: Config) -> int:
    show = args.format == "table"
    totals = asyncio.run(run_pipeline(config, until_idle=args.until_idle, show=show))
    rows = [{"counter": name, "count": n} for name, n in sorted(totals.items())]
    emit(rows, fmt=args.format, title=f"processed ({config.describe()})")
    return 0


# -- eval-eta ----------------------------------------------------------------------------------


async def evaluate_day(args: argparse.Namespace, show: bool) -> dict[str, Any]:
    """Simulate a day into a temporary store, run the pipeline and the ETA stage, score it."""
    import tempfile

    from gateway.evaluate import score
    from simulator import encoded_lines
    from streams.embedded import EmbeddedLog
    from streams.replay import read_topic

    sim = run_simulation(args, show)
    graph = _load_graph(args.roads)
    with tempfile.TemporaryDirectory(prefix="fieldstream-eval-") as tmp:
        config = Config(data_dir=Path(tmp))
        log = await open_log(config)
        store = open_state_store(config.data_dir, None)
        try:
            with progress_bar(show) as progress:
                task = progress.add_task("ingest", total=len(sim))
                await feed(
                    log,
                    encoded_lines(sim),
                    clock=Clock(None),
                    on_batch=lambda n: progress.advance(task, n),
                )
                # The projections (KPI tables, live view) feed nothing scored here: without
                # them, the ETA stage can follow the others on a core of its own.
                stages = [
                    s for s in build_stages(log, store, config, graph) if s.name != "projections"
                ]
                run_task = progress.add_task("pipeline and ETA stage", total=None)
                await run_until_idle(
                    stages, on_progress=lambda n: progress.advance(run_task, n), parallel=True
                )
            assert isinstance(log, EmbeddedLog)
            sites = {
                e.work_order_id: (e.site_lat, e.site_lon)
                for _, e in sim.iter_events()
                if isinstance(e, k.WorkOrderBooked)
            }
            result = score(
                truth=sim.truth,
                eta_records=await read_topic(log, "fs.eta"),
                alert_records=await read_topic(log, "fs.alerts"),
                gps_records=await read_topic(log, "fs.gps"),
                sites=sites,
                graph=graph,
                horizons_min=getattr(args, "horizons", None) or (60, 30, 10),
            )
        finally:
            store.close()
            await log.close()
    return {"scenario": args.scenario, "seed": args.seed, "technicians": args.technicians, **result}


def cmd_eval_eta(args: argparse.Namespace, config: Config) -> int:
    if getattr(args, "traces", None) is not None:  # recorded trips: see gateway/traces.py
        from gateway.traces import cmd_eval_traces

        return cmd_eval_traces(args, _load_graph(args.roads))
    if getattr(args, "predictions", None) is not None or getattr(args, "skip_bad", False):
        raise CliError("--predictions and --skip-bad go with --traces")
    result = asyncio.run(evaluate_day(args, args.format == "table"))
    if args.format == "json":
        emit([], fmt="json", extra=result)
        return 0
    rows = [{"horizon (min)": h, **values} for h, values in result["horizons"].items()]
    emit(
        rows,
        fmt="table",
        title=f"ETA engine vs baselines: {args.scenario}, seed {args.seed}, "
        f"{args.technicians} technicians ({result['visits']} visits)",
    )
    emit([result["alerts"]], fmt="table", title="late alerts", columns=list(result["alerts"]))
    return 0


# -- replay and show ---------------------------------------------------------------------------


def _time_arg(text: str) -> int:
    """An RFC 3339 time (``2026-11-23T14:05:00Z``) as ms since the epoch."""
    try:
        return parse_time(text if ("+" in text[10:] or text.endswith("Z")) else text + "Z")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2026-11-23T14:05:00Z"
        ) from None


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    import tempfile

    from streams.replay import replay

    into = args.into or Path(tempfile.mkdtemp(prefix="fieldstream-replay-"))
    show = args.format == "table"

    async def body() -> dict[str, Any]:
        source = await open_log(config, create_topics=False)
        try:
            with progress_bar(show) as progress:
                copy_task = progress.add_task("copy inputs", total=None)
                run_task = progress.add_task("replay", total=None)
                result, stages, log, store = await replay(
                    source,
                    into,
                    config,
                    until_ms=args.until,
                    on_copy=lambda n: progress.advance(copy_task, n),
                    on_process=lambda n: progress.advance(run_task, n),
                )
            try:
                summary: dict[str, Any] = {
                    "into": str(result.into),
                    "records copied": result.copied,
                    "records processed": result.processed,
                    "work orders": len(getattr(stages[0].processor, "orders")),  # noqa: B009
                    "technicians": len(getattr(stages[1].processor, "technicians")),  # noqa: B009
                }
                if args.work_order:
                    order = getattr(stages[0].processor, "orders").get(args.work_order)  # noqa: B009
                    if order is None:
                        raise CliError(f"no work order {args.work_order} in the replay")
                    summary["status"] = order.status.value
                    summary["visits"] = len(order.visits)
                return summary
            finally:
                store.close()
                await log.close()
        finally:
            await source.close()

    try:
        summary = asyncio.run(body())
    except FileExistsError as exc:
        raise CliError(str(exc)) from exc
    emit([summary], fmt=args.format, title="replay", columns=list(summary))
    return 0


def _engine_history(
    config: Config, work_order: str, as_of: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the ETA engine published for a work order (up to ``as_of``): its arrival windows
    and its late alerts, each with the input event that caused it (an alert's cause read
    back from the log, so the audit shows what the engine had just seen)."""
    from events.base import Event
    from events.codec import decode_trusted
    from streams.log import UnknownTopicError
    from streams.replay import records_of_key

    key = work_order.encode()

    async def cause_of(log: Any, event: Any) -> str:
        c = event.causation
        where = f"{c.topic} {c.partition}@{c.offset}"
        try:
            found = await log.read(c.topic, c.partition, c.offset, 1)
        except UnknownTopicError:
            found = []
        cause = decode_trusted(found[0].value) if found and found[0].offset == c.offset else None
        if isinstance(cause, k.GpsPinged):
            speed = "-" if cause.speed_mps is None else f"{cause.speed_mps:.1f} m/s"
            return (
                f"GpsPinged {c.id} ({where}) at {format_time(cause.time)}: "
                f"{cause.lat:.5f}, {cause.lon:.5f}, {speed}"
            )
        kind = type(cause).__name__ if isinstance(cause, Event) else "event"
        return f"{kind} {c.id} ({where})"

    async def body() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        log = await open_log(config, create_topics=False)
        etas: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        try:
            for topic in ("fs.eta", "fs.alerts"):
                try:
                    records = await records_of_key(log, topic, key)
                except UnknownTopicError:
                    continue  # nothing derived yet
                for record in records:
                    event = decode_trusted(record.value)
                    if not isinstance(event, k.EtaUpdated | k.LateAlertRaised | k.LateAlertCleared):
                        continue  # (fs.alerts also carries assignment conflicts)
                    if event.work_order_id != work_order or (
                        as_of is not None and event.time > as_of
                    ):
                        continue
                    if isinstance(event, k.EtaUpdated):
                        etas.append(
                            {
                                "time": format_time(event.time),
                                "technician": event.technician_id,
                                "p10": format_time(event.p10),
                                "p50": format_time(event.p50),
                                "p90": format_time(event.p90),
                                "reason": event.reason,
                                "model": event.model_version,
                                "id": event.id,
                            }
                        )
                    else:
                        row: dict[str, Any] = {
                            "time": format_time(event.time),
                            "alert": "raised",
                            "technician": event.technician_id,
                            "p(late)": event.probability_late,
                            "p50": format_time(event.p50),
                            "window end": None,
                            "lead min": None,
                            "message": None,
                            "reason": None,
                        }
                        if isinstance(event, k.LateAlertRaised):
                            row["window end"] = format_time(event.window_end)
                            row["lead min"] = round(event.lead_time_s / 60, 1)
                            row["message"] = event.message
                        else:
                            row["alert"] = "cleared"
                            row["reason"] = event.reason
                        row["caused by"] = await cause_of(log, event)
                        row["id"] = event.id
                        alerts.append(row)
        finally:
            await log.close()
        return etas, alerts

    return asyncio.run(body())


def _facts_as_of(config: Config, kind: str, aggregate_id: str, as_of: int | None) -> list[Any]:
    """An aggregate's facts in order, up to ``as_of`` (by event time) if given."""
    store = open_state_store(config.data_dir, config.db)
    try:
        facts = store.facts(kind, aggregate_id)
    finally:
        store.close()
    return facts if as_of is None else [f for f in facts if f.at <= as_of]


def _as_of_title(name: str, as_of: int | None, facts: Sequence[Any]) -> str:
    """A show command's title: the time asked for, and the time of the last event."""
    asked = "now" if as_of is None else format_time(as_of)
    return f"{name} as of {asked} (its last event at {format_time(facts[-1].at)})"


def cmd_show_work_order(args: argparse.Namespace, config: Config) -> int:
    from aggregates.workorder import rebuild

    facts = _facts_as_of(config, "workorder", args.id, args.as_of)
    state = rebuild(facts)
    if state is None:
        raise CliError(f"no work order {args.id} in {config.describe()}")
    etas, alerts = _engine_history(config, args.id, args.as_of)
    events = [
        {
            "version": f.originator_version,
            "time": format_time(f.at),
            "event": f.kind,
            "effect": f.effect,
            "id": f.event_id,
            "source": f.source,
        }
        for f in facts
    ]
    doc = state.as_dict()
    doc.pop("event_ids")
    if args.format == "json":
        emit(events, fmt="json", extra={"state": doc, "etas": etas, "alerts": alerts})
        return 0
    visit = state.visit
    summary = {
        "work order": state.id,
        "status": state.status.value,
        "customer": state.customer_id,
        "job type": state.job_type,
        "window": f"{format_time(state.window_start)} - {format_time(state.window_end)}",
        "visits": len(state.visits),
        "technician": visit.technician_id if visit else None,
        "arrived": format_time(visit.arrived_at) if visit and visit.arrived_at else None,
        "arrived by": visit.arrived_by if visit else None,
        "completed": format_time(visit.completed_at) if visit and visit.completed_at else None,
        "rating": state.rating,
    }
    emit(
        [summary],
        fmt="table",
        title=_as_of_title(state.id, args.as_of, facts),
        columns=list(summary),
    )
    emit(events, fmt="table", title="the events that produced it, in order")
    if etas:
        # (the table shows clock times, UTC; --format json has the whole timestamps and ids)
        shown = [
            {name: _clock(value) if name in _TIMES else value for name, value in row.items()}
            for row in etas[-10:]
        ]
        last = f", the last {len(shown)} of {len(etas)}" if len(shown) < len(etas) else ""
        emit(
            shown,
            fmt="table",
            title=f"its arrival windows (ETAs) published{last}, times UTC",
            columns=["time", "technician", "p10", "p50", "p90", "reason", "model"],
        )
    else:
        print("no arrival window (ETA) published for it by then")
    for n, alert in enumerate(alerts, 1):  # one "field value" table each: they are wide
        emit(
            [alert],
            fmt="table",
            title=f"late alert {n} of {len(alerts)}, and what the engine had just seen",
        )
    if not alerts:
        print("no late alert for it by then")
    return 0


def _last_position(
    config: Config, technician: str, shifts: Sequence[tuple[int, int | None]], as_of: int | None
) -> dict[str, Any] | None:
    """The technician's last in-shift fix on the log (up to ``as_of``): what the pipeline
    knew of where the van was (pings outside a shift are not a position)."""
    from streams.log import UnknownTopicError
    from streams.replay import records_of_key

    def in_shift(t: int) -> bool:
        return any(start <= t and (end is None or t <= end) for start, end in shifts)

    async def body() -> dict[str, Any] | None:
        log = await open_log(config, create_topics=False)
        try:
            records = await records_of_key(log, "fs.gps", technician.encode())
        except UnknownTopicError:
            records = []
        finally:
            await log.close()
        # (a ping's record time is its event time; of equal times, the later on the log)
        best = max(
            (
                r
                for r in records
                if (as_of is None or r.timestamp_ms <= as_of) and in_shift(r.timestamp_ms)
            ),
            key=lambda r: (r.timestamp_ms, r.offset),
            default=None,
        )
        if best is None:
            return None
        data = orjson.loads(best.value).get("data", {})
        return {
            "time": format_time(best.timestamp_ms),
            "lat": data.get("lat"),
            "lon": data.get("lon"),
            "speed_mps": data.get("speed_mps"),
            "heading_deg": data.get("heading_deg"),
            "ping": f"fs.gps {best.partition}@{best.offset}",
        }

    return asyncio.run(body())


def cmd_show_technician(args: argparse.Namespace, config: Config) -> int:
    from aggregates.technician import Technician, evolve

    facts = _facts_as_of(config, "technician", args.id, args.as_of)
    tech: Technician | None = None
    for fact in facts:
        tech = evolve(tech, fact)
    if tech is None:
        raise CliError(f"no technician {args.id} in {config.describe()}")
    position = _last_position(config, tech.id, tech.shifts, args.as_of)
    events = [
        {
            "version": f.originator_version,
            "time": format_time(f.at),
            "event": f.kind,
            "subject": f.subject,
            "id": f.event_id,
            "source": f.source,
        }
        for f in facts
    ]
    doc = tech.as_dict()
    doc.pop("event_ids")
    doc.pop("position")  # (the stage keeps it in its own state: the log's pings say it)
    if args.format == "json":
        emit(events, fmt="json", extra={"state": doc, "position": position})
        return 0
    current = tech.current
    summary = {
        "technician": tech.id,
        "name": tech.name,
        "team": tech.team,
        "region": tech.region,
        "skills": ", ".join(tech.skills),
        "on shift": tech.on_shift,
        "shift": None
        if tech.shift_started_at is None
        else f"{format_time(tech.shift_started_at)} - "
        + format_time(tech.shift_ended_at or tech.shift_planned_end or tech.shift_started_at)
        + ("" if tech.shift_ended_at else " (planned)"),
        "current job": None if current is None else f"{current.work_order_id} ({current.status})",
        "queue": ", ".join(j.work_order_id for j in tech.queue) or None,
        "visits completed": len(tech.finished),
        "van stock": ", ".join(f"{part} x{n}" for part, n in sorted(tech.van_stock.items()) if n)
        or None,
        "last position": None
        if position is None
        else f"{position['lat']:.5f}, {position['lon']:.5f} at {position['time']}",
    }
    emit(
        [summary],
        fmt="table",
        title=_as_of_title(tech.id, args.as_of, facts),
        columns=list(summary),
    )
    emit(events, fmt="table", title="the events that produced it, in order")
    return 0


_TIMES = frozenset({"time", "p10", "p50", "p90"})


def _clock(text: str) -> str:
    """``2026-11-23T09:21:39.627Z`` as ``09:21:39``."""
    return text[11:19]


# -- simulate and demo ---------------------------------------------------------------------------


def _load_graph(path: Path | None) -> RoadGraph:
    from eta_engine.roads import RoadGraph

    try:
        return RoadGraph.default() if path is None else RoadGraph.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"cannot load road graph {path}: {exc}") from exc


def _sim_params(args: argparse.Namespace) -> SimParams:
    from simulator import SCENARIOS, make_params, parse_override

    if args.scenario not in SCENARIOS:
        raise CliError(f"unknown scenario {args.scenario!r}; choose from {', '.join(SCENARIOS)}")
    overrides: dict[str, Any] = {}
    for text in args.set or ():
        try:
            name, value = parse_override(text)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        overrides[name] = value
    try:
        return make_params(
            args.scenario,
            technicians=args.technicians,
            seed=args.seed,
            start_date=args.start,
            hours=args.hours,
            workforce_seed=args.workforce_seed,
            **overrides,
        )
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def run_simulation(args: argparse.Namespace, show: bool) -> Simulation:
    """Simulate the day the arguments describe, with a progress bar."""
    from simulator import simulate

    params = _sim_params(args)
    graph = _load_graph(args.roads)
    with progress_bar(show) as progress:
        task = progress.add_task(
            f"simulate {params.technicians} technicians ({args.scenario})", total=1000
        )
        return simulate(
            params, graph, progress=lambda share: progress.update(task, completed=share * 1000)
        )


async def simulate_into_log(
    config: Config, sim: Simulation, clock: Clock, show: bool
) -> IngestReport:
    """Feed a simulated day through ingest into the configured log, paced by ``clock``."""
    from simulator import encoded_lines

    log = await open_log(config)
    try:
        with progress_bar(show) as progress:
            task = progress.add_task(f"ingest into {config.describe()}", total=len(sim))
            return await feed(
                log,
                encoded_lines(sim),
                clock=clock,
                batch_size=config.batch_size,
                on_batch=lambda n: progress.advance(task, n),
            )
    finally:
        await log.close()


def cmd_simulate(args: argparse.Namespace, config: Config) -> int:
    from simulator import write_jsonl, write_truth

    try:
        clock = Clock.parse(args.clock)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    show = args.format == "table"
    sim = run_simulation(args, show)
    summary: dict[str, Any] = {"events": len(sim), "visits": len(sim.truth)}
    if args.out is not None:
        summary["written"] = write_jsonl(sim, args.out)
        summary["file"] = str(args.out)
    else:
        report = asyncio.run(simulate_into_log(config, sim, clock, show))
        summary.update(accepted=report.accepted, rejected=report.rejected, log=config.describe())
        if report.rejected:
            summary["rejections"] = dict(report.by_rule)
    if args.truth is not None:
        summary["truth rows"] = write_truth(sim, args.truth)
        summary["truth file"] = str(args.truth)
    if getattr(args, "export_traces", None) is not None:
        from simulator.traces import write_traces

        summary["trips exported"] = write_traces(sim, args.export_traces)
        summary["traces file"] = str(args.export_traces)
    emit([summary], fmt=args.format, title="simulated day", columns=list(summary))
    return 0


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    """The live demo: see gateway/serving.py."""
    from gateway import serving

    return serving.cmd_demo(args, config)


def _simulation_options(p: argparse.ArgumentParser, technicians: int, hours: float) -> None:
    p.add_argument("--technicians", type=int, default=technicians, help="how many technicians")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same day)")
    p.add_argument("--scenario", default="normal", help="normal, rush-hour, incidents, sparse-gps")
    p.add_argument(
        "--start",
        type=date.fromisoformat,
        default=date(2026, 11, 23),
        help="the simulated date (YYYY-MM-DD)",
    )
    p.add_argument("--hours", type=float, default=hours, help="hours of the day to simulate")
    p.add_argument(
        "--workforce-seed",
        type=int,
        help="draw the technicians with this seed (default: --seed); days simulated with "
        "different seeds and one workforce seed are days of the same technicians",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="override one scenario parameter (repeatable), e.g. dropout_rate=0.2",
    )
    p.add_argument("--roads", type=Path, help="a road graph .npz (default: Andorra)")
    p.add_argument("--clock", default="max", help="max, realtime or Nx: how fast to write")


# -- roads -------------------------------------------------------------------------------------


def cmd_roads_build(args: argparse.Namespace, config: Config) -> int:
    from eta_engine.osm_build import build_graph

    with progress_bar(args.format == "table") as progress:
        task = progress.add_task(f"build road graph from {args.osm.name}", total=None)
        try:
            summary = build_graph(args.osm, args.out, region=args.region)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CliError(str(exc)) from exc
        progress.update(task, total=1, completed=1)
    min_lat, min_lon, max_lat, max_lon = summary.bbox
    row = {
        "region": summary.region,
        "nodes": summary.n_nodes,
        "edges": summary.n_edges,
        "speed-tagged edges": summary.n_speed_tagged_edges,
        "km of road": round(summary.total_length_km, 1),
        "bbox": f"{min_lat:.4f},{min_lon:.4f} - {max_lat:.4f},{max_lon:.4f}",
        "file": str(summary.out_path),
        "bytes": summary.out_bytes,
    }
    emit(
        [row],
        fmt=args.format,
        title="road graph",
        extra={"credit": "Map data © OpenStreetMap contributors, ODbL"},
    )
    return 0


# -- the parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldstream",
        description="Event-sourced dispatch with streaming ETAs for field service.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="validate a JSON-lines file of events onto the log")
    p.add_argument("file", help="a .jsonl file, one CloudEvents JSON event per line; - = stdin")
    p.add_argument("--batch", type=int, default=5_000, help="records per log append")
    _common(p)
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("topics", help="list the topics with their record counts")
    _common(p, FORMATS)
    p.set_defaults(handler=cmd_topics)

    p = sub.add_parser("schemas", help="write JSON Schemas and an AsyncAPI document")
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    _common(p)
    p.set_defaults(handler=cmd_schemas)

    p = sub.add_parser("process", help="run the pipeline's stages over the log")
    p.add_argument(
        "--until-idle", action="store_true", help="stop once the log is drained (exit 0)"
    )
    _common(p, FORMATS)
    p.set_defaults(handler=cmd_process)

    p = sub.add_parser("eval-eta", help="score the ETA engine on a simulated day vs baselines")
    _simulation_options(p, technicians=30, hours=9.0)
    from gateway.traces import add_eval_options  # --traces FILE.csv and its options

    add_eval_options(p)
    _common(p)
    p.set_defaults(handler=cmd_eval_eta)

    p = sub.add_parser("replay", help="rebuild all state from the log into a fresh store")
    p.add_argument("--until", type=_time_arg, help="only input stamped up to this time (UTC)")
    p.add_argument("--work-order", help="summarise this work order's rebuilt state")
    p.add_argument("--into", type=Path, help="directory for the replay (default: a new temp dir)")
    _common(p)
    p.set_defaults(handler=cmd_replay)

    show = sub.add_parser("show", help="show an aggregate and the events that produced it")
    show_sub = show.add_subparsers(dest="show_command", required=True, metavar="WHAT")
    p = show_sub.add_parser("work-order", help="a work order's state and its events, in order")
    p.add_argument("id", help="the work order id")
    p.add_argument("--as-of", type=_time_arg, help="the state as of this time (UTC)")
    _common(p)
    p.set_defaults(handler=cmd_show_work_order)
    p = show_sub.add_parser(
        "technician", help="a technician's state, last in-shift position and events, in order"
    )
    p.add_argument("id", help="the technician id")
    p.add_argument("--as-of", type=_time_arg, help="the state as of this time (UTC)")
    _common(p)
    p.set_defaults(handler=cmd_show_technician)

    p = sub.add_parser("simulate", help="simulate a day of field service on real roads")
    _simulation_options(p, technicians=50, hours=9.0)
    p.add_argument("--out", type=Path, help="write JSON lines here instead of into the log")
    p.add_argument("--truth", type=Path, help="write the ground truth (one visit a line) here")
    p.add_argument(
        "--export-traces",
        type=Path,
        metavar="FILE.csv",
        help="also write the day's drives as GPS traces (the format of eval-eta --traces)",
    )
    _common(p)
    p.set_defaults(handler=cmd_simulate)

    from gateway import serving  # the live commands live in a module of their own

    p = sub.add_parser(
        "demo", help="a simulated day, live: the feed, the pipeline and the map, together"
    )
    _simulation_options(p, technicians=20, hours=9.0)
    serving.demo_options(p)
    _common(p, FORMATS)
    p.set_defaults(handler=cmd_demo)
    serving.add_parsers(sub)

    roads = sub.add_parser("roads", help="road graphs from OpenStreetMap")
    roads_sub = roads.add_subparsers(dest="roads_command", required=True, metavar="ACTION")
    p = roads_sub.add_parser("build", help="build a road graph from an .osm.pbf or .osm file")
    p.add_argument("--osm", type=Path, required=True, help="an OpenStreetMap extract")
    p.add_argument("--out", type=Path, required=True, help="the .npz graph to write")
    p.add_argument("--region", help="a name for the region (default: from the file name)")
    _common(p)
    p.set_defaults(handler=cmd_roads_build)

    from gateway import kpi, report  # their handlers live in modules of their own

    kpi.add_parser(sub)
    report.add_parser(sub)

    for register in _EXTENSIONS:
        register(sub)
    return parser


_EXTENSIONS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        handler: Handler = args.handler
        return handler(args, config)
    except CliError as exc:
        print(f"fieldstream {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
