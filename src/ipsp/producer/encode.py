"""One contract message per frame: validated once per row, serialized cheaply per send.

Each frame's message is built and validated as a ``FrameMessage`` once, with
placeholder times, and serialized by the model itself; the JSON is then cut
around the two placeholders. Per send only ``event_time`` and ``produced_at``
change, and both are produced here from integer milliseconds in the contract's
exact format, so a send costs two small formats and a join instead of a full
pydantic round trip (which would cap the producer far below the target rate).
The unit tests check that the result equals ``FrameMessage(...).to_json()``
byte for byte and parses back through the contract.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from ipsp.contracts import FrameMessage
from ipsp.errors import UserError
from ipsp.producer.manifest import Frame

_EVENT_PLACEHOLDER = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)
_PRODUCED_PLACEHOLDER = datetime(1970, 1, 1, 0, 0, 0, 2000, tzinfo=UTC)
_EVENT_FIELD = '"event_time":"1970-01-01T00:00:00.001Z"'
_PRODUCED_FIELD = '"produced_at":"1970-01-01T00:00:00.002Z"'

#: message field -> manifest column, so a bad row is reported in the manifest's terms
_COLUMN_OF: dict[tuple[str, ...], str] = {
    ("lmdb", "uri"): "shard_uri",
    ("lmdb", "key"): "key",
    ("frame", "width"): "width",
    ("frame", "height"): "height",
    ("frame", "format"): "format",
    ("frame", "bytes"): "bytes",
    ("frame", "sha256"): "sha256",
}


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A frame's validated message JSON, cut around its two timestamps."""

    head: bytes
    middle: bytes
    tail: bytes

    def render(self, event_time: bytes, produced_at: bytes) -> bytes:
        """The message bytes with the two RFC 3339 timestamps filled in."""
        return b"".join((self.head, event_time, self.middle, produced_at, self.tail))


def check_replay_id(replay_id: str) -> str:
    """A replay id the contract accepts (1-128 characters, no surrounding blanks)."""
    if not replay_id or len(replay_id) > 128 or replay_id != replay_id.strip():
        raise UserError(f"--replay-id {replay_id!r}: use 1-128 characters without surrounding blanks")
    return replay_id


def frame_message(frame: Frame, replay_id: str, event_time: datetime, produced_at: datetime) -> FrameMessage:
    """The contract message for a frame (full pydantic validation)."""
    return FrameMessage.model_validate(
        {
            "record_key": frame.record_key,
            "camera_id": frame.camera_id,
            "frame_index": frame.frame_index,
            "event_time": event_time,
            "lmdb": {"uri": frame.shard_uri, "key": frame.key},
            "frame": {
                "width": frame.width,
                "height": frame.height,
                "format": frame.format,
                "bytes": frame.bytes,
                "sha256": frame.sha256,
            },
            "replay_id": replay_id,
            "produced_at": produced_at,
        }
    )


def build_template(frame: Frame, replay_id: str) -> MessageTemplate:
    """Validate a frame's message against the contract and cut its JSON into a template."""
    try:
        message = frame_message(frame, replay_id, _EVENT_PLACEHOLDER, _PRODUCED_PLACEHOLDER)
    except ValidationError as exc:
        raise UserError(f"manifest row {frame.record_key!r}: {_describe(exc)}") from None
    text = message.to_json()
    # JSON escapes quotes inside strings, so the quoted field names can only match the real fields
    before, _, rest = text.partition(_EVENT_FIELD)
    between, _, after = rest.partition(_PRODUCED_FIELD)
    if not rest or not after or _EVENT_FIELD in after:
        raise RuntimeError("FrameMessage JSON layout changed: event_time must precede produced_at")
    return MessageTemplate(
        head=(before + '"event_time":"').encode(),
        middle=('"' + between + '"produced_at":"').encode(),
        tail=('"' + after).encode(),
    )


def build_templates(frames: tuple[Frame, ...] | list[Frame], replay_id: str) -> list[MessageTemplate]:
    """Templates for every frame of a plan (each row validated once)."""
    check_replay_id(replay_id)
    return [build_template(frame, replay_id) for frame in frames]


class MillisFormatter:
    """Epoch milliseconds -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` bytes, caching the per-second prefix."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, ms: int) -> bytes:
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        return self._prefix + b"%03dZ" % milli


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = tuple(str(p) for p in error["loc"])
        column = _COLUMN_OF.get(loc, ".".join(loc))
        parts.append(f"{column}: {error['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
