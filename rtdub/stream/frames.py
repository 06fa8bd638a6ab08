"""Video frames between PyAV and the pipeline: decoded frames to RGB, and the dubbed RGB back
into the frame the encoder takes, converting only the region the pipeline changed.

    av.VideoFrame (I420) ─► to_rgb ─► pipeline (RGB, pasted in place) ─► with_region ─► av.VideoFrame (I420)

Both directions use OpenCV's I420 conversions (they release the GIL), so the pasted pixels make
the same round trip and every pixel outside the blended region keeps its exact input value.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

from ..render.blend import PasteRegion


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as RGB. I420 frames with even sides are converted by OpenCV, which releases
    the GIL (PyAV's converter holds it, stalling the event loop and the other workers, and
    is cached on the frame, so two threads must not use it at once); :func:`with_region`
    converts back with OpenCV's inverse, so the pasted pixels make the same round trip."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def with_region(
    frame: av.VideoFrame, image: np.ndarray, region: PasteRegion | None, changed: bool = True
) -> av.VideoFrame:
    """The output frame: ``frame`` where the pipeline left it alone, ``image`` (RGB) where
    ``region`` blended (weight > 0). The result is I420, what the encoder takes, and only the
    changed box is converted: luma is replaced where the weight is positive, chroma in the
    2×2 blocks whose four weights are positive, so every other pixel keeps its exact input
    value. ``changed`` without a region (the GPU blender pastes in place without one) gives
    the whole RGB image; an unchanged frame is returned as it is."""
    if region is None and not changed:
        return frame
    h, w = image.shape[:2]
    if region is None or frame.format.name != "yuv420p" or w % 2 or h % 2:
        out = av.VideoFrame.from_ndarray(image, format="rgb24")
    else:
        planes = frame.to_ndarray()  # (3h/2, w): Y, then U and V, each (h/2, w/2) flattened
        rh, rw = region.alpha.shape
        x0, y0 = region.x0 & ~1, region.y0 & ~1
        x1, y1 = min(w, (region.x0 + rw + 1) & ~1), min(h, (region.y0 + rh + 1) & ~1)
        if x1 > x0 and y1 > y0:
            bh, bw = y1 - y0, x1 - x0
            weight = np.zeros((bh, bw), bool)
            ry, rx = region.y0 - y0, region.x0 - x0
            sub = region.alpha[: bh - ry, : bw - rx] > 0
            weight[ry : ry + sub.shape[0], rx : rx + sub.shape[1]] = sub
            box = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2YUV_I420).ravel()
            luma = planes[:h, x0:x1][y0:y1]
            luma[weight] = box[: bh * bw].reshape(bh, bw)[weight]
            whole = weight.reshape(bh // 2, 2, bw // 2, 2).all(axis=(1, 3))
            flat = planes.ravel()
            q, bq = h * w // 4, bh * bw // 4
            for k in range(2):  # U, V
                plane = flat[h * w + k * q : h * w + (k + 1) * q].reshape(h // 2, w // 2)
                part = plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
                part[whole] = box[bh * bw + k * bq : bh * bw + (k + 1) * bq].reshape(bh // 2, bw // 2)[whole]
        out = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out
