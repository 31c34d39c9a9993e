"""Stage 2, plan (driver): duplicates set aside, frames assigned to shards, manifest rows fixed."""

from __future__ import annotations

import time
from typing import Any

from ipsp.contracts import ManifestRow, Reject
from ipsp.errors import UserError
from ipsp.preprocessing.manifest import MANIFEST_NAME, SHARDS_PREFIX, SUMMARY_NAME, PackSummary, read_manifest
from ipsp.preprocessing.pack.inputs import READ_THREADS, InputFile
from ipsp.preprocessing.pack.options import PackOptions
from ipsp.storage.shards import PlannedFrame, ShardPlan


def accepted(
    named: list[tuple[InputFile, Any]], inspected: list[dict[str, Any]], rejects: list[Reject]
) -> list[PlannedFrame]:
    """The named files that passed inspection, as frames to plan; the others become rejects."""
    by_rel = {r["rel"]: r for r in inspected}
    frames = []
    for item, name in named:
        result = by_rel[item.rel]
        if "reason" in result:
            rejects.append(Reject(file=item.rel, reason=result["reason"], detail=result.get("detail", "")))
            continue
        frames.append(
            PlannedFrame(
                record_key=name.record_key,
                camera_id=name.camera_id,
                frame_index=name.frame_index,
                source=item.rel,
                bytes=result["bytes"],
                sha256=result["sha256"],
                width=result["width"],
                height=result["height"],
                format=result["format"],
            )
        )
    return frames


def drop_duplicates(frames: list[PlannedFrame], rejects: list[Reject]) -> list[PlannedFrame]:
    """Keep the first frame (camera, frame order) of each sha256; report the others."""
    kept: dict[str, PlannedFrame] = {}
    unique = []
    for frame in sorted(frames, key=lambda f: (f.camera_id, f.frame_index, f.record_key)):
        first = kept.get(frame.sha256)
        if first is not None:
            rejects.append(
                Reject(
                    file=frame.source,
                    reason="duplicate",
                    duplicate_of=first.source,
                    detail=f"same bytes as {first.record_key} (sha256 {frame.sha256[:12]}...)",
                )
            )
            continue
        kept[frame.sha256] = frame
        unique.append(frame)
    return unique


def manifest_rows(plans: list[ShardPlan], store: Any) -> list[ManifestRow]:
    """One manifest row per planned frame, pointing at its shard on the store."""
    rows = []
    for plan in plans:
        uri = store.uri(plan.key)
        for f in plan.frames:
            rows.append(
                ManifestRow(
                    record_key=f.record_key,
                    camera_id=f.camera_id,
                    frame_index=f.frame_index,
                    shard_uri=uri,
                    key=f.record_key,
                    width=f.width,
                    height=f.height,
                    format=f.format,
                    bytes=f.bytes,
                    sha256=f.sha256,  # type: ignore[arg-type]
                )
            )
    return rows


def refuse_conflicts(store: Any, dataset_uri: str, plans: list[ShardPlan], manifest: bytes) -> None:
    """Stop before writing anything when the target already holds a different dataset."""
    hint = "choose another --to location or delete the old dataset first"
    if store.exists(MANIFEST_NAME):
        old = store.get(MANIFEST_NAME)
        if old != manifest:
            try:
                same = read_manifest(old) == read_manifest(manifest)
            except Exception:
                same = False
            if not same:
                raise UserError(f"{dataset_uri} already holds a different dataset (manifest differs); {hint}")
    planned = {plan.key for plan in plans}
    stray = [info.key for info in store.list(SHARDS_PREFIX) if info.key not in planned]
    if stray:
        raise UserError(
            f"{dataset_uri} holds {len(stray)} shard(s) this input would not produce (e.g. {stray[0]}); {hint}"
        )


def verified_in_place(store: Any, plans: list[ShardPlan], manifest: bytes, options: PackOptions) -> dict[str, Any]:
    """Shards that need no Spark task: the store's manifest and ``pack.json`` describe exactly these.

    Only when the stored manifest equals the one just planned (every frame's
    sha256 in its shard) and ``pack.json`` was written with the same options.
    Each shard is then checked against the size and sha256 recorded for it: a
    ``file://`` shard is hashed where it lies; an ``s3://`` one is checked by its
    size (downloading every shard to hash it would cost as much as the pack).
    Anything else goes to the write stage, which compares contents key by key.
    """
    from ipsp.storage import ObjectNotFound, sha256_file
    from ipsp.storage.local import LocalStore

    try:
        if store.get(MANIFEST_NAME) != manifest:
            return {}
        summary = PackSummary.from_bytes(store.get(SUMMARY_NAME))
    except Exception:  # no manifest or no summary yet, or an unreadable one
        return {}
    if summary.options != options.record():
        return {}
    recorded = {entry.uri: entry for entry in summary.shards}

    def check(plan: ShardPlan) -> tuple[str, dict[str, Any] | None]:
        entry = recorded.get(store.uri(plan.key))
        if entry is None or entry.frames != len(plan.frames) or entry.data_bytes != plan.data_bytes:
            return plan.key, None
        t0 = time.perf_counter()
        try:
            size = store.stat(plan.key).size
        except ObjectNotFound:
            return plan.key, None
        if size != entry.size:
            return plan.key, None
        if isinstance(store, LocalStore) and sha256_file(store.base / plan.key) != entry.sha256:
            return plan.key, None
        seconds = time.perf_counter() - t0
        return plan.key, {
            "key": plan.key,
            "status": "skipped",
            "detail": "",
            "size": size,
            "sha256": entry.sha256,
            "verify_s": seconds,
        }

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return {key: result for key, result in pool.map(check, plans) if result is not None}
