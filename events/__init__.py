"""fieldstream: events."""
