"""The frame protocol: tick records, RGB/RGBA frames, Matricks JSON, and every kind of bad frame."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.errors import FrameError
from edged.host.frames import TICK_SIZE, Tick, decode_frame, decode_matricks


def test_tick_record_is_32_bytes_and_round_trips() -> None:
    t = Tick(frame=7, time_us=123_456_789, dt_us=16_667, width=64, height=32, first=True)
    data = t.pack()
    assert len(data) == TICK_SIZE == 32
    assert Tick.unpack(data) == t


def test_rgb_and_rgba_frames() -> None:
    rgb = decode_frame(bytes(range(2 * 3 * 3)), 3, 2)
    assert rgb is not None and rgb.shape == (2, 3, 3) and rgb[1, 2].tolist() == [15, 16, 17]
    rgba = decode_frame(b"\x10" * (2 * 3 * 4), 3, 2)
    assert rgba is not None and rgba.shape == (2, 3, 4)
    assert decode_frame(b"", 3, 2) is None  # done


@pytest.mark.parametrize("n", [1, 17, 18 - 1, 18 + 1, 24 + 3, 1_000_000])
def test_wrong_sized_frames_are_errors(n: int) -> None:
    with pytest.raises(FrameError, match=f"frame has {n} bytes; expected 3×2×3 = 18 \\(RGB\\) or 3×2×4 = 24"):
        decode_frame(b"\0" * n, 3, 2)


def test_matricks_bgra_rows_become_rgb() -> None:
    rows = [[[255, 0, 0, 255], [0, 255, 0, 0]], [[0, 0, 255, 7], [1, 2, 3, 4]]]
    out = decode_matricks(json.dumps(rows).encode(), 2, 2)
    assert out is not None and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [0, 0, 255]  # [255,0,0,255] is blue
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[1, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [3, 2, 1]
    assert decode_matricks(b"null", 2, 2) is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "invalid JSON"),
        (b'{"rows": 1}', "update returned dict"),
        (json.dumps([[[0, 0, 0, 0]] * 2]).encode(), "update returned 1 rows"),
        (json.dumps([[[0, 0, 0, 0]] * 3] * 2).encode(), r"shape \(2, 3, 4\)"),
        (json.dumps([[[0, 0, 0]] * 2] * 2).encode(), r"shape \(2, 2, 3\)"),
        (json.dumps([[[0, 0, 0, 0], [0, 0]]] * 2).encode(), "ragged"),
        (json.dumps([[[0, 0, -1, 0]] * 2] * 2).encode(), "outside 0-255"),
        (json.dumps([[[0, 0, 256, 0]] * 2] * 2).encode(), "outside 0-255"),
        (json.dumps([[[0, 0, 10**30, 0]] * 2] * 2).encode(), "ragged or non-numeric|outside 0-255"),
        (json.dumps([[["a", 0, 0, 0]] * 2] * 2).encode(), "non-numeric"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,1.7,0],[0,0,0,0]]]", r"the pixel value 1\.7; pixel values must be JSON int"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,1.0,0],[0,0,0,0]]]", r"the pixel value 1\.0"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,-1e-9,0],[0,0,0,0]]]", r"the pixel value -1e-9"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,1e2,0],[0,0,0,0]]]", r"the pixel value 1e2"),
        (b'[[[0,0,0,0],[0,0,0,0]],[[0,0,"12",0],[0,0,0,0]]]', "update returned a string; pixel values must be JSON"),
        (b'[[[0,0,0,0],[0,0,0,0]],[[0,0," 7",0],[0,0,0,0]]]', "update returned a string"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,true,0],[0,0,0,0]]]", "update returned true; pixel values must be JSON int"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,false,0],[0,0,0,0]]]", "update returned false"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,NaN,0],[0,0,0,0]]]", "the pixel value NaN"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,Infinity,0],[0,0,0,0]]]", "the pixel value Infinity"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,null,0],[0,0,0,0]]]", "non-numeric"),
        (b"[[[0,0,0,0],[0,0,0,0]],[[0,0,{},0],[0,0,0,0]]]", "non-numeric"),
        (b"\xff\xfe", "invalid JSON"),
    ],
)
def test_bad_matricks_frames_are_errors_not_crashes(payload: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_matricks(payload, 2, 2)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoders(data: bytes) -> None:
    for decode in (decode_frame, decode_matricks):
        with contextlib.suppress(FrameError):  # the only failure allowed
            out = decode(data, 4, 3)
            assert out is None or (out.shape[:2] == (3, 4) and out.dtype == np.uint8)


# --- hostile Matricks output (issue 10, points 4 and 6) -------------------------------------------------------


def test_deeply_nested_matricks_output_is_a_frame_error_not_a_recursion_error() -> None:
    with pytest.raises(FrameError, match="nested too deeply"):
        decode_matricks(b"[" * 100_000, 16, 16)


def _matricks_plugin(body: str) -> bytes:
    from tests.conftest import wat

    return wat(
        """(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "update") (result i32) (local $h i64) (local $i i64) """
        + body
        + " (i32.const 0)))"
    )


#: "[" × 100,000 as the output of update
BRACKETS = _matricks_plugin(
    """(local.set $h (call $alloc (i64.const 100000)))
  (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (i64.const 100000)))
    (call $store_u8 (i64.add (local.get $h) (local.get $i)) (i32.const 91))
    (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
  (call $output_set (local.get $h) (i64.const 100000))"""
)

#: 4 MiB of output (zeros: whitespace would decode as slowly) from a 16×16 Matricks plugin
HUGE = _matricks_plugin(
    "(local.set $h (call $alloc (i64.const 4194304))) (call $output_set (local.get $h) (i64.const 4194304))"
)


def _device(wasm: bytes, size: int = 16):
    from edged.host.functions import DisplayInfo
    from edged.host.plugin import DevicePlugin

    manifest = {
        "wasm": [{"data": wasm}],
        "edged": {"name": "hostile", "kind": "matricks", "capabilities": {"led": True}},
    }
    return DevicePlugin(manifest, display=DisplayInfo(size, size, fps=60), fuel=50_000_000, timeout_ms=2000)


def test_a_matricks_plugin_returning_nested_brackets_gets_a_frame_error() -> None:
    # on 64×64 the output cap (about 130 kB) lets the 100 kB through to the decoder
    with _device(BRACKETS, 64) as dp, pytest.raises(FrameError, match="nested too deeply"):
        dp.frame(Tick(0, 0, 16_667, 64, 64, True))


def test_an_output_far_larger_than_the_display_is_refused_before_it_is_read() -> None:
    from edged.errors import OutputTooLarge
    from edged.host.frames import max_output_bytes

    cap = max_output_bytes("matricks", 16, 16)
    assert cap < 16 * 1024  # a 16×16 frame's JSON, with room for spacing
    with _device(HUGE) as dp, pytest.raises(OutputTooLarge, match=f"limit of {cap} bytes"):
        dp.frame(Tick(0, 0, 16_667, 16, 16, True))
    assert max_output_bytes("animation", 16, 16) == 16 * 16 * 4


def test_a_pixel_value_of_thousands_of_digits_is_a_frame_error() -> None:
    """Found by a hostile review: Python's int conversion limit raised a bare ValueError (a traceback in preview)."""
    with pytest.raises(FrameError, match="too long to be a pixel value"):
        decode_matricks(b"[[[" + b"9" * 5000 + b",0,0,0]]]", 1, 1)
