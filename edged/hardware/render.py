"""Renderers for emulation: what plugin authors and tests look at.

Each takes logical H×W×3 uint8 RGB images; :func:`emulated_image` gives the image the LEDs would show, from an
emulated backend's physical buffer, so brightness, gamma and the current limiter show in a preview.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image

from .backends.emulated import EmulatedBackend
from .pipeline import PixelPipeline

UPPER_HALF = "\u2580"  # ▀: the foreground paints the upper pixel, the background the lower one
_HOME, _CLEAR, _RESET = "\x1b[H", "\x1b[2J", "\x1b[0m"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def emulated_image(pipeline: PixelPipeline, backend: EmulatedBackend) -> np.ndarray | None:
    """The logical image of the backend's latest frame (``None`` before the first)."""
    latest = backend.latest()
    return None if latest is None else pipeline.inverse(latest.data)


def _check(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 image, got {frame.shape} {frame.dtype}")
    return frame


def upscale(frame: np.ndarray, scale: int, dots: bool = False) -> np.ndarray:
    """Nearest-neighbour upscaling by ``scale``; with ``dots`` each pixel becomes a round LED on black."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    big = np.repeat(np.repeat(_check(frame), scale, axis=0), scale, axis=1)
    if dots and scale >= 3:
        c = (scale - 1) / 2
        yy, xx = np.mgrid[0:scale, 0:scale]
        mask = ((yy - c) ** 2 + (xx - c) ** 2) <= (scale * 0.42) ** 2
        big = big * np.tile(mask, frame.shape[:2])[..., None].astype(np.uint8)
    return big


def terminal_frame(frame: np.ndarray, scale: int = 1) -> str:
    """One frame as ANSI truecolour text, two pixel rows per character cell (``▀``), without cursor movement."""
    img = _check(frame)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    if img.shape[0] % 2:
        img = np.concatenate([img, np.zeros((1, *img.shape[1:]), dtype=np.uint8)])
    lines = []
    for top, bottom in zip(img[0::2].tolist(), img[1::2].tolist(), strict=True):
        cells = [
            f"\x1b[38;2;{a[0]};{a[1]};{a[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m{UPPER_HALF}"
            for a, b in zip(top, bottom, strict=True)
        ]
        lines.append("".join(cells) + _RESET)
    return "\n".join(lines) + "\n"


class TerminalRenderer:
    """Live preview in a truecolour terminal: each :meth:`draw` redraws in place (cursor home)."""

    def __init__(self, stream: TextIO, scale: int = 1) -> None:
        self.stream = stream
        self.scale = scale
        self.frames = 0

    def draw(self, frame: np.ndarray) -> None:
        prefix = _HIDE_CURSOR + _CLEAR + _HOME if self.frames == 0 else _HOME
        self.stream.write(prefix + terminal_frame(frame, self.scale))
        self.stream.flush()
        self.frames += 1

    def close(self) -> None:
        """Restore the terminal's colours and cursor."""
        self.stream.write(_RESET + _SHOW_CURSOR)
        self.stream.flush()


def save_png(frame: np.ndarray, path: str | Path, scale: int = 8, dots: bool = False) -> None:
    """A PNG snapshot of one frame, scaled up."""
    Image.fromarray(upscale(frame, scale, dots), "RGB").save(path, format="PNG")


def save_gif(frames: Iterable[np.ndarray], path: str | Path, fps: float, scale: int = 8, dots: bool = False) -> int:
    """An animated GIF that loops forever, one frame per image at ``fps``; returns the number of frames written.

    GIF stores durations in 10 ms steps, so the rate is rounded to that. Pillow merges consecutive identical frames
    into one longer frame, which keeps the timing but lowers the frame count read back.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    images = [Image.fromarray(upscale(f, scale, dots), "RGB") for f in frames]
    if not images:
        raise ValueError("no frames to write")
    duration = max(10, round(1000 / fps / 10) * 10)
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, optimize=False
    )
    return len(images)
