"""Renderers: terminal escape codes, PNG snapshots and animated GIFs, read back with Pillow."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from edged.hardware.backends import EmulatedBackend
from edged.hardware.geometry import DisplayConfig
from edged.hardware.output import LedOutput
from edged.hardware.render import TerminalRenderer, emulated_image, save_gif, save_png, terminal_frame, upscale

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)

CELL = re.compile(r"\x1b\[38;2;(\d+);(\d+);(\d+)m\x1b\[48;2;(\d+);(\d+);(\d+)m\u2580")


def tiny() -> np.ndarray:
    """2 wide, 3 tall: rows red/green, blue/white, black/red."""
    return np.array([[RED, GREEN], [BLUE, WHITE], [BLACK, RED]], dtype=np.uint8)


def parse_cells(text: str) -> list[list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    rows = []
    for line in text.split("\n"):
        cells = [(tuple(map(int, m.groups()[:3])), tuple(map(int, m.groups()[3:]))) for m in CELL.finditer(line)]
        if cells:
            rows.append(cells)
    return rows


def test_terminal_two_pixel_rows_per_cell() -> None:
    rows = parse_cells(terminal_frame(tiny()))
    # 3 pixel rows -> 2 text rows; the odd last row is padded with black underneath
    assert rows == [
        [(RED, BLUE), (GREEN, WHITE)],
        [(BLACK, BLACK), (RED, BLACK)],
    ]


def test_terminal_scale() -> None:
    rows = parse_cells(terminal_frame(np.array([[RED]], dtype=np.uint8), scale=2))
    assert rows == [[(RED, RED), (RED, RED)]]


def test_terminal_renderer_redraws_in_place() -> None:
    stream = io.StringIO()
    r = TerminalRenderer(stream)
    r.draw(tiny())
    first_len = len(stream.getvalue())
    r.draw(tiny()[::-1].copy())
    r.close()
    text = stream.getvalue()
    assert text.startswith("\x1b[?25l\x1b[2J\x1b[H")  # hide cursor, clear once, home
    second = text[first_len:]
    assert second.startswith("\x1b[H") and "\x1b[2J" not in second  # later frames only go home
    assert parse_cells(second)[0] == [(BLACK, BLUE), (RED, WHITE)]
    assert text.endswith("\x1b[0m\x1b[?25h") and r.frames == 2


def test_png_snapshot_scaled(tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    save_png(tiny(), path, scale=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (8, 12)
        rgb = im.convert("RGB")
        assert rgb.getpixel((0, 0)) == RED and rgb.getpixel((3, 3)) == RED
        assert rgb.getpixel((4, 0)) == GREEN and rgb.getpixel((7, 11)) == RED and rgb.getpixel((1, 5)) == BLUE


def test_png_led_dots(tmp_path: Path) -> None:
    path = tmp_path / "dots.png"
    save_png(np.array([[WHITE]], dtype=np.uint8), path, scale=10, dots=True)
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        assert rgb.getpixel((5, 5)) == WHITE and rgb.getpixel((0, 0)) == BLACK


def test_gif_frames_durations_and_loop(tmp_path: Path) -> None:
    path = tmp_path / "a.gif"
    frames = [np.full((2, 3, 3), c, dtype=np.uint8) for c in (RED, GREEN, BLUE, WHITE)]
    assert save_gif(frames, path, fps=20, scale=5) == 4
    with Image.open(path) as im:
        assert im.format == "GIF" and im.size == (15, 10) and im.info["loop"] == 0
        assert im.n_frames == 4
        seen = []
        for fr in ImageSequence.Iterator(im):
            assert fr.info["duration"] == 50
            seen.append(fr.convert("RGB").getpixel((7, 4)))
        assert seen == [RED, GREEN, BLUE, WHITE]


def test_gif_rejects_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "x.gif", fps=10)
    with pytest.raises(ValueError, match="fps"):
        save_gif([tiny()], tmp_path / "x.gif", fps=0)
    with pytest.raises(ValueError, match="H×W×3"):
        upscale(np.zeros((2, 2), dtype=np.uint8), 2)


def test_emulated_image_shows_what_the_leds_show() -> None:
    be = EmulatedBackend()
    display = DisplayConfig(width=3, height=2, wiring="serpentine", color_order="GRB", rotation=180, brightness=128)
    out = LedOutput(display, be)
    assert emulated_image(out.pipeline, be) is None
    frame = np.zeros((2, 3, 3), dtype=np.uint8)
    frame[0, 0] = WHITE
    frame[1, 2] = (0, 200, 0)
    out.show(frame)
    img = emulated_image(out.pipeline, be)
    assert img is not None and img.shape == (2, 3, 3)
    assert img[0, 0].tolist() == [128, 128, 128]  # mapped back to the logical pixel, at half brightness
    assert img[1, 2].tolist() == [0, 100, 0]
    assert int(img.sum()) == 128 * 3 + 100
