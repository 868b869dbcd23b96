"""The time fields of destinations computed ahead on another core (streams/prefetch.py): the
same as computed here, adopted by a field store, none where they cannot be made."""

from __future__ import annotations

import numpy as np
import pytest

from eta_engine.fields import FieldStore
from eta_engine.roads import RoadGraph
from streams import prefetch
from streams.prefetch import FieldPrefetch
from tests.support import graph as default_graph


@pytest.fixture(scope="module")
def graph() -> RoadGraph:
    return default_graph()


def _nodes(graph: RoadGraph, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(0, graph.n_nodes, n)]


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefetch is made only with a core to spare: these tests make one on any machine."""
    monkeypatch.setattr(prefetch, "_cores", lambda: 2)


@pytest.mark.usefixtures("two_cores")
def test_prefetched_fields_are_the_ones_computed_here(graph: RoadGraph) -> None:
    nodes = _nodes(graph, 5, seed=11)
    prefetch = FieldPrefetch.start(FieldStore(graph), [*nodes, nodes[0]])  # a repeat
    fields = prefetch.result()
    assert [f.dst for f in fields] == nodes
    here = FieldStore(graph)
    for found in fields:
        computed = here.static(found.dst)
        np.testing.assert_array_equal(found.seconds, computed.seconds)
        np.testing.assert_array_equal(found.next_edge, computed.next_edge)
        assert not found.seconds.flags.writeable
    # Adopted, they are what the store serves (not computed again), its bound kept.
    store = FieldStore(graph, max_fields=3)
    store.adopt(fields)
    assert len(store._static) == 3
    assert store.static(nodes[-1]) is fields[-1]
    leg = store.leg(nodes[0], nodes[-1])
    assert leg.edges.tolist() == here.leg(nodes[0], nodes[-1]).edges.tolist()


@pytest.mark.usefixtures("two_cores")
def test_a_prefetch_that_fails_gives_nothing(graph: RoadGraph) -> None:
    prefetch = FieldPrefetch.start(FieldStore(graph), [graph.n_nodes + 5])  # no such node
    assert prefetch.result() == []


def test_no_prefetch_without_a_core_to_spare(
    graph: RoadGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "_cores", lambda: 1)
    assert FieldPrefetch.start(FieldStore(graph), [1, 2]).result() == []
