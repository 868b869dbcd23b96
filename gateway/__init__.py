"""fieldstream: gateway."""
