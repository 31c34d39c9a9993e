"""The streaming processor: Kafka -> Spark Structured Streaming -> LMDB fetch -> detection -> MongoDB.

- :mod:`ipsp.streaming.process`: pure per-record logic (parse/validate, grouping,
  windows, watermark, percentiles), unit-tested alone;
- :mod:`ipsp.streaming.worker`: what runs in the Spark Python workers;
- :mod:`ipsp.streaming.resources`: the per-process caches those workers reuse;
- :mod:`ipsp.streaming.sinks`: MongoDB upserts, window recomputation, progress;
- :mod:`ipsp.streaming.job`: the query, ``foreachBatch``, checkpoint and stop handling;
- :mod:`ipsp.streaming.cli`: ``ipsp stream``.
"""
