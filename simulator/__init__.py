"""fieldstream: simulator."""
