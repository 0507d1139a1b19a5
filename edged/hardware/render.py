"""Renderers for emulation: what plugin authors and tests look at.

Each takes logical H×W×3 uint8 RGB images; :func:`emulated_image` gives the image the LEDs would show, from an
emulated backend's physical buffer, so brightness, gamma and the current limiter show in a preview.
"""

from __future__ import annotations

import itertools
import shutil
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


def shrink(frame: np.ndarray, factor: int) -> np.ndarray:
    """``frame`` reduced by an integer ``factor``, each output pixel the mean of a factor×factor block."""
    if factor <= 1:
        return frame
    h, w = frame.shape[:2]
    ph, pw = -h % factor, -w % factor
    padded = np.pad(frame.astype(np.uint16), ((0, ph), (0, pw), (0, 0)), mode="edge")
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor, 3)
    means: np.ndarray = blocks.mean(axis=(1, 3))
    return means.round().astype(np.uint8)


def fit(width: int, height: int, scale: int, columns: int, rows: int) -> tuple[int, int]:
    """(scale, shrink factor) to show a width×height image in ``columns``×``rows`` character cells (one pixel per
    column, two per row): the requested scale when it fits, else scale 1 shrunk by the smallest factor that fits."""
    rows = max(1, rows)
    for s in range(max(1, scale), 0, -1):
        if width * s <= columns and (height * s + 1) // 2 <= rows:
            return s, 1
    factor = 2
    while -(-width // factor) > columns or (-(-height // factor) + 1) // 2 > rows:
        factor += 1
    return 1, factor


class TerminalRenderer:
    """Live preview in a truecolour terminal: each :meth:`draw` redraws in place (cursor home).

    The picture fits the terminal (:func:`shutil.get_terminal_size`, checked on every frame, so resizing works): a
    display too large for it is shown shrunk, and the header says so. ``title`` (the plugin or display name) heads
    the picture, with "Ctrl-C to stop".
    """

    def __init__(self, stream: TextIO, scale: int = 1, title: str = "", *, lines_below: int = 0) -> None:
        self.stream = stream
        self.scale = scale
        self.title = title
        self.lines_below = lines_below
        self.frames = 0
        self._size: tuple[int, int] | None = None

    def _header(self, frame: np.ndarray, factor: int, columns: int) -> str:
        h, w = frame.shape[:2]
        tail = f" · {w}x{h}" + (f" shown at 1/{factor} to fit" if factor > 1 else "") + " · Ctrl-C to stop"
        room = max(0, columns - len(tail))
        title = self.title if len(self.title) <= room else self.title[: max(0, room - 1)] + "…"
        return (title + tail).lstrip(" ·")[:columns]

    def draw(self, frame: np.ndarray) -> None:
        size = shutil.get_terminal_size()
        h, w = _check(frame).shape[:2]
        scale, factor = fit(w, h, self.scale, size.columns, size.lines - 1 - self.lines_below)
        header = self._header(frame, factor, size.columns)
        clear = self.frames == 0 or (size.columns, size.lines) != self._size
        self._size = (size.columns, size.lines)
        prefix = (_HIDE_CURSOR + _CLEAR + _HOME) if clear else _HOME
        body = terminal_frame(shrink(frame, factor), scale)
        self.stream.write(prefix + _RESET + header + "\x1b[K\n" + body)
        self.stream.flush()
        self.frames += 1

    def close(self) -> None:
        """Restore the terminal's colours and cursor."""
        self.stream.write(_RESET + _SHOW_CURSOR)
        self.stream.flush()


def save_png(frame: np.ndarray, path: str | Path, scale: int = 8, dots: bool = False) -> None:
    """A PNG snapshot of one frame, scaled up."""
    Image.fromarray(upscale(frame, scale, dots), "RGB").save(path, format="PNG")


def gif_durations(count: int, fps: float) -> list[int]:
    """Per-frame GIF durations (ms, in GIF's 10 ms steps) whose running sum stays within 5 ms of ``i / fps``: 30 fps
    becomes 30, 40, 30, 30, 40, 30, … and plays at 30 fps on average, where one rounded duration (30 ms) would play
    11% fast."""
    ends = [round(i * 1000 / fps / 10) * 10 for i in range(count + 1)]
    return [max(10, b - a) for a, b in itertools.pairwise(ends)]


def save_gif(frames: Iterable[np.ndarray], path: str | Path, fps: float, scale: int = 8, dots: bool = False) -> int:
    """An animated GIF that loops forever, one frame per image at ``fps``; returns the number of frames written.

    GIF stores durations in 10 ms steps, so each frame gets its own duration (:func:`gif_durations`) and the
    average rate is ``fps``. Rates above 100 fps cannot be stored (10 ms is the shortest step), and browsers play
    steps below 20 ms slower. Pillow merges consecutive identical frames into one longer frame, which keeps the
    timing but lowers the frame count read back.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    images = [Image.fromarray(upscale(f, scale, dots), "RGB") for f in frames]
    if not images:
        raise ValueError("no frames to write")
    durations = gif_durations(len(images), fps)
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False
    )
    return len(images)
