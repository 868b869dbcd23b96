"""fieldstream: simulator.

A deterministic day of field service on the road graph, as the events of :mod:`events.kinds`,
with its ground truth kept apart. The public API::

    from simulator import make_params, simulate, records, write_jsonl, write_truth

    sim = simulate(make_params("rush-hour", technicians=50, seed=7, hours=9), RoadGraph.default())
    for record in records(sim):  # delivery order; record.value is the encoded event
        ...
    write_jsonl(sim, "day.jsonl")
    write_truth(sim, "truth.jsonl")

Modules: :mod:`~simulator.scenarios` (presets and parameters), :mod:`~simulator.world`
(tables, parishes, routing), :mod:`~simulator.traffic` (congestion, incidents),
:mod:`~simulator.gps` (fixes), :mod:`~simulator.engine` (the day), :mod:`~simulator.output`
(encoding and writers).
"""

from simulator.engine import TRUTH_FIELDS, Simulation, simulate
from simulator.output import SimRecord, encoded_lines, records, write_jsonl, write_truth
from simulator.scenarios import SCENARIOS, Scenario, SimParams, make_params, parse_override

__all__ = [
    "SCENARIOS",
    "TRUTH_FIELDS",
    "Scenario",
    "SimParams",
    "SimRecord",
    "Simulation",
    "encoded_lines",
    "make_params",
    "parse_override",
    "records",
    "simulate",
    "write_jsonl",
    "write_truth",
]
