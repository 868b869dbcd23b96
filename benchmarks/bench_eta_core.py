"""Ping updates per second through the ETA engine's vectorised core.

A synthetic shift: ``--technicians`` vans, each en route to a job at a random address with two
more jobs queued behind it, drive random walks over the Andorra graph and ping every
``--interval`` seconds for ``--minutes`` minutes. The pings are fed to
:meth:`eta_engine.engine.EtaEngine.apply` in batches of ``--batch`` (log order = time order),
and the time of those calls is measured: map-matching, field look-ups, speed learning, arrival
geofences and the re-evaluation of every touched technician's chain once per step.

    .venv/bin/python benchmarks/bench_eta_core.py --technicians 2000 --minutes 13

prints ``eta core: N ping updates in S s (R/s)``, and, timed in the same run, the anchor: the
naive way to a ping's travel time, a shortest-path search per ping (map-matched to the nearest
node, then Dijkstra to the technician's current job), with the ratio. Set-up (registrations,
shifts, assignments, first field computations) is excluded, and so are the first
``--warm-up`` minutes of pings, which compute each destination's field once.
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import numpy as np
from anchors import NaivePing, naive_eta_rate

from eta_engine.engine import EtaConfig, EtaEngine
from eta_engine.roads import RoadGraph
from events import kinds as k
from events.base import Causation, Event

T0 = 1_795_417_200_000  # 2026-11-23T07:00:00Z, 08:00 in Andorra


def _walks(graph: RoadGraph, n: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, steps)`` edge indices of random walks (each edge starts where the last ended)."""
    indptr = np.searchsorted(graph.edge_src, np.arange(graph.n_nodes + 1))
    out = np.empty((n, steps), dtype=np.int64)
    node = rng.integers(0, graph.n_nodes, n)
    for s in range(steps):
        lo, hi = indptr[node], indptr[node + 1]
        edge = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
        out[:, s] = edge
        node = graph.edge_dst[edge]
    return out


def _state(
    n: int, tech: str, wo: str, site: tuple[float, float], status: str, position: int, at: int
) -> k.WorkOrderStateChanged:
    return k.WorkOrderStateChanged(
        id=f"ws-{wo}-{status}",
        source="bench",
        time=at,
        subject=wo,
        causation=Causation(f"in-{wo}-{status}", "fs.dispatch", 0, n),
        work_order_id=wo,
        status=status,
        previous_status=None,
        trigger="bench",
        technician_id=tech,
        previous_technician_id=None,
        visit=1,
        customer_id="C-1",
        site_lat=site[0],
        site_lon=site[1],
        region="Andorra la Vella",
        job_type=("boiler_service", "leak_repair", "ac_service")[n % 3],
        priority="normal",
        window_start=T0 + (2 + 2 * position) * 3_600_000,
        window_end=T0 + (4 + 2 * position) * 3_600_000,
        queue_position=position,
        assigned_at=T0 - 900_000,
        en_route_at=T0 if status == "en_route" else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--technicians", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warm-up", type=float, default=3.0, help="minutes not timed")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed part")
    parser.add_argument(
        "--anchor-pings", type=int, default=300, help="pings the naive anchor is timed on"
    )
    args = parser.parse_args()

    graph = RoadGraph.default()
    rng = np.random.Generator(np.random.PCG64(args.seed))
    n = args.technicians
    sites = rng.integers(0, graph.n_nodes, (n, 3))
    setup: list[tuple[Event, Causation]] = []
    for i in range(n):
        tid = f"T-{i:05d}"
        home = int(rng.integers(0, graph.n_nodes))
        pos = Causation(f"reg-{i}", "fs.dispatch", 0, len(setup))
        setup.append(
            (
                k.TechnicianRegistered(
                    id=pos.id,
                    source="bench",
                    time=T0 - 3_600_000,
                    subject=tid,
                    technician_id=tid,
                    name="Bench",
                    skills=("gas", "heating"),
                    team="t",
                    region="Andorra la Vella",
                    home_lat=float(graph.node_lat[home]),
                    home_lon=float(graph.node_lon[home]),
                ),
                pos,
            )
        )
        pos = Causation(f"shift-{i}", "fs.dispatch", 0, len(setup))
        setup.append(
            (
                k.ShiftStarted(
                    id=pos.id,
                    source="bench",
                    time=T0 - 60_000,
                    subject=tid,
                    technician_id=tid,
                    van_stock={"filter": 3},
                    planned_end=T0 + 9 * 3_600_000,
                ),
                pos,
            )
        )
        for j in range(3):
            node = int(sites[i, j])
            site = (float(graph.node_lat[node]), float(graph.node_lon[node]))
            wo = f"WO-{i:05d}-{j}"
            state = _state(len(setup), tid, wo, site, "assigned", j, T0 - 900_000)
            setup.append((state, state.causation))
        wo = f"WO-{i:05d}-0"
        node = int(sites[i, 0])
        site = (float(graph.node_lat[node]), float(graph.node_lon[node]))
        state = _state(len(setup), tid, wo, site, "en_route", 0, T0)
        setup.append((state, state.causation))

    per_tech = int(args.minutes * 60 / args.interval)
    walks = _walks(graph, n, per_tech, rng)
    frac = rng.random((n, per_tech))
    src, dst = graph.edge_src[walks], graph.edge_dst[walks]
    lat = graph.node_lat[src] + frac * (graph.node_lat[dst] - graph.node_lat[src])
    lon = graph.node_lon[src] + frac * (graph.node_lon[dst] - graph.node_lon[src])
    jitter = rng.integers(0, int(args.interval * 1000), n)
    pings: list[tuple[Event, Causation]] = []
    order = np.lexsort(
        (np.arange(n)[:, None].repeat(per_tech, 1).ravel(), np.tile(np.arange(per_tech), n))
    )
    times = T0 + 1000 + jitter[:, None] + np.arange(per_tech)[None, :] * int(args.interval * 1000)
    flat_lat, flat_lon, flat_t = lat.ravel(), lon.ravel(), times.ravel()
    for idx in order.tolist():
        i = idx // per_tech
        tid = f"T-{i:05d}"
        pos = Causation(f"gps-{idx}", "fs.gps", 0, len(setup) + len(pings))
        pings.append(
            (
                k.GpsPinged(
                    id=pos.id,
                    source="bench",
                    time=int(flat_t[idx]),
                    subject=tid,
                    technician_id=tid,
                    lat=float(flat_lat[idx]),
                    lon=float(flat_lon[idx]),
                    speed_mps=12.0,
                    heading_deg=None,
                    accuracy_m=5.0,
                ),
                pos,
            )
        )
    pings.sort(key=lambda item: item[0].time)

    # The input (a quarter of a million objects) is built once and only read: keep it out of
    # the cyclic collector's way, as a long-running stage's decoded batches would be.
    gc.collect()
    gc.freeze()
    engine = EtaEngine(graph, EtaConfig())
    engine.apply(setup)
    warm = [p for p in pings if p[0].time < T0 + args.warm_up * 60_000]
    timed = pings[len(warm) :]
    engine.apply(warm)
    outputs = 0
    # The chain re-evaluations (Monte Carlo over each touched technician's queue, at most
    # once per eval_interval_s each) are timed apart: "core" is the rest of apply().
    evaluating = [0.0]
    evaluate = engine._evaluate

    def timed_evaluate(*args: Any) -> None:
        began = time.perf_counter()
        evaluate(*args)
        evaluating[0] += time.perf_counter() - began

    engine._evaluate = timed_evaluate  # type: ignore[method-assign,assignment]
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    for b in range(0, len(timed), args.batch):
        outputs += len(engine.apply(timed[b : b + args.batch]))
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
        profiler.print_stats("tottime")
    core = elapsed - evaluating[0]
    print(f"eta core: {len(timed)} ping updates in {core:.2f} s ({len(timed) / core:,.0f}/s)")
    print(
        f"  with chain evaluations: {elapsed:.2f} s ({len(timed) / elapsed:,.0f}/s); "
        f"{n} technicians, {outputs} derived events, batches of {args.batch}"
    )
    # The anchor, in the same run: a ping's travel time found the naive way, by a search per
    # ping (map-matched to the nearest node, then scipy's Dijkstra from there to the
    # technician's current job), over pings spread evenly over the timed ones.
    naive_pings: list[NaivePing] = []
    for event, _ in timed:
        assert isinstance(event, k.GpsPinged)
        site = int(sites[int(event.technician_id[2:]), 0])
        naive_pings.append(
            (event.lat, event.lon, float(graph.node_lat[site]), float(graph.node_lon[site]))
        )
    n_naive, naive = naive_eta_rate(graph, naive_pings, args.anchor_pings)
    print(
        f"naive anchor (a shortest-path search per ping): {n_naive:,} pings, "
        f"{naive:,.0f}/s; core {len(timed) / core / naive:,.0f}x, with chain evaluations "
        f"{len(timed) / elapsed / naive:,.0f}x the anchor"
    )


if __name__ == "__main__":
    main()
