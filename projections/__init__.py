"""fieldstream: projections.

The KPI tables field-service managers live by, and the live-tracking view, folded from the
log and kept in SQLite (default) or PostgreSQL, exactly once: each batch's rows and the
offsets after it are written in one transaction.

* :mod:`projections.kpis`: the KPI catalog (docs/kpis.md is its prose) and the incremental
  bookkeeping behind the KPI table.
* :mod:`projections.fold`: :class:`Projection`, the pure fold from records to rows, over the
  state of :mod:`projections.state` (entities in :mod:`projections.model`); the KPI subjects
  are in :mod:`projections.subjects`, the visit facts and live rows in
  :mod:`projections.views`.
* :mod:`projections.tracks`: GPS tracks and the odometer the travel KPIs read;
  :mod:`projections.etas`: the ETA points the accuracy KPIs read.

The I/O lives in streams/ (only streams/ and gateway/ touch databases): the SQLite and
PostgreSQL stores in :mod:`streams.projection_store`, the stage the pipeline runs in
:mod:`streams.projection_stage`.
"""

from projections.fold import Projection
from projections.kpis import DIMENSIONS, HEADLINE, METRIC_BY_NAME, METRICS
from projections.state import Settings

__all__ = [
    "DIMENSIONS",
    "HEADLINE",
    "METRICS",
    "METRIC_BY_NAME",
    "Projection",
    "Settings",
]
