"""The stream task as a pipeline of typed stages, run in the Spark Python workers.

``parse`` (Kafka value -> :class:`~.parse.Record` or dead letter) -> ``fetch``
(shard frames, checked and decoded into batches, on a prefetch thread) ->
``analyze`` (inference -> :class:`~ipsp.contracts.AnalysisResult`) -> ``write``
(MongoDB, on a writer thread) -> one :class:`~.outcome.FrameOutcome` per Kafka
record back to the driver. :mod:`.run` chains them; :mod:`.protocols` names the
seams (reader, detector, sink).
"""
