"""Stage 1, inspect: file names parsed on the driver, then every file read, hashed and validated in a task."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ipsp.config import Settings
from ipsp.contracts import Reject
from ipsp.preprocessing.manifest import MANIFEST_NAME, SUMMARY_NAME, PackSummary, read_manifest
from ipsp.preprocessing.pack.inputs import CpuClock, InputFile, load_input, read_ahead
from ipsp.preprocessing.pack.options import PackOptions
from ipsp.preprocessing.validate import Checks, InvalidInput, check_image, parse_name

log = logging.getLogger(__name__)

#: files per inspect task: small enough to balance and show progress, big enough to amortise a task
FILES_PER_TASK = 1000

#: at most this many decodes (or 1 in 50 files) run on the driver in a re-run, without Spark
DRIVER_DECODES = 64


#: what an earlier pack recorded about a frame that passed: sha256, width, height, format
Known = tuple[str, int, int, str]


def inspect_files(
    rows: Iterable[tuple[str, str, Known | None]], source_uri: str, checks: Checks, settings: Settings
) -> Iterator[dict[str, Any]]:
    """Read and validate files; yield one small dict per file (no pixels).

    ``rows`` are (rel, record_key, known). Each result has ``rel``, ``record_key``
    and either ``reason``/``detail`` or ``width``/``height``/``format``/``bytes``/
    ``sha256``; plus ``read_s`` (reading and hashing, in read-ahead threads) and
    ``check_s`` (decoding). When ``known`` (from the dataset's own manifest, packed
    with the same checks) has the same sha256 as the bytes just read, the earlier
    verdict stands and the decode is skipped: the same bytes under the same
    checks always get the same verdict.
    """
    cpu = CpuClock()
    for (rel, record_key, known), loaded in read_ahead(rows, lambda row: load_input(source_uri, row[0], settings)):
        out: dict[str, Any] = {"rel": rel, "record_key": record_key, "read_s": loaded.seconds, "check_s": 0.0}
        out["cpu_s"] = cpu.lap()
        if loaded.data is None:
            out.update(reason="unreadable", detail=loaded.error)
            yield out
            continue
        if known is not None and loaded.sha256 == known[0]:
            out.update(sha256=known[0], width=known[1], height=known[2], format=known[3], bytes=len(loaded.data))
            out["reused"] = True
            yield out
            continue
        started = time.perf_counter()
        try:
            checked = check_image(loaded.data, checks, sha256=loaded.sha256)
            out.update(
                width=checked.width,
                height=checked.height,
                format=checked.format,
                bytes=len(checked.data),
                sha256=checked.sha256,
            )
        except InvalidInput as exc:
            out.update(reason=exc.reason, detail=exc.detail)
        out["check_s"] = time.perf_counter() - started
        yield out


def known_frames(store: Any, options: PackOptions) -> dict[str, Known]:
    """What the dataset's own manifest says about its frames, when packed with these very options.

    Only used to skip decoding bytes that were already validated; never when
    re-encoding (the manifest then holds the digests of the new bytes).
    """
    if options.checks.reencode:
        return {}
    try:
        if not (store.exists(MANIFEST_NAME) and store.exists(SUMMARY_NAME)):
            return {}
        if PackSummary.from_bytes(store.get(SUMMARY_NAME)).options != options.record():
            return {}
        rows = read_manifest(store.get(MANIFEST_NAME))
    except Exception as exc:  # an unreadable old manifest just means a full validation
        log.info("not reusing the earlier manifest: %s", exc)
        return {}
    return {row.record_key: (row.sha256, row.width, row.height, row.format) for row in rows}


def parse_names(files: list[InputFile], pattern: Any, rejects: list[Reject]) -> list[tuple[InputFile, Any]]:
    """Files whose name parses, first of each record key; the rest become rejects."""
    named = []
    owner: dict[str, str] = {}
    for item in files:
        try:
            name = parse_name(item.rel.rsplit("/", 1)[-1], pattern)
        except InvalidInput as exc:
            rejects.append(Reject(file=item.rel, reason=exc.reason, detail=exc.detail))
            continue
        if name.record_key in owner:
            rejects.append(
                Reject(
                    file=item.rel,
                    reason="duplicate_key",
                    detail=f"record key {name.record_key!r} already taken by {owner[name.record_key]}",
                )
            )
            continue
        owner[name.record_key] = item.rel
        named.append((item, name))
    return named
