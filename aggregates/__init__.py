"""fieldstream: aggregates."""
