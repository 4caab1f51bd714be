"""Benchmarks of the tradeserve services (not part of ``make test``; see bench/README.md)."""
