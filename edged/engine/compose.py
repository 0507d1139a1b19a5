"""Composition: layers with alpha in regions of a display, and transitions between frames. All numpy."""

from __future__ import annotations

import numpy as np


class Canvas:
    """A display-sized RGB frame that layers are drawn onto, bottom to top. Reused across frames."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rgb = np.zeros((height, width, 3), dtype=np.uint8)
        self._acc = np.zeros((height, width, 3), dtype=np.uint16)

    def clear(self) -> None:
        self.rgb.fill(0)

    def draw(self, frame: np.ndarray, x: int = 0, y: int = 0, opacity: float = 1.0) -> None:
        """Draw an RGB or RGBA frame with its top-left at (x, y); RGBA alpha and ``opacity`` blend it over what
        is already there. Parts outside the canvas are clipped."""
        h, w = frame.shape[:2]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        src = frame[y0 - y : y1 - y, x0 - x : x1 - x]
        dst = self.rgb[y0:y1, x0:x1]
        if src.shape[2] == 3 and opacity >= 1.0:
            dst[...] = src
            return
        alpha: np.ndarray  # uint16: the products below stay within it (numpy keeps the array's type)
        if src.shape[2] == 4:
            alpha = src[..., 3:4].astype(np.uint16)
            if opacity < 1.0:
                alpha = (alpha * int(opacity * 256)) >> 8
        else:
            alpha = np.full((y1 - y0, x1 - x0, 1), int(opacity * 255 + 0.5), dtype=np.uint16)
        acc = self._acc[y0:y1, x0:x1]
        np.multiply(src[..., :3], alpha, out=acc, dtype=np.uint16)
        acc += dst.astype(np.uint16) * (255 - alpha)
        acc += 127
        acc //= 255
        dst[...] = acc


def crossfade(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Blend from ``a`` (t=0) to ``b`` (t=1); both RGB, same shape."""
    t = min(max(t, 0.0), 1.0)
    w = int(t * 256)
    return ((a.astype(np.uint16) * (256 - w) + b.astype(np.uint16) * w) >> 8).astype(np.uint8)
