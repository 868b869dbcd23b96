"""Simulator throughput: one simulated day at several workforce sizes, encoded to bytes.

Usage::

    .venv/bin/python benchmarks/bench_simulator.py [--sizes 50,500,5000] [--scenario normal]
        [--hours 9] [--seed 1]

For each size it times :func:`simulator.engine.simulate` plus encoding every event
(:func:`simulator.output.records`, byte-identical to ``events.codec.encode``), i.e. everything
a CLI needs before appending to a log, and prints::

    simulate 500 technicians: N events in S s (E events/s)

followed by the split between simulating and encoding, and the encoding's anchor, timed in
the same run: the same events made one at a time (``Simulation.iter_events``) and encoded by
the codec's general encoder (``events.codec.encode``), the same bytes, over up to
``--anchor-events`` of them. The road graph is loaded, and the world derived from it, once
before the first size (that cost is printed separately).
The budget: a 5,000-technician day in under 3 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

from eta_engine.roads import RoadGraph
from events.codec import encode
from simulator.engine import simulate
from simulator.output import records
from simulator.scenarios import SCENARIOS, make_params
from simulator.world import World


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500,5000", help="comma-separated technician counts")
    parser.add_argument("--scenario", default="normal", choices=sorted(SCENARIOS))
    parser.add_argument("--hours", type=float, default=9.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--anchor-events", type=int, default=200_000, help="events the encoding anchor times"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    started = time.perf_counter()
    graph = RoadGraph.default()
    World.for_graph(graph)
    print(
        f"road graph: {graph.n_nodes} nodes, {graph.n_edges} edges, loaded and prepared in "
        f"{time.perf_counter() - started:.2f} s"
    )
    for size in sizes:
        params = make_params(args.scenario, technicians=size, seed=args.seed, hours=args.hours)
        t0 = time.perf_counter()
        sim = simulate(params, graph)
        t1 = time.perf_counter()
        count = 0
        size_bytes = 0
        for record in records(sim):
            count += 1
            size_bytes += len(record.value)
        t2 = time.perf_counter()
        total = t2 - t0
        print(
            f"simulate {size} technicians: {count} events in {total:.1f} s "
            f"({count / total:,.0f} events/s)"
        )
        print(
            f"  simulate {t1 - t0:.1f} s, encode {t2 - t1:.1f} s ({count / (t2 - t1):,.0f} "
            f"events/s); {sim.n_pings} GPS fixes, {len(sim.truth)} visits, "
            f"{sum(1 for r in sim.truth if r['late'])} late; {size_bytes / 1e6:.0f} MB of JSON"
        )
        # The anchor of the encoding: the events made one at a time and encoded with the
        # codec's general encoder (what a simulator without the fast path would do), over
        # the first events of the day, the same bytes.
        sample = min(count, args.anchor_events)
        began = time.perf_counter()
        for _, event in islice(sim.iter_events(), sample):
            encode(event)
        naive = sample / (time.perf_counter() - began)
        print(
            f"  anchor: {sample:,} events made and encoded one at a time by the codec, "
            f"{naive:,.0f} events/s; the simulator's encoder {count / (t2 - t1) / naive:.1f}x"
        )


if __name__ == "__main__":
    main()
