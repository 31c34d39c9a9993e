"""Helpers only the tests and benchmarks use (on the path through pytest's pythonpath = tests)."""
