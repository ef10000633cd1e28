"""Benchmarks: `python -m worker.bench.replay_bench` (offline replay) and `python -m worker bench` (Kafka)."""
