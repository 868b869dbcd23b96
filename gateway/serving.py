"""``fieldstream serve``, ``fieldstream token`` and the live ``fieldstream demo``.

* ``serve``: the gateway (websocket feeds, HTTP API, metrics, the map) over the configured
  log, and with ``--process`` the pipeline's stages in the same process.
* ``token``: a signed access token for a customer's work order or for a dispatcher.
* ``demo``: a simulated day fed through ingest at an accelerated clock, the pipeline and the
  gateway, started together; it prints the map's URL and a customer's tracking URL, shows
  progress, and on Ctrl-C or after ``--duration`` stops cleanly and prints the KPI table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway import tokens
from gateway.cli import CliError, _common, _load_graph, run_simulation, topic_summary
from gateway.feed import Clock
from gateway.metrics import Metrics
from gateway.output import emit, progress_bar
from gateway.runner import FeedWorker, PipelineWorker, Stopper
from gateway.server import Gateway, Settings
from streams.config import Config

if TYPE_CHECKING:
    from simulator import Simulation


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        heartbeat_s=args.heartbeat,
        queue_limit=args.queue_limit,
        timezone=args.timezone,
    )


def _server_options(p: argparse.ArgumentParser, port: int = 8080) -> None:
    g = p.add_argument_group("the gateway")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on")
    g.add_argument("--port", type=int, default=port, help="port (0: any free port)")
    g.add_argument("--heartbeat", type=float, default=15.0, help="heartbeat period, seconds")
    g.add_argument(
        "--queue-limit", type=int, default=256, help="frames a slow client may have waiting"
    )
    g.add_argument("--timezone", default="Europe/Andorra", help="local time of the customers")


async def _start_gateway(gateway: Gateway) -> None:
    try:
        await gateway.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {gateway.settings.port} is in use: pass --port with another (0: any)"
            ) from exc
        raise


def _on_sigint(stopper: Stopper) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, stopper.stop)
        loop.add_signal_handler(signal.SIGTERM, stopper.stop)


# -- token -------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace, config: Config) -> int:
    try:
        key = tokens.load_key(config.data_dir)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.region and not args.dispatcher:
        raise CliError("--region goes with --dispatcher")
    now = int(time.time())
    base = args.base_url.rstrip("/") if args.base_url else None
    if args.work_order:
        ttl = args.ttl or tokens.CUSTOMER_TTL_S
        token = tokens.issue_customer(key, args.work_order, now=now, ttl_s=ttl)
        scope = f"customer of {args.work_order}"
        url = f"{base}/track/{args.work_order}?token={token}" if base else None
    else:
        ttl = args.ttl or tokens.DISPATCHER_TTL_S
        token = tokens.issue_dispatcher(key, args.region, now=now, ttl_s=ttl)
        scope = f"dispatcher of {args.region or 'every region'}"
        region = f"&region={args.region}" if args.region else ""
        url = f"{base}/map?token={token}{region}" if base else None
    if args.format == "json":
        doc = {"token": token, "scope": scope, "expires": now + ttl, "url": url}
        emit([], fmt="json", extra=doc)
    else:
        print(url or token)
    return 0


# -- serve -------------------------------------------------------------------------------------


async def serve_until_stopped(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    metrics = Metrics()
    graph = _load_graph(config.roads)
    gateway = Gateway(config, _settings(args), metrics=metrics, graph=graph)
    stopper = Stopper(asyncio.Event())
    _on_sigint(stopper)
    await _start_gateway(gateway)
    pipeline = PipelineWorker(config, metrics, graph) if args.process else None
    try:
        await gateway.wait_ready(timeout=600)
        if pipeline is not None:
            pipeline.start()
        print(f"fieldstream gateway on {gateway.url} ({config.describe()})", flush=True)
        print(f"  map:      {gateway.url}/map?token=<fieldstream token --dispatcher>", flush=True)
        print(f"  metrics:  {gateway.url}/metrics", flush=True)

        def check() -> None:
            if pipeline is not None and pipeline.error is not None:
                raise CliError(f"the pipeline stopped: {pipeline.error!r}")

        await stopper.wait(tick=check)
    finally:
        if pipeline is not None:
            pipeline.stop()
        await gateway.stop()
    return {"clients at stop": gateway.clients, "records read": gateway.view.records}


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    summary = asyncio.run(serve_until_stopped(args, config))
    emit([summary], fmt=args.format, title="gateway stopped", columns=list(summary))
    return 0


# -- demo --------------------------------------------------------------------------------------


def _customer_pick(sim: Simulation, live_from: int) -> str | None:
    """A work order whose technician sets off a few simulated minutes after the demo goes
    live: its customer page shows "confirmed", then the van on its way."""
    from events import kinds as k

    starts = [
        (at, event.work_order_id)
        for at, event in sim.iter_events()
        if isinstance(event, k.TechnicianEnRoute) and at >= live_from + 5 * 60_000
    ]
    return min(starts)[1] if starts else None


async def run_demo(args: argparse.Namespace, config: Config, sim: Simulation) -> dict[str, Any]:
    """Feed, process and serve the simulated day until Ctrl-C, ``--duration`` or the end of
    the day (everything fed and processed); returns the run's figures."""
    from simulator import encoded_lines

    show = args.format == "table"
    clock = Clock.parse(args.clock)
    lines = list(encoded_lines(sim))
    first_shift = min(
        (at for at, e in sim.iter_events() if type(e).__name__ == "ShiftStarted"), default=None
    )
    live_from = None if first_shift is None else first_shift - 60_000
    metrics = Metrics()
    graph = _load_graph(config.roads)
    gateway = Gateway(config, _settings(args), metrics=metrics, graph=graph)
    stopper = Stopper(asyncio.Event(), time.monotonic() + args.duration if args.duration else None)
    _on_sigint(stopper)
    try:
        await _start_gateway(gateway)
    except CliError:
        if args.port != 8080:
            raise
        # The default port is taken (another demo?): any free port will do.
        gateway = Gateway(config, replace(_settings(args), port=0), metrics=metrics, graph=graph)
        await _start_gateway(gateway)
    pipeline = PipelineWorker(config, metrics, graph)
    feeder = FeedWorker(config, metrics, lines, clock=clock, live_from_ms=live_from)
    reason = "stopped"
    out = sys.stdout if show else sys.stderr  # JSON on stdout stays one document
    try:
        await gateway.wait_ready()
        pipeline.start()
        feeder.start()
        now = int(time.time())
        ttl = max(int(args.duration or 0) + 3600, tokens.DISPATCHER_TTL_S)
        dispatcher = tokens.issue_dispatcher(gateway.key, now=now, ttl_s=ttl)
        print(f"\nLive map (dispatcher):  {gateway.url}/map?token={dispatcher}", file=out)
        wo = _customer_pick(sim, live_from or lines[0][0])
        if wo is not None:
            customer = tokens.issue_customer(gateway.key, wo, now=now, ttl_s=ttl)
            print(f"Customer page ({wo}):  {gateway.url}/track/{wo}?token={customer}", file=out)
        print(f"Metrics:  {gateway.url}/metrics    (Ctrl-C stops the demo)\n", file=out, flush=True)
        span = max(1, lines[-1][0] - lines[0][0])
        fed_at_pass: list[int] = []

        def day_over() -> bool:
            if not feeder.done:
                return False
            if not fed_at_pass:
                fed_at_pass.append(pipeline.passes)
            return pipeline.passes > fed_at_pass[0] + 1 and pipeline.lag == 0

        with progress_bar(show) as progress:
            task = progress.add_task("simulated day", total=span)

            def tick() -> None:
                for worker in (pipeline, feeder):
                    if worker.error is not None:
                        raise CliError(f"{worker.name} stopped: {worker.error!r}")
                at = feeder.sim_ms or lines[0][0]
                progress.update(
                    task,
                    completed=at - lines[0][0],
                    description=f"simulated {gateway.view.hhmm(at)} · fed {feeder.fed:,} · "
                    f"processed {pipeline.processed:,} (lag {pipeline.lag:,}) · "
                    f"clients {gateway.clients}",
                )

            reason = await stopper.wait(done=day_over, tick=tick)
            tick()
    finally:
        feeder.stop()
        pipeline.stop(timeout=300)
        await gateway.stop()
    frames = sum(
        s.value for m in metrics.ws_frames.collect() for s in m.samples if s.name.endswith("_total")
    )
    return {
        "stopped by": {"stopped": "Ctrl-C", "duration": "--duration", "done": "end of day"}[reason],
        "events": feeder.fed,
        "accepted": feeder.report.accepted,
        "rejected at ingest": feeder.report.rejected,
        "records processed": pipeline.processed,
        "rejected by the pipeline": sum(
            n for name, n in pipeline.totals.items() if ".rejected." in name
        ),
        "arrivals detected by geofence": pipeline.totals.get("fleet.geofence.TechnicianArrived", 0),
        "websocket frames sent": int(frames),
        "map": f"{gateway.url}/map",
        "credit": "Map data © OpenStreetMap contributors, ODbL",
    }


def _kpi_rows(config: Config) -> tuple[list[str], list[dict[str, Any]]]:
    """The headline KPIs of the projection's latest day (empty when there is none)."""
    from gateway import kpi
    from projections import HEADLINE, METRIC_BY_NAME

    store = kpi.open_store(config)
    try:
        days = kpi.select_days(store, None)
        table = kpi.kpi_table(store, days, "all")
    finally:
        store.close()
    rows = [
        {
            "metric": name,
            "unit": METRIC_BY_NAME[name].unit,
            **{day: table.get((day, "all"), {}).get(name) for day in days},
        }
        for name in HEADLINE
    ]
    return days, rows


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    if not config.kafka and (config.data_dir / "log.sqlite3").exists():
        raise CliError(
            f"{config.data_dir} already holds a log; the demo writes a whole simulated day, so "
            "give it a new directory with --data-dir (make demo uses fieldstream-data/demo)"
        )
    try:
        Clock.parse(args.clock)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    config = replace(config, roads=args.roads or config.roads)
    sim = run_simulation(args, args.format == "table")
    summary = asyncio.run(run_demo(args, config, sim))
    topics = asyncio.run(topic_summary(config))
    try:
        days, kpis = _kpi_rows(config)
        note = ""
    except CliError as exc:
        days, kpis, note = [], [], str(exc)
    if args.format == "json":
        emit(topics, fmt="json", extra={**summary, "kpi": kpis, "kpi days": days})
        return 0 if summary["rejected at ingest"] == 0 else 1
    emit(
        topics,
        fmt=args.format,
        title=f"a simulated day in Andorra, live through the {config.describe()}",
        extra=summary,
    )
    if kpis:
        emit(kpis, fmt=args.format, title="the day's KPIs", columns=["metric", "unit", *days])
    elif note:
        print(f"KPI table: {note}")
    return 0 if summary["rejected at ingest"] == 0 else 1


def demo_options(p: argparse.ArgumentParser) -> None:
    """The live demo's own options (the simulation's are added by the caller)."""
    p.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: at Ctrl-C)"
    )
    _server_options(p)


# -- registration ------------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    """Register ``serve`` and ``token`` (called by gateway.cli.build_parser)."""
    p = sub.add_parser("serve", help="serve the live feeds, the HTTP API, metrics and the map")
    p.add_argument(
        "--process", action="store_true", help="also run the pipeline's stages in this process"
    )
    _server_options(p)
    _common(p)
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("token", help="issue an access token for a feed")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--work-order", metavar="ID", help="a customer's token for one work order")
    who.add_argument("--dispatcher", action="store_true", help="a dispatcher's token")
    p.add_argument("--region", help="with --dispatcher: one region only (default: all)")
    p.add_argument("--ttl", type=int, help="lifetime in seconds (default 24 h / 12 h)")
    p.add_argument("--base-url", help="print the page's URL on this gateway instead")
    _common(p)
    p.set_defaults(handler=cmd_token)
