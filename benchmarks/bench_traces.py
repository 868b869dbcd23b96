"""Fixes per second of a whole trace evaluation (``fieldstream eval-eta --traces``).

Run by hand:  .venv/bin/python benchmarks/bench_traces.py [--technicians N] [--hours H]

For each GPS rate (``--rates``, default the simulator's own, a fix every 5-15 s while
driving, and 1 Hz, what vehicle trackers commonly record), a simulated day's drives are
exported as a trace CSV (not timed). Then, timed, :func:`gateway.traces.evaluate_traces` on
that file, which is the whole command: reading and validating the CSV, cleaning the fixes,
making the events, appending them to a fresh embedded log, running the work-order, fleet and
ETA stages over it until idle, and scoring fs.eta against the baselines.

Prints the fixes per second of the whole run against the issue's target of 50,000/s, and the
seconds of each phase. Most of the pipeline's cost comes per trip (a shortest-time field per
destination, a dozen work-order and technician events), the rest per fix: sparse fixes make
few fixes per second, dense ones many. Then, timed in the same run, the anchor
(benchmarks/anchors.py): the naive ETA, a shortest-path search per fix, over 300 of the
day's fixes sent on the way to a job.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anchors import en_route_pings, naive_eta_rate

from eta_engine.roads import RoadGraph
from gateway.traces import evaluate_traces
from simulator import make_params, simulate
from simulator.traces import write_traces

TARGET = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--technicians", type=int, default=150)
    parser.add_argument("--hours", type=float, default=9.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rates",
        default="5,15;1,1",
        help="GPS intervals while driving, seconds 'lo,hi', separated by ';'",
    )
    parser.add_argument(
        "--anchor-pings", type=int, default=300, help="fixes the naive anchor is timed on"
    )
    args = parser.parse_args()
    graph = RoadGraph.default()
    for rate in args.rates.split(";"):
        lo, hi = (float(x) for x in rate.split(","))
        params = make_params(
            "normal",
            technicians=args.technicians,
            seed=args.seed,
            hours=args.hours,
            ping_interval_s=(lo, hi),
        )
        sim = simulate(params, graph)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "traces.csv"
            trips = write_traces(sim, path)
            outcome = asyncio.run(evaluate_traces(path, graph))
        pings = outcome.report["pings"]
        rate_s = pings / outcome.seconds
        phases = ", ".join(f"{name} {s:.2f}" for name, s in outcome.phases.items())
        print(
            f"traces, a fix every {lo:g}-{hi:g} s: {trips:,} trips, {pings:,} fixes "
            f"({pings / max(trips, 1):,.0f} a trip) in {outcome.seconds:.2f} s: "
            f"{rate_s:,.0f} fixes/s   target >= {TARGET:,}/s: "
            f"{'ok' if rate_s >= TARGET else 'MISSED'}\n    seconds: {phases}"
        )
        n_naive, naive = naive_eta_rate(graph, en_route_pings(sim), args.anchor_pings)
        print(
            f"    naive anchor (a shortest-path search per fix on the way to a job): "
            f"{n_naive:,} fixes, {naive:,.0f}/s; the whole evaluation {rate_s / naive:,.0f}x "
            "the anchor"
        )


if __name__ == "__main__":
    main()
