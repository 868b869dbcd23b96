"""Work done ahead on another core: the time fields of destinations known in advance.

:class:`FieldPrefetch` computes :class:`eta_engine.fields.StaticField` s in a forked process,
into memory shared with this one, while this one does other work; the ETA engine's field store
then adopts them (:meth:`eta_engine.fields.FieldStore.adopt`). It lives here, not in the
engine: the engine's modules do no I/O and start no process (tests/eta_engine/test_purity.py).
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from eta_engine.fields import FieldStore, StaticField


def _cores() -> int:
    """The CPU cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


class FieldPrefetch:
    """The static fields of destinations known ahead of time (the sites of a trace file's
    trips), computed by a forked process into memory shared with this one, while this one
    does other work (reading the trips, appending their events to the log); then
    :meth:`FieldStore.adopt`-ed by the engine that will need them. A field depends only on
    the graph and its destination, so where it was computed cannot change an output."""

    def __init__(self, dsts: list[int], pid: int | None, arrays: tuple[Any, Any] | None) -> None:
        self.dsts = dsts
        self._pid = pid
        self._arrays = arrays

    @classmethod
    def start(cls, store: FieldStore, dsts: Sequence[int]) -> FieldPrefetch:
        """Start computing the fields to ``dsts`` (duplicates and any beyond the store's
        bound dropped); without ``os.fork`` or a second core, nothing is computed ahead."""
        wanted = list(dict.fromkeys(int(d) for d in dsts))[: store.max_fields]
        if not wanted or not hasattr(os, "fork") or _cores() < 2:
            return cls([], None, None)  # no fork, or no other core to compute them on
        n = store.graph.n_nodes
        # Anonymous shared memory: what the child writes, this process reads.
        buffer = mmap.mmap(-1, len(wanted) * n * 8)
        seconds = np.frombuffer(buffer, np.float32, len(wanted) * n).reshape(len(wanted), n)
        next_edge = np.frombuffer(
            buffer, np.int32, len(wanted) * n, offset=len(wanted) * n * 4
        ).reshape(len(wanted), n)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: compute, write, leave at once (nothing of ours to clean up)
            code = 1
            try:
                for i, dst in enumerate(wanted):
                    computed = store._compute_static(dst)
                    seconds[i] = computed.seconds
                    next_edge[i] = computed.next_edge
                code = 0
            finally:
                os._exit(code)
        return cls(wanted, pid, (seconds, next_edge))

    def result(self) -> list[StaticField]:
        """The fields, once the child is done (none if it failed: they are then computed on
        demand, as without a prefetch)."""
        if self._pid is None or self._arrays is None:
            return []
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        seconds, next_edge = self._arrays
        self._arrays = None
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return []
        seconds.setflags(write=False)
        next_edge.setflags(write=False)
        return [StaticField(dst, seconds[i], next_edge[i]) for i, dst in enumerate(self.dsts)]
