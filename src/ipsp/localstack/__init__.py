"""The single-machine stack: real Kafka, FerretDB and an S3 server on loopback.

Nothing here is a mock. ``ipsp stack fetch`` resolves the servers (Maven Central
jars, a Go build), ``ipsp stack up`` starts them as background processes with
their data and logs under ``<home>/stack/``, and ``ipsp stack down`` stops exactly
what ``up`` started. See ``1_infrastructure/local/README.md``.
"""

from __future__ import annotations

from ipsp.localstack.layout import StackLayout
from ipsp.localstack.stack import StackStatus, down, status, up

__all__ = ["StackLayout", "StackStatus", "down", "status", "up"]
