"""The streaming processor: Kafka -> Spark Structured Streaming -> LMDB fetch -> detection -> MongoDB.

- :mod:`ipsp.streaming.task`: what runs in the Spark Python workers, as typed
  stages (parse, fetch, analyze, write) chained by :mod:`ipsp.streaming.task.run`;
- :mod:`ipsp.streaming.resources`: the per-process caches those workers reuse;
- :mod:`ipsp.streaming.windows`: window arithmetic and status, in one place;
- :mod:`ipsp.streaming.state`: folding frames into windows, closing them, the query state;
- :mod:`ipsp.streaming.sinks`: MongoDB writes (the serving documents: :mod:`ipsp.rollups.write`);
- :mod:`ipsp.streaming.job`: the query and its ``foreachBatch``; :mod:`ipsp.streaming.preflight`
  its start-up checks; :mod:`ipsp.streaming.control` stopping it and describing failures;
  :mod:`ipsp.streaming.master` the settings and task slots each kind of master needs;
  :mod:`ipsp.streaming.locality` which executor fetched which camera's shards;
- :mod:`ipsp.streaming.cli`: ``ipsp stream``.
"""
