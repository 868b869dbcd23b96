"""Work done ahead on another core: the time fields of destinations known in advance.

:class:`Forked` fills arrays in a forked process, in memory shared with this one.
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


class Forked:
    """Arrays filled by a forked process, in anonymous memory shared with this one."""

    def __init__(self, pid: int | None, arrays: list[Any]) -> None:
        self._pid = pid
        self._arrays = arrays

    @classmethod
    def start(cls, shapes: Sequence[tuple[tuple[int, ...], Any]], fill: Any) -> Forked:
        """Fork a process that calls ``fill(*arrays)`` on zeroed arrays of ``shapes`` ((shape,
        dtype) each) and exits; without ``os.fork`` or a second core, none is started."""
        if not hasattr(os, "fork") or _cores() < 2:
            return cls(None, [])  # no fork, or no other core to compute on
        sizes = [int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in shapes]
        buffer = mmap.mmap(-1, max(1, sum(sizes)))
        arrays: list[Any] = []
        at = 0
        for (shape, dtype), size in zip(shapes, sizes, strict=True):
            count = int(np.prod(shape))
            arrays.append(np.frombuffer(buffer, dtype, count, offset=at).reshape(shape))
            at += size
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: compute, write, leave at once (nothing of ours to clean up)
            code = 1
            try:
                fill(*arrays)
                code = 0
            finally:
                os._exit(code)
        return cls(pid, arrays)

    def result(self) -> list[Any] | None:
        """The arrays (read-only), once the child is done; None if none was started or it
        failed."""
        if self._pid is None:
            return None
        _, status = os.waitpid(self._pid, 0)
        self._pid = None
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return None
        for array in self._arrays:
            array.setflags(write=False)
        return self._arrays


class FieldPrefetch:
    """The static fields of destinations known ahead of time (the sites of a trace file's
    trips), computed by a forked process into memory shared with this one, while this one
    does other work (reading the trips, appending their events to the log); then
    :meth:`FieldStore.adopt`-ed by the engine that will need them. A field depends only on
    the graph and its destination, so where it was computed cannot change an output."""

    def __init__(self, dsts: list[int], forked: Forked) -> None:
        self.dsts = dsts
        self._forked = forked

    @classmethod
    def start(cls, store: FieldStore, dsts: Sequence[int]) -> FieldPrefetch:
        """Start computing the fields to ``dsts`` (duplicates and any beyond the store's
        bound dropped); without ``os.fork`` or a second core, nothing is computed ahead."""
        wanted = list(dict.fromkeys(int(d) for d in dsts))[: store.max_fields]
        if not wanted:
            return cls([], Forked(None, []))
        n = store.graph.n_nodes

        def fill(seconds: Any, next_edge: Any) -> None:
            for i, dst in enumerate(wanted):
                computed = store._compute_static(dst)
                seconds[i] = computed.seconds
                next_edge[i] = computed.next_edge

        shapes = [((len(wanted), n), np.float32), ((len(wanted), n), np.int32)]
        return cls(wanted, Forked.start(shapes, fill))

    def result(self) -> list[StaticField]:
        """The fields, once the child is done (none if it failed: they are then computed on
        demand, as without a prefetch)."""
        arrays = self._forked.result()
        if arrays is None:
            return []
        seconds, next_edge = arrays
        return [StaticField(dst, seconds[i], next_edge[i]) for i, dst in enumerate(self.dsts)]
