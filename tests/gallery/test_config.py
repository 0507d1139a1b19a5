"""Each gallery plugin honours its config keys."""

from __future__ import annotations

import numpy as np

from edged.host.functions import SharedValues

from .helpers import ascii_art, load, render, tick

SECOND_US = 1_000_000


def frame_at(
    name: str, config: dict[str, str], t_us: int, size: int | tuple[int, int] = 16, *, fixed: bool = True
) -> np.ndarray:
    plugin = load(name, size, config, fixed=fixed)
    w, h = (size, size) if isinstance(size, int) else size
    frame = plugin.frame(tick(0, w, h)) if t_us == 0 else None
    if t_us:
        plugin.frame(tick(0, w, h))
        frame = plugin.frame(type(tick(0, w, h))(1, t_us, t_us, w, h))
    assert frame is not None
    return frame


def test_rainbow_speed_and_saturation() -> None:
    still = render(load("rainbow", 16, {"speed": "0"}), 30)
    assert all(np.array_equal(still.frames[0], f) for f in still.frames)
    grey = frame_at("rainbow", {"saturation": "0"}, 0)
    assert (grey == grey[..., :1]).all(), "saturation 0 must give grey pixels"
    assert not (frame_at("rainbow", {}, 0) == frame_at("rainbow", {}, 0)[..., :1]).all()


def test_plasma_speed() -> None:
    slow = frame_at("plasma", {"speed": "100"}, SECOND_US)
    assert not np.array_equal(slow, frame_at("plasma", {"speed": "300"}, SECOND_US))


def test_fire_cooling_shortens_the_flames() -> None:
    hot = render(load("fire", 32, {"cooling": "0"}), 60).frames[-1]
    cold = render(load("fire", 32, {"cooling": "100"}), 60).frames[-1]
    assert int(hot.sum()) > int(cold.sum())


def test_life_is_done_when_the_pattern_cycles() -> None:
    blinker = render(load("life", 16, {"pattern": "blinker", "rate": "60"}), 100)
    assert blinker.done_at == 2, "a blinker repeats after two generations (period 2)"
    block = render(load("life", 16, {"pattern": "block", "rate": "60"}), 100)
    assert block.done_at == 1, "a block is a still life (period 1)"
    # a glider on a 16x16 torus is back where it started after 64 generations (4 per cell, 16 cells); Brent's
    # detection sees the repeat within two periods
    glider = render(load("life", 16, {"pattern": "glider", "rate": "60"}), 400)
    assert glider.done_at is not None and 64 <= glider.done_at <= 2 * 64, glider.done_at
    assert len({f.tobytes() for f in glider.frames[:64]}) == 64, "it moves for its whole first period"
    wide = render(load("life", 32, {"pattern": "glider", "rate": "60"}), 600)
    assert wide.done_at is not None and 128 <= wide.done_at <= 2 * 128, "period 128 on a 32x32 torus"
    random = render(load("life", 16, {"seed": "3", "rate": "60"}), 3000)
    assert random.done_at is not None, "a random soup on a 16x16 torus settles into cycles"


def test_clock_12h_and_24h_differ_in_the_afternoon() -> None:
    h24 = frame_at("clock", {"time": "15:30", "format": "24h"}, 0)
    h12 = frame_at("clock", {"time": "15:30", "format": "12h"}, 0)
    assert not np.array_equal(h24, h12), ascii_art(h24) + "\n\n" + ascii_art(h12)
    assert h12[-1, -1].any(), "12h marks PM with a dot in the bottom-right corner"
    # in the morning 12h drops the leading zero and shows no PM dot; the other digits are the same
    m24 = frame_at("clock", {"time": "09:30", "format": "24h"}, 0, 32)
    m12 = frame_at("clock", {"time": "09:30", "format": "12h"}, 0, 32)
    assert m24[:, :10].any() and not m12[:, :10].any(), ascii_art(m24) + "\n\n" + ascii_art(m12)
    assert np.array_equal(m24[:, 10:], m12[:, 10:])
    assert not m12[-1, -1].any(), "no PM dot in the morning"


def test_clock_time_advances_with_play_time() -> None:
    a = frame_at("clock", {"time": "09:41:58"}, 0, 32)
    b = frame_at("clock", {"time": "09:41:58"}, 3 * SECOND_US, 32)
    assert not np.array_equal(a, b), "09:41 became 09:42"


def test_clock_wall_time_and_tz_offset() -> None:
    utc = frame_at("clock", {"tz_offset": "0"}, 0, fixed=False)
    later = frame_at("clock", {"tz_offset": "720"}, 0, fixed=False)
    assert utc.any() and not np.array_equal(utc, later), "12 hours apart always shows different hours"


def test_clock_colour() -> None:
    red = frame_at("clock", {"color": "#ff0000"}, 0)
    lit = red[red.sum(axis=2) > 0]
    assert lit.size and (lit == [255, 0, 0]).all()


def test_scroll_text_text_colour_speed_and_loop() -> None:
    t = 2 * SECOND_US
    hello = frame_at("scroll_text", {"text": "Hello"}, t, (48, 16))
    world = frame_at("scroll_text", {"text": "World"}, t, (48, 16))
    assert hello.any() and not np.array_equal(hello, world)
    green = frame_at("scroll_text", {"text": "Hello", "color": "#00ff00"}, t, (48, 16))
    assert (green[green.sum(axis=2) > 0] == [0, 255, 0]).all()
    fast = frame_at("scroll_text", {"text": "Hello", "speed": "30"}, t, (48, 16))
    assert not np.array_equal(hello > 0, fast > 0)
    once = render(load("scroll_text", (16, 16), {"text": "Hi", "loop": "false", "speed": "60"}), 200)
    assert once.done_at is not None, "with loop=false the plugin is done after one pass"
    looping = render(load("scroll_text", (16, 16), {"text": "Hi", "speed": "60"}), 200)
    assert looping.done_at is None


def test_scroll_text_is_latin1_safe() -> None:
    def glyph(text: str) -> np.ndarray:
        # speed 0 is clamped to 1 px/s: after 40 s the text sits at x = 0
        return frame_at("scroll_text", {"text": text, "speed": "1"}, 40 * SECOND_US, (40, 16)) > 0

    assert not np.array_equal(glyph("é"), glyph("e")), "Latin-1 letters have their own glyphs"
    assert not np.array_equal(glyph("ß"), glyph("?"))
    assert not np.array_equal(glyph("ü"), glyph("u"))
    assert np.array_equal(glyph("€"), glyph("?")), "characters outside Latin-1 show as '?'"
    assert np.array_equal(glyph("😀"), glyph("?")), "a surrogate pair is one character"


def test_matrix_rain_colour_and_speed() -> None:
    green = render(load("matrix_rain", 16), 30).frames[-1].astype(int)
    red = render(load("matrix_rain", 16, {"color": "#ff0000"}), 30).frames[-1].astype(int)
    trail = (green.sum(axis=2) > 0) & (green[..., 0] < 200)  # heads are near-white; trails carry the colour
    assert green[trail][:, 1].sum() > green[trail][:, 0].sum()
    trail = (red.sum(axis=2) > 0) & (red[..., 1] < 200)
    assert red[trail][:, 0].sum() > red[trail][:, 1].sum()
    slow = render(load("matrix_rain", 16, {"speed": "2"}), 30).frames[-1]
    assert not np.array_equal(slow, green.astype(np.uint8))


def test_sprite_background_fps_and_loops() -> None:
    blue = frame_at("sprite", {"background": "#0000ff"}, 0)
    assert (blue[0, 0] == [0, 0, 255]).all()
    a = frame_at("sprite", {"fps": "8"}, SECOND_US // 8)
    b = frame_at("sprite", {"fps": "16"}, SECOND_US // 8)
    assert not np.array_equal(a, b)
    once = render(load("sprite", 16, {"loops": "1", "fps": "30"}), 120)
    assert once.done_at is not None and 16 <= once.done_at <= 17, "8 sprite frames at 30 fps is about 16 frames"


def test_matricks_pulse_stops_after_its_frames() -> None:
    run = render(load("matricks_pulse", (24, 12), {"frames": "5"}), 20)
    assert run.done_at == 5
    assert all(f.shape == (12, 24, 3) for f in run.frames)


def test_rainbow_spread() -> None:
    # 16x16: the diagonal is 30 pixels; with spread 2 the hue turns twice across it, so x = 15 has x = 0's colour
    one = frame_at("rainbow", {"spread": "1"}, 0)
    two = frame_at("rainbow", {"spread": "2"}, 0)
    assert (two[0, 15] == two[0, 0]).all(), "spread 2: two full rainbows across the diagonal"
    assert not (one[0, 15] == one[0, 0]).all(), "spread 1: half a turn at the middle of the diagonal"
    assert not np.array_equal(one, two)
    assert np.array_equal(one, frame_at("rainbow", {}, 0)), "spread 1 is the default"


def roughness(frame: np.ndarray) -> float:
    """Mean colour change between neighbouring pixels: small for large features."""
    f = frame.astype(int)
    return float(np.abs(np.diff(f, axis=0)).mean() + np.abs(np.diff(f, axis=1)).mean())


def test_plasma_scale_sets_the_feature_size() -> None:
    fine = frame_at("plasma", {"scale": "25"}, SECOND_US, 32)
    normal = frame_at("plasma", {}, SECOND_US, 32)
    coarse = frame_at("plasma", {"scale": "400"}, SECOND_US, 32)
    assert roughness(fine) > roughness(normal) > roughness(coarse), (roughness(fine), roughness(coarse))


def test_life_density() -> None:
    def live(density: str) -> int:
        return int((frame_at("life", {"density": density}, 0, 32).sum(axis=2) > 0).sum())

    sparse, dense = live("10"), live("60")
    assert 0 < sparse < dense, (sparse, dense)
    # about density percent of the 1024 cells are alive at the start
    assert 50 <= sparse <= 160 and 520 <= dense <= 720, (sparse, dense)
    empty = render(load("life", 16, {"density": "0", "rate": "60"}), 10)
    assert not empty.frames[0].any() and empty.done_at == 1, "an empty board is done at its first generation"


def test_bar_graph_max_cm_is_the_full_scale() -> None:
    def rows(max_cm: str | None) -> int:
        values = SharedValues()
        values.set("distance_m", b"1.0")
        plugin = load("bar_graph", 16, {} if max_cm is None else {"max_cm": max_cm}, values=values)
        frame = plugin.frame(tick(0, 16, 16))
        assert frame is not None
        return int((frame.sum(axis=(1, 2)) > 0).sum())

    # 1 m of 2 m (the default) fills half the rows; of 1 m all of them; of 4 m a quarter
    assert (rows(None), rows("200"), rows("100"), rows("400")) == (8, 8, 16, 4)
