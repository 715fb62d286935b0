"""Throughput and latency benchmarks (not part of the test run): `python -m benchmarks.run_all`."""
