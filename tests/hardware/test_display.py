"""Display model, index maps and the pixel pipeline (brightness, gamma, limiter, colour order)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edged.hardware.geometry import DisplayConfig, index_map
from edged.hardware.pipeline import PixelPipeline, brightness_gamma_lut, inverse_gamma_lut, to_rgb

wiring_cfgs = st.builds(
    DisplayConfig,
    width=st.integers(1, 12),
    height=st.integers(1, 12),
    wiring=st.sampled_from(["progressive", "serpentine"]),
    serpentine_rows=st.sampled_from(["odd", "even"]),
    vertical=st.booleans(),
    mirror_x=st.booleans(),
    mirror_y=st.booleans(),
    rotation=st.sampled_from([0, 90, 180, 270]),
    origin=st.sampled_from(["top-left", "top-right", "bottom-left", "bottom-right"]),
    color_order=st.sampled_from(["RGB", "RBG", "GRB", "GBR", "BRG", "BGR", "RGBW", "GRBW"]),
    white=st.sampled_from(["min", "keep", "off"]),
)


def grid(cfg: DisplayConfig) -> list[list[int]]:
    return index_map(cfg).reshape(cfg.height, cfg.width).tolist()


# --- index map ---------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(wiring_cfgs)
def test_index_map_is_a_permutation(cfg: DisplayConfig) -> None:
    m = index_map(cfg)
    assert m.shape == (cfg.width * cfg.height,)
    assert sorted(m.tolist()) == list(range(cfg.width * cfg.height))


def test_progressive_is_row_major() -> None:
    assert grid(DisplayConfig(width=3, height=2)) == [[0, 1, 2], [3, 4, 5]]


def test_serpentine_odd_rows_reverse() -> None:
    assert grid(DisplayConfig(width=3, height=2, wiring="serpentine")) == [[0, 1, 2], [5, 4, 3]]


def test_serpentine_even_rows_reverse() -> None:
    assert grid(DisplayConfig(width=3, height=2, wiring="serpentine", serpentine_rows="even")) == [
        [2, 1, 0],
        [3, 4, 5],
    ]


def test_vertical_serpentine_4x4() -> None:
    # down the first column, up the second, ...
    assert grid(DisplayConfig(width=4, height=4, wiring="serpentine", vertical=True)) == [
        [0, 7, 8, 15],
        [1, 6, 9, 14],
        [2, 5, 10, 13],
        [3, 4, 11, 12],
    ]


def test_rotation_90_on_3x2_uses_a_2x3_panel() -> None:
    cfg = DisplayConfig(width=3, height=2, rotation=90)
    assert cfg.physical_size == (2, 3)
    # clockwise: the logical top-left lands top-right on the 2-wide panel, the bottom-left top-left
    assert grid(cfg) == [[1, 3, 5], [0, 2, 4]]


def test_rotation_180_and_270_on_4x4() -> None:
    assert grid(DisplayConfig(width=4, height=4, rotation=180))[0] == [15, 14, 13, 12]
    g270 = grid(DisplayConfig(width=4, height=4, rotation=270))
    # counter-clockwise: the logical top row becomes the panel's left column, read bottom to top
    assert g270[0] == [12, 8, 4, 0]
    assert [row[0] for row in g270] == [12, 13, 14, 15]


def test_mirror_and_origin() -> None:
    assert grid(DisplayConfig(width=3, height=2, mirror_x=True)) == [[2, 1, 0], [5, 4, 3]]
    assert grid(DisplayConfig(width=3, height=2, mirror_y=True)) == [[3, 4, 5], [0, 1, 2]]
    assert grid(DisplayConfig(width=3, height=2, origin="bottom-right")) == [[5, 4, 3], [2, 1, 0]]
    # a serpentine chain starting bottom-left: the bottom row runs right, the row above runs left
    assert grid(DisplayConfig(width=3, height=2, wiring="serpentine", origin="bottom-left")) == [
        [5, 4, 3],
        [0, 1, 2],
    ]


def test_strip_is_1xn() -> None:
    cfg = DisplayConfig(width=60, height=1, wiring="serpentine")
    assert index_map(cfg).tolist() == list(range(60))


# --- validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 0),
        ("height", -1),
        ("gamma", 0),
        ("brightness", 256),
        ("rotation", 45),
        ("color_order", "RGBX"),
        ("wiring", "zigzag"),
        ("bogus", 1),
    ],
)
def test_bad_display_values_name_the_field(field: str, value: object) -> None:
    args: dict[str, object] = {"width": 4, "height": 4, field: value}
    with pytest.raises(ValidationError) as err:
        DisplayConfig(**args)
    assert field in str(err.value)


def test_budget_below_idle_draw_is_refused() -> None:
    with pytest.raises(ValidationError, match="idle draw of 256 LEDs"):
        DisplayConfig(width=16, height=16, max_ma=200)


# --- brightness and gamma ----------------------------------------------------------------------------------------


def test_lut_identity_and_brightness() -> None:
    assert brightness_gamma_lut(255, 1.0).tolist() == list(range(256))
    half = brightness_gamma_lut(128, 1.0)
    assert half[255] == 128 and half[0] == 0 and half[100] == round(100 * 128 / 255)


def test_gamma_table() -> None:
    lut = brightness_gamma_lut(255, 2.8)
    assert lut[0] == 0 and lut[255] == 255
    assert lut[128] == round(255 * (128 / 255) ** 2.8)  # 37
    assert np.all(np.diff(lut.astype(int)) >= 0)
    inv = inverse_gamma_lut(2.8)
    assert abs(int(inv[lut[200]]) - 200) <= 3


# --- pipeline ----------------------------------------------------------------------------------------------------


def test_colour_order_grb_and_bgr() -> None:
    frame = np.array([[[10, 20, 30]]], dtype=np.uint8)
    assert PixelPipeline(DisplayConfig(width=1, height=1, color_order="GRB")).process(frame).tolist() == [[20, 10, 30]]
    assert PixelPipeline(DisplayConfig(width=1, height=1, color_order="BGR")).process(frame).tolist() == [[30, 20, 10]]
    assert PixelPipeline(DisplayConfig(width=1, height=1, color_order="GBR")).process(frame).tolist() == [[20, 30, 10]]


def test_rgbw_white_extraction() -> None:
    frame = np.array([[[200, 150, 100]]], dtype=np.uint8)
    assert PixelPipeline(DisplayConfig(width=1, height=1, color_order="GRBW")).process(frame).tolist() == [
        [50, 100, 0, 100]
    ]
    keep = DisplayConfig(width=1, height=1, color_order="RGBW", white="keep")
    assert PixelPipeline(keep).process(frame).tolist() == [[200, 150, 100, 100]]
    off = DisplayConfig(width=1, height=1, color_order="RGBW", white="off")
    assert PixelPipeline(off).process(frame).tolist() == [[200, 150, 100, 0]]


def test_serpentine_frame_lands_on_the_right_leds() -> None:
    cfg = DisplayConfig(width=3, height=2, wiring="serpentine", color_order="RGB")
    frame = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    out = PixelPipeline(cfg).process(frame)
    # LED 3 is the end of the second row: logical (x=2, y=1)
    assert out[3].tolist() == frame[1, 2].tolist()
    assert out[5].tolist() == frame[1, 0].tolist()


@settings(max_examples=150, deadline=None)
@given(wiring_cfgs, st.data())
def test_pipeline_then_inverse_round_trips(cfg: DisplayConfig, data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**32 - 1))
    frame = np.random.default_rng(seed).integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8)
    pipe = PixelPipeline(cfg)
    out = pipe.process(frame)
    assert out.shape == (cfg.led_count, cfg.channels) and out.dtype == np.uint8
    back = pipe.inverse(out)
    np.testing.assert_array_equal(back, frame)


def test_inverse_shows_brightness() -> None:
    cfg = DisplayConfig(width=2, height=2, brightness=128, color_order="GRB")
    pipe = PixelPipeline(cfg)
    back = pipe.inverse(pipe.process(np.full((2, 2, 3), 255, dtype=np.uint8)))
    assert back.tolist() == [[[128, 128, 128]] * 2] * 2


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 10),
    st.integers(1, 10),
    st.sampled_from(["RGB", "GRBW"]),
    st.floats(1.0, 60.0),
    st.floats(0.0, 2.0),
    st.floats(1.01, 40.0),
    st.integers(0, 2**32 - 1),
)
def test_limiter_never_exceeds_the_budget(
    w: int, h: int, order: str, ma: float, idle: float, budget_factor: float, seed: int
) -> None:
    n = w * h
    budget = max(idle * n * budget_factor, idle * n + 0.5)
    cfg = DisplayConfig(width=w, height=h, color_order=order, ma_per_channel=ma, idle_ma=idle, max_ma=budget)
    pipe = PixelPipeline(cfg)
    frame = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = pipe.process(frame)
    drawn = int(out.astype(np.int64).sum()) * ma / 255 + idle * n
    assert drawn <= budget + 1e-9
    assert pipe.last_current_ma == pytest.approx(drawn)
    assert 0.0 <= pipe.last_scale <= 1.0
    if pipe.last_raw_current_ma <= budget:
        assert pipe.last_scale == 1.0


def test_limiter_scales_full_white_16x16_to_the_psu() -> None:
    cfg = DisplayConfig(width=16, height=16, max_ma=3500)
    pipe = PixelPipeline(cfg)
    out = pipe.process(np.full((16, 16, 3), 255, dtype=np.uint8))
    assert pipe.last_raw_current_ma == pytest.approx(256 * 60 + 256)  # 3 × 20 mA + 1 mA idle per LED
    assert pipe.last_current_ma <= 3500
    assert pipe.last_current_ma > 3400  # it uses the budget, not a fraction of it
    assert pipe.last_scale < 0.25
    assert len(set(out.ravel().tolist())) == 1  # scaled evenly


def test_limiter_off_leaves_frames_alone() -> None:
    pipe = PixelPipeline(DisplayConfig(width=4, height=4, color_order="RGB"))
    frame = np.full((4, 4, 3), 255, dtype=np.uint8)
    assert pipe.process(frame).min() == 255
    assert pipe.last_scale == 1.0 and pipe.last_current_ma == pytest.approx(16 * 61)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), dtype=np.float32), np.zeros((3, 4, 3), dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8)],
)
def test_wrong_frame_is_a_clear_error(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected a 4×4×3 uint8 frame"):
        PixelPipeline(DisplayConfig(width=4, height=4)).process(bad)


def test_a_measured_gamma_table_replaces_the_exponent() -> None:
    from pydantic import ValidationError

    table = [min(255, v // 2) for v in range(256)]  # a panel that needs half the duty
    cfg = DisplayConfig(width=2, height=1, color_order="RGB", gamma=2.8, gamma_table=table)
    buf = PixelPipeline(cfg).process(np.array([[[200, 100, 0], [255, 255, 255]]], np.uint8))
    assert buf.tolist() == [[100, 50, 0], [127, 127, 127]]
    shown = PixelPipeline(cfg).inverse(buf)  # the preview maps it back through the table
    assert shown[0, 0].tolist() == [200, 100, 0]
    for bad in ([1] * 255, [300] * 256, list(range(255, -1, -1))):
        with pytest.raises(ValidationError, match="gamma_table"):
            DisplayConfig(width=2, height=1, gamma_table=bad)


def test_rgba_composites_over_black() -> None:
    f = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    assert to_rgb(f).tolist() == [[[200, 100, 50], [0, 0, 0], [100, 50, 25]]]
