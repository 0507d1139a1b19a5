"""The frame protocol: tick records, RGB/RGBA frames, Matricks JSON, and every kind of bad frame."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.host.frames import TICK_SIZE, FrameError, Tick, decode_frame, decode_matricks, to_rgb


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


def test_rgba_composites_over_black() -> None:
    f = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    assert to_rgb(f).tolist() == [[[200, 100, 50], [0, 0, 0], [100, 50, 25]]]
