"""The cyclic garbage collector's policy for the stages' batches (see
:func:`collector_paused`)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

FULL_COLLECTION_EVERY_S = 600.0
"""Seconds between two full collections of the cyclic garbage collector, at most (see
:func:`collector_paused`)."""


class _Collections:
    last_full = time.monotonic()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector for the duration of one batch, and keep it
    off the long-lived state between batches.

    A batch allocates hundreds of thousands of short-lived objects (records, fixes, rows,
    events). With the collector on, every 700 of them trigger a collection, and every so
    often one that traverses the whole state of the stages (aggregates, projections), which
    is large and long-lived: a third of a projection rebuild's time went there. The stages
    create no reference cycles that need collecting promptly (their state is trees of
    dicts, lists, tuples and dataclasses), so the collector runs once after the batch
    instead. What survives the batch is then frozen (``gc.freeze``: left out of every later
    collection), or the collections after the batches still traverse the whole state,
    which grows with the days kept: on a simulated week of 500 technicians that was a
    quarter of the projection's time. Once every
    :data:`FULL_COLLECTION_EVERY_S` everything is unfrozen and collected, so cyclic garbage
    from other parts of the process (the event loop's, say) does not pile up. Left alone if
    the caller already disabled the collector.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        now = time.monotonic()
        if now - _Collections.last_full >= FULL_COLLECTION_EVERY_S:
            _Collections.last_full = now
            gc.unfreeze()
            gc.collect()
        gc.freeze()
        gc.enable()
