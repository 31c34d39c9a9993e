"""One frame of either feed: the camera's scene, then light drift, sensor noise and a label; JPEG bytes."""

from __future__ import annotations

import numpy as np

from ipsp.preprocessing.synth.footage import build_footage_scene, footage_frame
from ipsp.preprocessing.synth.photos import build_photo_scene, paste_sprite, photo_frame
from ipsp.preprocessing.synth.scene import Scene, Source


def build_scene(sources: list[Source], seed: int, camera_no: int, width: int, height: int) -> Scene:
    """The fixed part of camera ``camera_no``: viewpoint, colour, noise bank, traffic lanes."""
    if any(s.clip for s in sources):
        return build_footage_scene(sources, seed, camera_no, width, height)
    return build_photo_scene(sources, seed, camera_no, width, height)


def render_frame(scene: Scene, seed: int, frame_index: int, width: int, height: int) -> np.ndarray:
    """Frame ``frame_index`` of a scene as a BGR image."""
    import cv2

    rng = np.random.default_rng([seed, scene.camera_no, 3, frame_index])
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    if scene.clip is not None:
        frame = footage_frame(scene, frame_index, dx, dy, width, height)
    else:
        frame = photo_frame(scene, dx, dy, width, height)
    for sprite in scene.sprites:
        paste_sprite(frame, sprite, frame_index)
    light = 1.0 + scene.light_amp * np.sin(2 * np.pi * frame_index / scene.light_period + scene.light_phase)
    light += float(rng.normal(0.0, 0.01))
    frame = cv2.convertScaleAbs(frame, alpha=light, beta=0.0)
    row = int(rng.integers(0, scene.noise_pos.shape[0] - height))
    frame = cv2.add(frame, scene.noise_pos[row : row + height])
    frame = cv2.subtract(frame, scene.noise_neg[row : row + height])
    text = f"{scene.label}  #{frame_index:05d}"
    cv2.putText(frame, text, (24, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, (24, 44), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return frame


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG bytes (OpenCV's libjpeg-turbo, deterministic for a given build)."""
    import cv2

    ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()
