"""A bounded prefetch stage: produce the next items on one background thread while the caller uses the last.

The stream task uses it to fetch and decode the next frames while the current
batch infers (ONNX Runtime, OpenCV's decode and the object store's I/O release
the GIL, so one thread overlaps them). Guarantees:

- items come out in the order the producer made them;
- at most ``depth`` items exist ahead of the consumer (made or being made, not
  yet taken), so memory stays bounded;
- an exception in the producer is raised in the consumer, after the items made
  before it (like the writer thread's errors: the task fails and Spark retries it);
- :meth:`Prefetcher.close` stops the producer and joins its thread; call it on
  every exit path (``with`` does).

``depth=0`` runs the producer inline in the consumer, no thread: the same
items, in the same order, for turning the overlap off.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: what a producer is: given the stop event (set when the consumer closes), it yields items
Producer = Callable[[threading.Event], Iterable[T]]


class Prefetcher(Generic[T]):
    """Runs ``produce`` on one background thread, at most ``depth`` items ahead of the consumer.

    Iterate it once to take the items. ``wait_ms`` is how long the consumer
    waited for items (inline: the time it spent producing them itself).
    """

    def __init__(self, produce: Producer[T], depth: int, name: str = "ipsp-prefetch") -> None:
        if depth < 0:
            raise ValueError("depth must be >= 0")
        self.depth = depth
        self.wait_ms = 0.0
        self.stop = threading.Event()
        self._produce = produce
        self._slots = threading.Semaphore(depth)
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._inline: Iterable[T] | None = None
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        return self._take() if self._thread is not None else self._take_inline()

    def close(self) -> None:
        """Stop the producer and wait for its thread to end (its current item is dropped)."""
        self.stop.set()
        if self._thread is not None:
            self._slots.release()  # wakes a producer waiting for a free slot, so it sees the stop
            self._thread.join()
        elif self._inline is not None:
            _close(self._inline)

    @property
    def alive(self) -> bool:
        """Whether the producer thread still runs."""
        return self._thread is not None and self._thread.is_alive()

    def _take(self) -> Iterator[T]:
        while True:
            started = time.perf_counter()
            kind, value = self._queue.get()
            self.wait_ms += (time.perf_counter() - started) * 1000
            if kind == "item":
                self._slots.release()  # taken: the producer may make one more
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def _take_inline(self) -> Iterator[T]:
        self._inline = self._produce(self.stop)
        items = iter(self._inline)
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.wait_ms += (time.perf_counter() - started) * 1000
            yield item

    def _run(self) -> None:
        produced: Iterable[T] | None = None
        try:
            produced = self._produce(self.stop)
            items = iter(produced)
            while True:
                self._slots.acquire()
                if self.stop.is_set():
                    return
                try:
                    item = next(items)
                except StopIteration:
                    self._queue.put(("end", None))
                    return
                self._queue.put(("item", item))
        except BaseException as exc:  # handed to the consumer, which fails the task
            self._queue.put(("error", exc))
        finally:
            if produced is not None:
                _close(produced)


def _close(items: Iterable[Any]) -> None:
    """Close a generator early, so its ``finally`` blocks run (no-op for other iterables)."""
    close = getattr(items, "close", None)
    if close is not None:
        close()
