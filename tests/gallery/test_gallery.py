"""Every gallery plugin: loads, fits any size, stays in its declared fuel budget at 60 fps, draws, animates and is
deterministic for a fixed seed and time."""

from __future__ import annotations

import numpy as np
import pytest

from edged.errors import FrameError

from .helpers import GALLERY, load, manifest, render

DRAWING = sorted(
    p.name
    for p in GALLERY.iterdir()
    if (p / "manifest.json").exists() and manifest(p.name)["edged"]["kind"] in ("animation", "matricks")
)
#: static until something outside happens: a shared value arrives, a button is pressed (tested elsewhere)
WAITING = {"bar_graph", "button_modes"}
#: the SDKs' frame buffers hold up to 256x256 pixels (65536), so the declared budgets cover that: the daemon holds a
#: plugin to its declared fuel whatever the display
MAX_PIXELS = 256 * 256
SIZES = [16, 64, (32, 8), 128, (128, 64), (192, 128), 256]


def test_the_gallery_has_what_the_issue_lists() -> None:
    names = {p.name for p in GALLERY.iterdir() if (p / "manifest.json").exists()}
    expected = {"rainbow", "plasma", "fire", "life", "clock", "scroll_text", "matrix_rain", "sprite"}
    expected |= {"distance_sensor", "bar_graph", "button_modes", "matricks_pulse"}
    assert expected <= names
    languages = {src.suffix for name in names for src in (GALLERY / name).glob(f"{name}.*") if src.suffix != ".wasm"}
    assert {".ts", ".c", ".zig"} <= languages


@pytest.mark.parametrize("name", sorted(p.name for p in GALLERY.iterdir() if (p / "manifest.json").exists()))
def test_manifest_declares_a_fuel_budget(name: str) -> None:
    edged = manifest(name)["edged"]
    assert edged["name"] == name
    budget = edged["budget"]
    # fuel only: a deterministic per-call cap on any machine; the device derives its ms budget from the frame period
    assert set(budget) == {"fuel"} and budget["fuel"] > 0


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("name", DRAWING)
def test_renders_within_its_fuel_budget(name: str, size: int | tuple[int, int]) -> None:
    plugin = load(name, size)
    run = render(plugin, 90)
    w, h = (size, size) if isinstance(size, int) else size
    assert run.frames, f"{name} was done before its first frame"
    assert all(f.shape[:2] == (h, w) for f in run.frames)
    budget = manifest(name)["edged"]["budget"]["fuel"]
    assert max(run.fuel) <= budget, f"{name} at {size}: {max(run.fuel):,} fuel > budget {budget:,}"
    # and the cost grows with the pixel count, no faster: the budget scaled to this display, plus a sixteenth of
    # it for work that does not depend on the size
    scaled = budget * w * h // MAX_PIXELS + budget // 16
    assert max(run.fuel) <= scaled, f"{name} at {size}: {max(run.fuel):,} fuel > {scaled:,} (budget scaled by pixels)"
    assert any(f.any() for f in run.frames), f"{name} at {size}: every frame is black"
    if name not in WAITING:
        assert any(not np.array_equal(run.frames[0], f) for f in run.frames[1:]), f"{name} at {size} never changes"


@pytest.mark.parametrize("name", DRAWING)
def test_deterministic_for_a_fixed_seed_and_time(name: str) -> None:
    a = render(load(name, 16), 45)
    b = render(load(name, 16), 45)
    assert a.done_at == b.done_at
    assert len(a.frames) == len(b.frames)
    for i, (fa, fb) in enumerate(zip(a.frames, b.frames, strict=True)):
        assert np.array_equal(fa, fb), f"{name}: frame {i} differs between two fresh instances"


@pytest.mark.parametrize("name", ["fire", "matrix_rain", "life", "plasma"])
def test_seed_changes_the_picture(name: str) -> None:
    a = render(load(name, 16, {"seed": "1"}), 20)
    b = render(load(name, 16, {"seed": "7"}), 20)
    assert any(not np.array_equal(fa, fb) for fa, fb in zip(a.frames, b.frames, strict=False))


@pytest.mark.parametrize("name", ["rainbow", "plasma", "fire"])  # one per language: AssemblyScript, Zig, C
def test_a_display_beyond_the_sdk_limit_fails_clearly(name: str) -> None:
    """The limit that remains: 65536 pixels. Beyond it the frame comes back short and the host says so."""
    with pytest.raises(FrameError, match="expected 512×256×3"):
        render(load(name, (512, 256)), 1)
