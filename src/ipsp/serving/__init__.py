"""Serving: the read-only traffic API over MongoDB and the static HTML report.

Modules: ``params`` (parsing of query parameters, pure), ``queries`` (MongoDB
reads limited to what both MongoDB and FerretDB run, plus pure shaping helpers),
``models`` (typed response rows), ``metrics`` (Prometheus), ``app`` (the FastAPI
factory), ``report`` (``ipsp report``), ``synthetic`` (contract-valid sample
runs for tests and benchmarks) and ``cli`` (``ipsp serve`` / ``ipsp report``).
"""
