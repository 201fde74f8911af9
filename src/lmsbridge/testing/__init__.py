"""Public fakes, stand-in servers and helpers for tests, the demo and benchmarks."""
