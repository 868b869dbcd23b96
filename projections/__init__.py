"""fieldstream: projections."""
