"""fieldstream: eta_engine."""
