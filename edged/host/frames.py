"""The frame protocol between the host and animation plugins.

An animation plugin exports ``frame``. Its input is a 32-byte tick record; its output is the whole frame, row-major
from the top-left, as RGB888 (W×H×3 bytes) or RGBA (W×H×4 bytes, alpha used when layers are composited). An empty
output means "done" (the playlist moves on). A Matricks plugin exports ``setup``/``update`` instead; ``update``
returns JSON rows of BGRA pixels, or ``null`` when done. A frame of the wrong size or shape is an error for that
plugin, never a crash. See docs/plugin-abi.md.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import FrameError

#: u64 frame number, u64 time in µs since the plugin started, u32 dt in µs since its previous frame,
#: u16 width, u16 height, u32 flags (bit 0: first frame after (re)start), u32 reserved.
TICK = struct.Struct("<QQIHHII")
TICK_SIZE = TICK.size  # 32
FLAG_FIRST = 1


@dataclass(frozen=True, slots=True)
class Tick:
    """One frame's timing, as given to the plugin."""

    frame: int
    time_us: int
    dt_us: int
    width: int
    height: int
    first: bool = False

    def pack(self) -> bytes:
        return TICK.pack(
            self.frame, self.time_us, self.dt_us, self.width, self.height, FLAG_FIRST if self.first else 0, 0
        )

    @classmethod
    def unpack(cls, data: bytes) -> Tick:
        frame, t, dt, w, h, flags, _ = TICK.unpack(data)
        return cls(frame, t, dt, w, h, bool(flags & FLAG_FIRST))


def decode_frame(data: bytes, width: int, height: int) -> np.ndarray | None:
    """Decode a ``frame`` output into an H×W×3 (RGB) or H×W×4 (RGBA) uint8 array; ``None`` means done."""
    n = len(data)
    if n == 0:
        return None
    pixels = width * height
    if n == pixels * 3:
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    if n == pixels * 4:
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 4)
    raise FrameError(
        f"frame has {n} bytes; expected {width}×{height}×3 = {pixels * 3} (RGB) or {width}×{height}×4 = {pixels * 4} "
        "(RGBA), or 0 for done"
    )


#: Bytes a Matricks ``update`` output may take per pixel: ``[255, 255, 255, 255], `` is 22, and some room is left
#: for other spacing. The cap bounds the host's decoding work by the display's size (see :func:`max_output_bytes`).
MATRICKS_BYTES_PER_PIXEL = 32


def max_output_bytes(kind: str, width: int, height: int) -> int:
    """The largest output a plugin of ``kind`` may return on a ``width``×``height`` display: a ``frame`` is at most
    W×H×4 bytes, a Matricks ``update`` about 32 bytes a pixel; anything larger is refused before it is read."""
    pixels = width * height
    if kind == "matricks":
        return pixels * MATRICKS_BYTES_PER_PIXEL + height * 16 + 1024
    return pixels * 4


def decode_matricks(data: bytes, width: int, height: int) -> np.ndarray | None:
    """Decode a Matricks ``update`` output (JSON rows of BGRA pixels) into H×W×3 RGB; ``None`` means done.

    The fourth byte is not an alpha: Matricks hands it to rpi_ws281x as the white channel, which RGB strips ignore,
    so it is ignored here too. Unlike Matricks, sizes are checked: a larger or smaller array is an error for the
    plugin, not a crash, and so is any pixel value that is not a JSON integer from 0 to 255 (``1.7``, ``"12"``,
    ``true``, ``-1e-9``).
    """
    try:
        rows = json.loads(data, parse_float=_not_an_integer, parse_constant=_not_an_integer)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FrameError(f"update returned invalid JSON: {exc}") from None
    except RecursionError:  # thousands of nested arrays: no frame is nested deeper than 3
        raise FrameError("update returned JSON nested too deeply; expected rows of BGRA pixels") from None
    except _NotAnInteger as exc:
        raise FrameError(f"update returned the pixel value {str(exc)[:32]}; {_PIXEL_VALUES}") from None
    except ValueError:  # an integer of thousands of digits (Python's int conversion limit)
        raise FrameError(f"update returned a number too long to be a pixel value; {_PIXEL_VALUES}") from None
    if rows is None:
        return None
    if not isinstance(rows, list) or len(rows) != height:
        got = f"{len(rows)} rows" if isinstance(rows, list) else type(rows).__name__
        raise FrameError(f"update returned {got}; expected {height} rows of {width} BGRA pixels")
    try:
        arr = np.array(rows, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        raise FrameError(f"update returned ragged or non-numeric rows; expected {height}×{width} BGRA pixels") from None
    if arr.shape != (height, width, 4):
        raise FrameError(f"update returned shape {arr.shape}; expected ({height}, {width}, 4) BGRA pixels")
    # numpy would quietly turn "12" into 12 and true into 1; a well-shaped array holds no objects, so a quote or a
    # true/false literal anywhere in the text is a string or boolean value
    if b'"' in data:
        raise FrameError(f"update returned a string; {_PIXEL_VALUES}")
    for literal in (b"true", b"false"):
        if literal in data:
            raise FrameError(f"update returned {literal.decode()}; {_PIXEL_VALUES}")
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise FrameError("update returned a pixel value outside 0-255")
    return np.ascontiguousarray(arr[..., [2, 1, 0]].astype(np.uint8))  # BGR(A) -> RGB


_PIXEL_VALUES = "pixel values must be JSON integers from 0 to 255"


class _NotAnInteger(ValueError):
    pass


def _not_an_integer(token: str) -> None:
    raise _NotAnInteger(token)
