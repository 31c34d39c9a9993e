"""Replay producer: a packed dataset's manifest becomes a rate-controlled Kafka feed.

- ``manifest``: read and check ``manifest.parquet`` (local path, file:// or s3://).
- ``plan``: which frames go out, in what order, with which event time (pure logic).
- ``pacing``: when each message is due (absolute schedule, no drift).
- ``encode``: one contract message per frame, validated once per row, serialized cheaply.
- ``delivery``: the bounded window of unacknowledged sends, every future checked.
- ``broker``: topic creation and the kafka-python producer settings.
- ``replay``: the run itself (signals, progress bar, summary, resume point).
"""
