"""The display model: size, wiring, colour order and power, and the logical → physical index map.

``width`` and ``height`` are always the **logical** size, the one plugins draw at. With ``rotation`` 90 or 270 the
physical panel is ``height`` LEDs wide and ``width`` LEDs tall (see :attr:`DisplayConfig.physical_size`), so a
rotated non-square panel is described by the size the plugins should see, never by swapping numbers by hand.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

ColorOrder = Literal["RGB", "RBG", "GRB", "GBR", "BRG", "BGR", "RGBW", "GRBW"]
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


class DisplayConfig(BaseModel):
    """One LED display (a matrix, or a strip as a 1×N display) and how its LEDs are chained and powered.

    The wiring fields describe the chain, in this order: the logical image is rotated clockwise by ``rotation``
    onto the panel, then mirrored (``mirror_x``/``mirror_y``); LED 0 sits at ``origin``; the chain runs along rows
    (or along columns when ``vertical``), and with ``wiring = "serpentine"`` every ``serpentine_rows`` (odd or even,
    counted from the origin, 0-based) row or column runs backwards.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(gt=0, le=4096, description="logical width in pixels (a strip: its LED count, height 1)")
    height: int = Field(gt=0, le=4096, description="logical height in pixels")
    wiring: Literal["progressive", "serpentine"] = "progressive"
    serpentine_rows: Literal["odd", "even"] = "odd"
    vertical: bool = False
    mirror_x: bool = False
    mirror_y: bool = False
    rotation: Literal[0, 90, 180, 270] = 0
    origin: Corner = "top-left"
    color_order: ColorOrder = "GRB"
    white: Literal["min", "keep", "off"] = Field(
        "min",
        description="RGBW only: 'min' moves min(r,g,b) to W (same colour), 'keep' copies it to W too (brighter), "
        "'off' leaves W dark",
    )
    brightness: int = Field(255, ge=0, le=255)
    gamma: float = Field(1.0, gt=0, le=5.0, description="1.0 is off; 2.8 suits WS2812")
    #: a measured 256-entry correction table (value in → LED duty out, non-decreasing), used instead of ``gamma``
    gamma_table: list[int] | None = Field(None, min_length=256, max_length=256)
    ma_per_channel: float = Field(20.0, gt=0, le=200, description="mA one channel draws at full (255)")
    idle_ma: float = Field(1.0, ge=0, le=50, description="mA one LED draws when dark")
    max_ma: float = Field(0.0, ge=0, description="PSU budget for the LEDs in mA; 0 turns the limiter off")

    @model_validator(mode="after")
    def _gamma_table_is_a_curve(self) -> DisplayConfig:
        t = self.gamma_table
        if t is not None:
            if any(not 0 <= v <= 255 for v in t):
                raise ValueError("gamma_table values must be 0-255")
            if any(b < a for a, b in itertools.pairwise(t)):
                raise ValueError("gamma_table must not decrease")
        return self

    @model_validator(mode="after")
    def _budget_above_idle(self) -> DisplayConfig:
        idle = self.idle_ma * self.led_count
        if self.max_ma and self.max_ma <= idle:
            raise ValueError(
                f"max_ma {self.max_ma:g} mA does not cover the idle draw of {self.led_count} LEDs "
                f"({idle:g} mA at idle_ma {self.idle_ma:g}); raise it or set 0 to turn the limiter off"
            )
        return self

    @property
    def led_count(self) -> int:
        return self.width * self.height

    @property
    def channels(self) -> int:
        """Bytes per LED on the wire: 3, or 4 for RGBW strips."""
        return len(self.color_order)

    @property
    def physical_size(self) -> tuple[int, int]:
        """(width, height) of the physical panel, after rotation."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def index_map(cfg: DisplayConfig) -> np.ndarray:
    """For each logical pixel (row-major, top-left first), the index of the physical LED that shows it.

    The result is a permutation of ``range(width * height)`` (int64, flat).
    """
    w, h = cfg.width, cfg.height
    y, x = np.divmod(np.arange(w * h, dtype=np.int64), w)
    pw, ph = cfg.physical_size
    if cfg.rotation == 0:
        px, py = x, y
    elif cfg.rotation == 90:
        px, py = h - 1 - y, x
    elif cfg.rotation == 180:
        px, py = w - 1 - x, h - 1 - y
    else:
        px, py = y, w - 1 - x
    if cfg.mirror_x:
        px = pw - 1 - px
    if cfg.mirror_y:
        py = ph - 1 - py
    if cfg.origin.endswith("right"):
        px = pw - 1 - px
    if cfg.origin.startswith("bottom"):
        py = ph - 1 - py
    if cfg.vertical:
        major, minor, minor_len = px, py, ph
    else:
        major, minor, minor_len = py, px, pw
    if cfg.wiring == "serpentine":
        flip = (major % 2) == (1 if cfg.serpentine_rows == "odd" else 0)
        minor = np.where(flip, minor_len - 1 - minor, minor)
    return major * minor_len + minor
