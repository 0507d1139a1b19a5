"""The pixel pipeline: a logical RGB frame to the bytes on the wire, and back again for emulation.

Order: brightness → gamma (one 256-entry lookup table) → white extraction (RGBW strips) → current limiter →
colour order and physical index map (one precomputed gather). Everything is a vectorised numpy operation on the
whole frame; nothing runs per pixel in Python.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import DisplayConfig, index_map

_CHANNEL = {"R": 0, "G": 1, "B": 2, "W": 3}


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """An RGB view of a frame: RGBA is composited over black by its alpha."""
    if frame.shape[2] == 3:
        return frame
    alpha = frame[..., 3:4].astype(np.uint16)
    return ((frame[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def brightness_gamma_lut(brightness: int, gamma: float, table: list[int] | None = None) -> np.ndarray:
    """The 256-entry table that applies ``brightness`` (0-255) and then ``gamma`` (or a measured ``table``) to one
    channel value."""
    v = np.arange(256, dtype=np.float64) * brightness / 255.0
    if table is not None:
        return np.asarray(table, dtype=np.uint8)[np.rint(v).astype(np.intp)]
    if gamma != 1.0:
        v = 255.0 * (v / 255.0) ** gamma
    return np.rint(v).astype(np.uint8)


def inverse_gamma_lut(gamma: float, table: list[int] | None = None) -> np.ndarray:
    """Maps a linear LED duty back to a display value, so a preview on a screen looks like the LEDs."""
    if table is not None:  # the smallest input that reaches each duty (the table does not decrease)
        return np.searchsorted(np.asarray(table), np.arange(256), side="left").clip(0, 255).astype(np.uint8)
    v = np.arange(256, dtype=np.float64)
    if gamma != 1.0:
        v = 255.0 * (v / 255.0) ** (1.0 / gamma)
    return np.rint(v).astype(np.uint8)


class PixelPipeline:
    """Turns H×W×3 uint8 RGB frames into an N×C uint8 physical buffer in wire order (C is 3, or 4 for RGBW).

    After each :meth:`process`, :attr:`last_current_ma` is the estimated draw of the frame as sent,
    :attr:`last_raw_current_ma` the estimate before limiting and :attr:`last_scale` the limiter's factor (1.0 when
    it did not act).
    """

    def __init__(self, cfg: DisplayConfig) -> None:
        self.cfg = cfg
        self.channels = cfg.channels
        self.leds = cfg.led_count
        #: the brightness applied now (the profile's until :meth:`set_level` changes it) and whether the LEDs are on
        self.brightness = cfg.brightness
        self.power = True
        self._lut = brightness_gamma_lut(cfg.brightness, cfg.gamma, cfg.gamma_table)
        self._inv_gamma = inverse_gamma_lut(cfg.gamma, cfg.gamma_table)
        phys_of_logical = index_map(cfg)
        logical_of_physical = np.empty_like(phys_of_logical)
        logical_of_physical[phys_of_logical] = np.arange(self.leds, dtype=np.int64)
        order = np.array([_CHANNEL[c] for c in cfg.color_order], dtype=np.int64)
        # flat source index (into the logical N×C array) of every byte of the wire buffer
        self._gather = (logical_of_physical[:, None] * self.channels + order[None, :]).ravel()
        self._idle_ma = cfg.idle_ma * self.leds
        self._ma_per_unit = cfg.ma_per_channel / 255.0
        self.last_current_ma = 0.0
        self.last_raw_current_ma = 0.0
        self.last_scale = 1.0

    def set_level(self, brightness: int | None = None, power: bool | None = None) -> None:
        """Change the brightness (0-255) and/or switch the LEDs off or on, from the next frame on (the lookup table
        is swapped whole, so a frame being processed on another thread uses the old one or the new one)."""
        if brightness is not None:
            if not 0 <= brightness <= 255:
                raise ValueError(f"brightness must be 0..255, got {brightness}")
            self.brightness = brightness
        if power is not None:
            self.power = power
        self._lut = brightness_gamma_lut(self.brightness if self.power else 0, self.cfg.gamma, self.cfg.gamma_table)

    def estimate_ma(self, channel_sum: int) -> float:
        """The estimated current of a frame whose channel values (as sent, W included) add up to ``channel_sum``."""
        return channel_sum * self._ma_per_unit + self._idle_ma

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Run the whole pipeline on one logical frame (H×W×3 uint8); returns a new N×C uint8 array."""
        h, w = self.cfg.height, self.cfg.width
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a {h}×{w}×3 uint8 frame, got {frame.shape} {frame.dtype}")
        v: np.ndarray = self._lut[frame]
        if self.channels == 4:
            white = v.min(axis=2, keepdims=True)
            if self.cfg.white == "min":
                v = np.concatenate([v - white, white], axis=2)
            elif self.cfg.white == "keep":
                v = np.concatenate([v, white], axis=2)
            else:
                v = np.concatenate([v, np.zeros_like(white)], axis=2)
        total = int(v.sum())
        raw = self.estimate_ma(total)
        self.last_raw_current_ma = raw
        scale256 = 256
        if self.cfg.max_ma and raw > self.cfg.max_ma:
            budget = self.cfg.max_ma - self._idle_ma  # > 0, checked by DisplayConfig
            scale256 = math.floor(budget / (total * self._ma_per_unit) * 256)
            while True:  # float rounding could leave the estimate a hair over the budget; step down until it is not
                scaled = ((v.astype(np.uint16) * scale256) >> 8).astype(np.uint8)
                total = int(scaled.sum())
                if self.estimate_ma(total) <= self.cfg.max_ma or scale256 == 0:
                    break
                scale256 -= 1
            v = scaled
        self.last_scale = scale256 / 256
        self.last_current_ma = self.estimate_ma(total)
        return v.reshape(-1).take(self._gather).reshape(self.leds, self.channels)

    def inverse(self, buffer: np.ndarray, *, undo_gamma: bool = True) -> np.ndarray:
        """The logical H×W×3 image that a physical buffer shows: colour order, index map and white undone.

        Brightness and limiting are kept (a dimmed frame looks dimmed). With ``undo_gamma`` the LED duty is mapped
        back through the inverse gamma, so a screen shows roughly what the eye sees on the LEDs.
        """
        if buffer.shape != (self.leds, self.channels):
            raise ValueError(f"expected a {self.leds}×{self.channels} buffer, got {buffer.shape}")
        flat = np.empty(self.leds * self.channels, dtype=np.uint8)
        flat[self._gather] = buffer.reshape(-1)
        lin = flat.reshape(self.leds, self.channels)
        if self.channels == 4:
            rgb = lin[:, :3]
            if self.cfg.white == "min":
                rgb = np.minimum(rgb.astype(np.uint16) + lin[:, 3:4], 255).astype(np.uint8)
        else:
            rgb = lin
        if undo_gamma and (self.cfg.gamma != 1.0 or self.cfg.gamma_table is not None):
            rgb = self._inv_gamma[rgb]
        return np.ascontiguousarray(rgb).reshape(self.cfg.height, self.cfg.width, 3)
