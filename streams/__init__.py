"""fieldstream: streams."""
