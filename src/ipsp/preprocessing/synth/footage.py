"""The footage feed (the default): each camera plays a fetched road clip through its own view."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ipsp.preprocessing.synth.scene import Scene, Source, apply_luts, colour_luts, view_matrix


def footage_sources(clips: list[Path]) -> list[Source]:
    """One source per fetched road clip (``ipsp.preprocessing.footage``)."""
    return [Source(f"otvision:{clip.name}", (0.0, 0.0, 1.0, 1.0), None, str(clip)) for clip in clips]


def build_footage_scene(sources: list[Source], seed: int, camera_no: int, width: int, height: int) -> Scene:
    """Camera ``camera_no`` of the footage feed: which clip, from which frame, through which view."""
    from ipsp.preprocessing.footage import clip_frames

    rng = np.random.default_rng([seed, camera_no, 1])
    clips = [s for s in sources if s.clip]
    source = clips[(camera_no - 1) % len(clips)]
    assert source.clip is not None
    frames = clip_frames(Path(source.clip))
    src_h, src_w = frames[0].shape[:2]
    # gentle zoom: the road must stay in view and vehicles must not get too small
    matrix = view_matrix(src_w, src_h, rng, width, height, max_zoom=1.3, max_tilt=2.0, max_drop=0.15)
    luts = colour_luts(rng)
    sigma = float(rng.uniform(2.0, 4.0))
    noise = np.random.default_rng([seed, camera_no, 2]).normal(0.0, sigma, (height + 64, width, 3))
    return Scene(
        camera_no=camera_no,
        base=np.zeros((0, 0, 3), np.uint8),
        noise_pos=np.clip(noise, 0, 255).astype(np.uint8),
        noise_neg=np.clip(-noise, 0, 255).astype(np.uint8),
        sprites=[],
        light_amp=float(rng.uniform(0.03, 0.10)),
        light_period=float(rng.uniform(200, 900)),
        light_phase=float(rng.uniform(0, 2 * np.pi)),
        label=f"CAM {camera_no:02d}",
        clip=source.clip,
        matrix=matrix,
        luts=luts,
        start=int(rng.integers(0, len(frames))),
    )


def clip_index(start: int, frame_index: int, length: int) -> int:
    """Clip frame shown at a camera's ``frame_index``: forward from ``start``, bouncing at both ends."""
    if length <= 1:
        return 0
    period = 2 * (length - 1)
    pos = (start + frame_index) % period
    return pos if pos < length else period - pos


def footage_frame(scene: Scene, frame_index: int, dx: int, dy: int, width: int, height: int) -> np.ndarray:
    """The clip frame this camera shows now, through its view (shifted by the shake) and colours."""
    import cv2

    from ipsp.preprocessing.footage import clip_frames

    assert scene.clip is not None and scene.matrix is not None and scene.luts is not None
    frames = clip_frames(Path(scene.clip))
    source = frames[clip_index(scene.start, frame_index, len(frames))]
    matrix = scene.matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([dx, dy], np.float64)  # the shake moves the view
    view = cv2.warpAffine(
        source, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    return apply_luts(view, scene.luts)
