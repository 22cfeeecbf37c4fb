"""Benchmark harness: baseline relay, load generator and orchestrator (see benchmarks/README.md)."""
