"""One replay run: manifest -> plan -> paced sends -> acknowledged count and resume point.

Order of work: read and check the manifest, plan, validate every planned row
against the contract (all before touching Kafka, so bad input sends nothing),
create the topic, connect, then send. SIGINT/SIGTERM stop the sending; what is
in flight is flushed and the report names the last record of the acknowledged
prefix, so ``--start-after`` that point resumes with no gap.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ipsp.config import Settings
from ipsp.contracts import format_time
from ipsp.producer.broker import ProducerTuning, ensure_topic, open_producer, partition_for, topic_partitions
from ipsp.producer.delivery import DeliveryWindow
from ipsp.producer.encode import MillisFormatter, build_templates, check_replay_id
from ipsp.producer.manifest import load_manifest
from ipsp.producer.pacing import Pacer, Pacing
from ipsp.producer.plan import EventClock, ReplayPlan, ResumePoint, make_plan

#: how often the progress bar is refreshed while sending (seconds)
PROGRESS_EVERY_S = 0.25
#: the window's per-send deadline = the client's delivery timeout + this
DEADLINE_MARGIN_S = 5.0


@dataclass
class ReplayOptions:
    """Everything one replay needs besides the settings (the CLI flags, parsed)."""

    manifest: str
    topic: str
    pacing: Pacing
    partitions: int
    frame_interval_s: float = 1.0
    loops: int = 1
    cameras: list[str] | None = None
    limit: int | None = None
    start_after: ResumePoint | None = None
    replay_id: str | None = None
    event_start: datetime | None = None
    max_in_flight: int = 10_000
    tuning: ProducerTuning = field(default_factory=ProducerTuning)
    quiet: bool = False


@dataclass
class ReplayReport:
    """What a run did; ``sent`` counts only records the broker acknowledged."""

    manifest: str
    topic: str
    partitions: int
    replay_id: str
    event_start: str
    pacing: str
    planned: int | None
    sent: int = 0
    failed: int = 0
    acked_after_failure: int = 0
    elapsed_s: float = 0.0
    rate_msg_s: float = 0.0
    send_rate_msg_s: float = 0.0
    cpu_s: float = 0.0  # process CPU seconds while sending (all threads)
    resume_point: str | None = None
    complete: bool = False
    stopped_by: str | None = None
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def resume_flags(self) -> str:
        """Flags that continue this replay exactly where it stopped (same selection, clock and id)."""
        flags = [f"--replay-id {self.replay_id}", f"--event-start {self.event_start}"]
        if self.options.get("cameras"):
            flags.append(f"--cameras {','.join(self.options['cameras'])}")
        if self.options.get("loops", 1) != 1:
            flags.append(f"--loop {self.options['loops']}")
        if self.options.get("frame_interval_s", 1.0) != 1.0:
            flags.append(f"--frame-interval {self.options['frame_interval_s']:g}")
        if self.resume_point:
            flags.append(f"--start-after {self.resume_point}")
        return " ".join(flags)

    def summary(self) -> str:
        """One line: sent, failed, elapsed, achieved rate, and where the run ended."""
        planned = "endless" if self.planned is None else str(self.planned)
        line = (
            f"sent {self.sent} of {planned} to {self.topic} (failed {self.failed}) "
            f"in {self.elapsed_s:.2f} s, {self.rate_msg_s:.1f} msg/s; replay_id {self.replay_id}"
        )
        if self.resume_point:
            line += f"; last acknowledged {self.resume_point}"
        if not self.complete:
            line += f"; resume with: {self.resume_flags()}"
            if self.acked_after_failure:
                line += f" ({self.acked_after_failure} acknowledged after the first failure will repeat)"
        return line

    def to_json(self) -> str:
        """The report as JSON (``--report``)."""
        return json.dumps(asdict(self), indent=2, default=str)


class StopRequest:
    """Set by SIGINT/SIGTERM: the run stops sending, flushes and reports."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            # a second signal means "now": give up flushing
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name


@contextmanager
def catch_stop_signals(stop: StopRequest) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``stop`` while sending (main thread only)."""
    previous: dict[signal.Signals, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
    except ValueError:
        pass  # not the main thread (embedded use): the caller handles interruption itself
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def default_replay_id(now: datetime) -> str:
    """``replay-<UTC time>-<random>``: unique per run, readable in the data."""
    return f"replay-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def produce(options: ReplayOptions, settings: Settings) -> ReplayReport:
    """Run one replay and return its report (bad input raises UserError before anything is sent)."""
    uri, frames = load_manifest(options.manifest, settings)
    plan = make_plan(frames, options.cameras, options.loops, options.start_after, options.limit)
    replay_id = check_replay_id(options.replay_id or default_replay_id(datetime.now(UTC)))
    templates = build_templates(plan.frames, replay_id)
    clock = EventClock.anchored(options.event_start, options.frame_interval_s, plan.first_tick(), datetime.now(UTC))
    report = ReplayReport(
        manifest=uri,
        topic=options.topic,
        partitions=0,
        replay_id=replay_id,
        event_start=format_time(clock.at(0)),
        pacing=options.pacing.describe(len(plan.cameras)),
        planned=plan.total,
        resume_point=str(options.start_after) if options.start_after else None,
        options={
            "loops": options.loops,
            "cameras": options.cameras,
            "limit": options.limit,
            "frame_interval_s": options.frame_interval_s,
        },
    )
    if plan.total == 0:
        report.complete = True
        return report
    topic = ensure_topic(settings.kafka_bootstrap, options.topic, options.partitions, options.tuning.connect_timeout_s)
    report.partitions = topic.partitions
    producer = open_producer(settings.kafka_bootstrap, options.tuning)
    try:
        partitions = topic_partitions(producer, options.topic)
        report.partitions = len(partitions)
        sender = Sender(producer, options, plan, templates, clock, partitions)
        sender.run(report)
    finally:
        _close(producer, failed=report.error is not None)
    return report


def _close(producer: Any, failed: bool) -> None:
    """Close the producer; after a failure, drop what it still holds (already counted as failed)."""
    from kafka.errors import KafkaError

    try:
        # a record counted as failed must not slip out later when the broker returns: no grace time
        producer.close(timeout=0 if failed else 5)
    except KafkaError:
        # kafka-python's close() flushes first and raises when the broker is gone, before it
        # force-closes its I/O thread (which aborts the held records); finish that part here
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(5)
        producer._closed = True


class EventText:
    """Event time of a tick as contract text; consecutive messages mostly share a tick."""

    __slots__ = ("_clock", "_format", "_text", "_tick")

    def __init__(self, clock: EventClock) -> None:
        self._clock = clock
        self._format = MillisFormatter()
        self._tick = -1
        self._text = b""

    def __call__(self, tick: int) -> bytes:
        if tick != self._tick:
            self._tick = tick
            self._text = self._format(self._clock.ms(tick))
        return self._text


class Sender:
    """The send loop: pacing, the in-flight window, progress, stop requests."""

    def __init__(
        self,
        producer: Any,
        options: ReplayOptions,
        plan: ReplayPlan,
        templates: list[Any],
        clock: EventClock,
        partitions: list[int],
    ) -> None:
        self.producer = producer
        self.options = options
        self.plan = plan
        self.templates = templates
        self.clock = clock
        keys = {camera: camera.encode() for camera in plan.cameras}
        self.keys = [keys[f.camera_id] for f in plan.frames]
        where = {camera: partition_for(key, partitions) for camera, key in keys.items()}
        self.partitions = [where[f.camera_id] for f in plan.frames]
        # kafka-python should decide a send within its delivery timeout; the window's own,
        # slightly later deadline covers the case where it does not (see delivery.py)
        self.window = DeliveryWindow(options.max_in_flight, options.tuning.delivery_timeout_s + DEADLINE_MARGIN_S)
        self.stop = StopRequest()

    def run(self, report: ReplayReport) -> None:
        """Send the plan, then settle every future and fill in the report."""
        from kafka.errors import KafkaError

        pacer = Pacer(self.options.pacing, self.plan.first_tick())
        paced = self.options.pacing.mode != "none"
        progress = _progress(self.plan.total, self.options.quiet)
        window = self.window
        send = self.producer.send
        topic = self.options.topic
        produced_text = MillisFormatter()
        event_text = EventText(self.clock)
        # per frame, everything a send needs, looked up once per message
        parts = [
            (t.head, t.middle, t.tail, key, partition)
            for t, key, partition in zip(self.templates, self.keys, self.partitions, strict=True)
        ]
        join = b"".join
        stop = self.stop
        shown = 0

        def idle() -> bool:
            nonlocal shown
            window.poll()
            shown = _show(progress, window, shown)
            return stop.signal_name is not None or window.first_failed is not None

        calls = 0
        first_send = last_send = next_show = 0.0
        with catch_stop_signals(stop):
            cpu0 = time.process_time()
            start = pacer.start()
            for flat, _loop, tick, i in self.plan.sends():
                if stop.signal_name is not None or window.first_failed is not None:
                    break
                if paced and not pacer.wait(calls, tick, idle):
                    break
                head, middle, tail, key, partition = parts[i]
                now_ms = time.time_ns() // 1_000_000
                value = join((head, event_text(tick), middle, produced_text(now_ms), tail))
                try:
                    future = send(topic, value=value, key=key, partition=partition, timestamp_ms=now_ms)
                except KafkaError as exc:
                    window.fail_unsent(flat, exc)
                    break
                last_send = time.perf_counter()
                if calls == 0:
                    first_send = last_send
                calls += 1
                window.add(flat, future)
                window.poll()
                while window.full and window.first_failed is None:
                    window.wait_oldest()
                    window.poll()
                if last_send >= next_show:
                    shown = _show(progress, window, shown)
                    next_show = last_send + PROGRESS_EVERY_S
            self._settle(report)
            report.cpu_s = time.process_time() - cpu0
        shown = _show(progress, window, shown)
        progress.close()
        end = time.perf_counter()
        self._fill(report, start if calls == 0 else first_send, end, calls, first_send, last_send)

    def _settle(self, report: ReplayReport) -> None:
        """Flush what kafka-python still buffers and decide every outstanding future."""
        from kafka.errors import KafkaError

        if self.window.first_failed is None:
            with suppress(KafkaError):  # the futures below carry the per-record outcome
                self.producer.flush(timeout=self.window.time_left())
        self.window.drain()

    def _fill(
        self, report: ReplayReport, began: float, end: float, calls: int, first_send: float, last_send: float
    ) -> None:
        window = self.window
        report.sent = window.acked
        report.failed = window.failed
        report.acked_after_failure = window.acked_after_failure
        report.elapsed_s = max(0.0, end - began)
        report.rate_msg_s = window.acked / report.elapsed_s if report.elapsed_s > 0 else 0.0
        if calls > 1 and last_send > first_send:
            report.send_rate_msg_s = (calls - 1) / (last_send - first_send)
        if window.prefix_end is not None:
            report.resume_point = str(self.plan.resume_point(window.prefix_end))
        report.stopped_by = self.stop.signal_name
        if window.first_error is not None:
            failed_at = self.plan.resume_point(window.first_failed or 0)
            report.error = f"Kafka delivery failed at {failed_at}: {_one_line(window.first_error)}"
        planned = self.plan.total
        report.complete = (
            report.error is None and report.stopped_by is None and planned is not None and report.sent == planned
        )


def _progress(total: int | None, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="msg",
        desc="produce",
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=PROGRESS_EVERY_S,
        smoothing=0.1,
    )


def _show(progress: Any, window: DeliveryWindow, shown: int) -> int:
    done = window.acked + window.failed
    if done > shown:
        progress.update(done - shown)
        if window.failed:
            progress.set_postfix(failed=window.failed, refresh=False)
    return done


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def write_report(report: ReplayReport, path: Path) -> None:
    """Write the JSON report (for scripts and the benchmark)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json() + "\n")
