"""The SPI backend, usable on a Pi 5: WS2812 bits encoded as SPI bits through ``spidev``, or raw pixels written to
the kernel's ws2812-pio device (``/dev/leds0``).

**spidev mode.** Each WS2812 data bit becomes ``bits_per_bit`` SPI bits, most significant first: with 3 (the
default) at 2.4 MHz a 0 is ``100`` (417 ns high) and a 1 is ``110`` (833 ns high), inside the WS2812B's ±150 ns
tolerance of 400/800 ns in a 1.25 µs bit; with 4 at 3.2 MHz a 0 is ``1000`` and a 1 is ``1110``. One zero byte
goes first (the line is low before the first bit) and ``reset_us`` of zeros last (the latch). The whole frame goes
in one ``writebytes2`` call; raise ``spidev.bufsiz`` (e.g. 32768) so the kernel does not split it.

**leds0 mode.** The ws2812-pio overlay (``dtoverlay=ws2812-pio,gpio=N,num_leds=N``, add ``rgbw`` for RGBW) makes
``/dev/leds0``, which takes 4 bytes per LED in R, G, B, W order and does the wire ordering itself; so the display's
``color_order`` must be ``RGB`` or ``RGBW`` (3-byte buffers are padded with W = 0). ``gpio`` repeats the overlay's
data pin (default 4, the overlay's default) so the profile can reserve it.

The driver takes **one frame per open()**: its write() starts at the file position and advances it, refuses to go
past ``num_leds * 4`` bytes (ENOSPC) and cannot seek (ESPIPE). A write that fills the whole buffer shows at once (a
shorter one after 50 ms, the rest blanked), and a 1-byte write at position 0 sets the brightness instead. So
:meth:`SpiBackend.open` only checks that the device opens, and each frame opens the device, writes the whole
frame (4 bytes per LED, never 1 byte) in one ``write`` and closes it again.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...errors import BackendUnavailable, HardwareError
from ..access import device_problem

log = logging.getLogger("edged.hardware")

#: SPI clock for each encoding, in Hz
SPI_CLOCK = {3: 2_400_000, 4: 3_200_000}
_PATTERN = {3: (0b100, 0b110), 4: (0b1000, 0b1110)}


_ENABLE_LEDS0 = "add dtoverlay=ws2812-pio,gpio=N,num_leds=N to /boot/firmware/config.txt on a Pi 5 and reboot"


class SpiBackendConfig(BaseModel):
    """``type = "spi"``: WS2812 over SPI (``mode = "spidev"``) or the ws2812-pio device (``mode = "leds0"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["spi"] = "spi"
    mode: Literal["spidev", "leds0"] = "spidev"
    bus: int = Field(0, ge=0, le=6)
    device: int = Field(0, ge=0, le=3)
    bits_per_bit: Literal[3, 4] = 3
    reset_us: int = Field(300, ge=50, le=10_000, description="low time after a frame; WS2812B needs > 280 µs")
    path: str = Field("/dev/leds0", description="leds0 mode: the ws2812-pio device")
    #: leds0 mode: the data pin, as the overlay's ``gpio=`` sets it (edged cannot read config.txt); reserved so no
    #: GPIO device, sensor or plugin may use it
    gpio: int = Field(4, ge=0, le=27, description="leds0 mode: the overlay's data pin (its default is 4)")

    @property
    def speed_hz(self) -> int:
        return SPI_CLOCK[self.bits_per_bit]


def _encode_table(bits_per_bit: int) -> np.ndarray:
    zero, one = _PATTERN[bits_per_bit]
    table = np.zeros((256, bits_per_bit), dtype=np.uint8)
    for value in range(256):
        word = 0
        for bit in range(7, -1, -1):
            word = (word << bits_per_bit) | (one if value >> bit & 1 else zero)
        table[value] = list(word.to_bytes(bits_per_bit, "big"))
    return table


_TABLES = {k: _encode_table(k) for k in _PATTERN}


def encode_ws2812(buffer: np.ndarray, bits_per_bit: Literal[3, 4] = 3, reset_bytes: int = 90) -> bytes:
    """The SPI byte stream for one frame: a zero byte, the encoded wire bytes, then ``reset_bytes`` zeros."""
    body: np.ndarray = _TABLES[bits_per_bit][buffer.reshape(-1)].reshape(-1)
    return b"\x00" + body.tobytes() + bytes(reset_bytes)


class SpiBackend:
    """WS2812 over SPI through ``spidev`` (``spi_factory`` makes the ``SpiDev``; injectable for tests), or the
    ws2812-pio character device."""

    def __init__(self, cfg: SpiBackendConfig, *, spi_factory: Callable[[], Any] | None = None) -> None:
        self.cfg = cfg
        self._factory = spi_factory
        self._spi: Any = None
        self._leds0: str | None = None  # the device's path while open in leds0 mode
        self.leds = 0
        self.channels = 3
        self._reset_bytes = -(-cfg.reset_us * cfg.speed_hz // 8_000_000)

    def open(self, leds: int, channels: int) -> None:
        self.leds, self.channels = leds, channels
        if self.cfg.mode == "leds0":
            self._open_leds0()
            return
        factory = self._factory
        if factory is None:
            try:
                import spidev  # only here: Pi-only, in the `pi` extra
            except ImportError:
                raise BackendUnavailable(
                    "the spi backend needs spidev, from the [pi] extra: pip install 'edged[pi]' (it builds from "
                    "source: sudo apt install gcc python3-dev first)"
                ) from None
            factory = spidev.SpiDev
        spi = factory()
        try:
            spi.open(self.cfg.bus, self.cfg.device)
        except OSError as exc:
            node = f"/dev/spidev{self.cfg.bus}.{self.cfg.device}"
            problem = device_problem(node) or f"{node}: {exc.strerror or exc}"
            raise BackendUnavailable(f"cannot open the SPI LED output: {problem}") from None
        spi.max_speed_hz = self.cfg.speed_hz
        spi.mode = 0
        self._spi = spi
        log.info("spi open", extra={"bus": self.cfg.bus, "device": self.cfg.device, "hz": self.cfg.speed_hz})

    def _open_leds0(self) -> None:
        try:
            fd = os.open(self.cfg.path, os.O_WRONLY)
        except OSError as exc:
            problem = device_problem(self.cfg.path, enable=_ENABLE_LEDS0) or f"{self.cfg.path}: {exc.strerror}"
            raise BackendUnavailable(f"cannot open the LED device: {problem}") from None
        os.close(fd)  # only a check: the driver takes one frame per open(), so each frame opens it afresh
        self._leds0 = self.cfg.path
        log.info("leds0 open", extra={"path": self.cfg.path, "leds": self.leds})

    def _write_leds0(self, path: str, buffer: np.ndarray) -> None:
        """One frame: open, one write of the whole frame at position 0, close (a second write on the same fd
        would start where the first ended and fail with ENOSPC)."""
        data = buffer if buffer.shape[1] == 4 else np.pad(buffer, ((0, 0), (0, 1)))
        frame = np.ascontiguousarray(data, dtype=np.uint8).tobytes()  # 4 bytes per LED: never a brightness byte
        try:
            fd = os.open(path, os.O_WRONLY)  # no O_TRUNC: a device; a plain file (tests) is overwritten from 0
            try:
                written = os.write(fd, frame)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                reason = (
                    f"the device holds fewer LEDs than the display's {self.leds}: set num_leds={self.leds} in "
                    "the dtoverlay=ws2812-pio line of /boot/firmware/config.txt and reboot"
                )
            else:
                reason = device_problem(path, enable=_ENABLE_LEDS0) or exc.strerror or str(exc)
            raise HardwareError(f"cannot write a frame to the LED device {path}: {reason}") from exc
        if written != len(frame):
            raise HardwareError(
                f"cannot write a frame to the LED device {path}: it took {written} of {len(frame)} bytes (does the "
                f"overlay's num_leds match the display's {self.leds} LEDs?)"
            )

    def write(self, buffer: np.ndarray) -> None:
        if self._leds0 is not None:
            self._write_leds0(self._leds0, buffer)
            return
        if self._spi is None:
            raise RuntimeError("spi backend is not open")
        self._spi.writebytes2(encode_ws2812(buffer, self.cfg.bits_per_bit, self._reset_bytes))

    def blank(self) -> None:
        if self._leds0 is not None or self._spi is not None:
            self.write(np.zeros((self.leds, self.channels), dtype=np.uint8))

    def close(self) -> None:
        self._leds0 = None
        spi, self._spi = self._spi, None
        if spi is not None:
            spi.close()
