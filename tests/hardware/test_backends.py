"""LED backends: emulated, ws281x (refusals only: PixelStrip is never constructed off a Pi), SPI against a fake
SpiDev and a temp file standing in for /dev/leds0, and LedOutput's shutdown."""

from __future__ import annotations

import ast
import errno
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edged.errors import BackendUnavailable, ConfigError, HardwareError
from edged.hardware.backends import (
    BackendConfig,
    EmulatedBackend,
    EmulatedBackendConfig,
    LedBackend,
    SpiBackend,
    SpiBackendConfig,
    Ws281xBackend,
    Ws281xBackendConfig,
    create_backend,
    encode_ws2812,
)
from edged.hardware.backends import spi as spi_module
from edged.hardware.geometry import DisplayConfig
from edged.hardware.output import LedOutput, open_led_output

# --- emulated ----------------------------------------------------------------------------------------------------


def test_emulated_keeps_bounded_history_with_timestamps() -> None:
    times = iter(range(100))
    be = EmulatedBackend(history=3, clock=lambda: float(next(times)))
    be.open(2, 3)
    for i in range(5):
        be.write(np.full((2, 3), i, dtype=np.uint8))
    assert be.frame_count == 5
    frames = be.frames()
    assert [f.t for f in frames] == [2.0, 3.0, 4.0]
    assert [int(f.data[0, 0]) for f in frames] == [2, 3, 4]
    latest = be.latest()
    assert latest is not None and latest.data.tolist() == [[4, 4, 4], [4, 4, 4]]


def test_emulated_copies_the_buffer() -> None:
    be = EmulatedBackend()
    be.open(1, 3)
    buf = np.zeros((1, 3), dtype=np.uint8)
    be.write(buf)
    buf[:] = 9
    latest = be.latest()
    assert latest is not None and latest.data.tolist() == [[0, 0, 0]]


def test_emulated_is_thread_safe() -> None:
    be = EmulatedBackend(history=50)
    be.open(4, 3)

    def writer() -> None:
        for _ in range(500):
            be.write(np.ones((4, 3), dtype=np.uint8))

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(200):
        assert len(be.frames()) <= 50
    for t in threads:
        t.join()
    assert be.frame_count == 2000 and len(be.frames()) == 50


def test_emulated_refuses_wrong_buffers() -> None:
    be = EmulatedBackend()
    with pytest.raises(RuntimeError, match="not open"):
        be.write(np.zeros((1, 3), dtype=np.uint8))
    be.open(4, 3)
    with pytest.raises(ValueError, match="expected a 4×3 buffer"):
        be.write(np.zeros((4, 4), dtype=np.uint8))


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(EmulatedBackend(), LedBackend)
    assert isinstance(SpiBackend(SpiBackendConfig()), LedBackend)


# --- ws281x ------------------------------------------------------------------------------------------------------


IMPORTERS = """
import sys

class Who:
    # record which module imported each Pi library (the first frame outside importlib)
    seen = {}

    def find_spec(self, name, path=None, target=None):
        if name in ("rpi_ws281x", "_rpi_ws281x", "spidev", "lgpio"):
            f = sys._getframe(1)
            while f.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
                f = f.f_back
            self.seen.setdefault(name, f.f_globals.get("__name__"))
        return None

sys.meta_path.insert(0, Who())
import edged.hardware, edged.hardware.backends, edged.hardware.output, edged.hardware.profile
import edged.hardware.render, edged.hardware.gpio, edged.cli
print(sorted(Who.seen.items()))
"""


def test_importing_hardware_never_imports_rpi_ws281x() -> None:
    # rpi_ws281x must never load off the real backend (constructing its strip off a Pi segfaults at exit); nor may
    # edged's own modules import spidev or lgpio. gpiozero's pin modules (under its MockFactory) try spidev
    # for its hardware SPI, which with the [pi] extra installed succeeds: that import is gpiozero's, and harmless
    out = subprocess.run([sys.executable, "-c", IMPORTERS], capture_output=True, text=True, check=True)
    seen = dict(ast.literal_eval(out.stdout.strip()))
    assert "rpi_ws281x" not in seen and "_rpi_ws281x" not in seen
    assert all(not importer.startswith("edged") for importer in seen.values()), seen
    assert all(importer.startswith("gpiozero.pins.") for importer in seen.values()), seen


def test_ws281x_refuses_off_a_pi(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="needs a Raspberry Pi 3/4"):
        Ws281xBackend(Ws281xBackendConfig(), model_path=tmp_path / "no-such-model")
    pc = tmp_path / "model"
    pc.write_bytes(b"QEMU Virtual Machine\x00")
    with pytest.raises(BackendUnavailable, match="QEMU Virtual Machine"):
        Ws281xBackend(Ws281xBackendConfig(), model_path=pc)
    assert "rpi_ws281x" not in sys.modules


@pytest.mark.parametrize(
    "model", ["Raspberry Pi 5 Model B Rev 1.0", "Raspberry Pi Compute Module 5 Rev 1.0", "Raspberry Pi 500 Rev 1.0"]
)
def test_ws281x_on_a_pi5_points_to_spi(tmp_path: Path, model: str) -> None:
    path = tmp_path / "model"
    path.write_bytes(model.encode() + b"\x00")
    with pytest.raises(BackendUnavailable) as err:
        Ws281xBackend(Ws281xBackendConfig(), model_path=path)
    msg = str(err.value)
    assert model in msg and "not support" in msg and 'type = "spi"' in msg and "/dev/leds0" in msg
    assert "rpi_ws281x" not in sys.modules


def test_ws281x_on_a_pi4_is_accepted_without_touching_the_library(tmp_path: Path) -> None:
    path = tmp_path / "model"
    path.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    be = Ws281xBackend(Ws281xBackendConfig(gpio=13), model_path=path)
    assert be.model.startswith("Raspberry Pi 4") and be.cfg.channel == 1
    be.close()  # never opened: nothing to clean up
    assert "rpi_ws281x" not in sys.modules


def test_ws281x_config_checks() -> None:
    with pytest.raises(ValidationError, match="DMA channel 5"):
        Ws281xBackendConfig(dma=5)
    with pytest.raises(ValidationError, match="gpio"):
        Ws281xBackendConfig(gpio=17)


# --- spi: spidev -------------------------------------------------------------------------------------------------


class FakeSpiDev:
    """Stands in for spidev.SpiDev: records what the backend does to it."""

    instances: ClassVar[list[FakeSpiDev]] = []

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.writes: list[bytes] = []
        self.closed = False
        FakeSpiDev.instances.append(self)

    def open(self, bus: int, device: int) -> None:
        self.calls.append(("open", (bus, device)))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("max_speed_hz", "mode"):
            self.calls.append((name, value))
        object.__setattr__(self, name, value)

    def writebytes2(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def decode_spi(stream: bytes, bits_per_bit: int) -> list[int]:
    """Decode SPI bytes back to WS2812 data bytes: each run of `bits_per_bit` bits is one data bit, and its second
    bit tells 0 (`100`/`1000`) from 1 (`110`/`1110`)."""
    bits = "".join(f"{b:08b}" for b in stream)
    start = bits.index("1")  # skip the leading low time
    bits = bits[start:].rstrip("0")
    bits += "0" * (-len(bits) % bits_per_bit)
    symbols = [bits[i : i + bits_per_bit] for i in range(0, len(bits), bits_per_bit)]
    zero, one = ("100", "110") if bits_per_bit == 3 else ("1000", "1110")
    assert set(symbols) <= {zero, one}, set(symbols)
    data = "".join("1" if s == one else "0" for s in symbols)
    return [int(data[i : i + 8], 2) for i in range(0, len(data), 8)]


@pytest.mark.parametrize("bits_per_bit", [3, 4])
def test_spi_encodes_ws2812_bits(bits_per_bit: int) -> None:
    FakeSpiDev.instances.clear()
    cfg = SpiBackendConfig(bus=0, device=1, bits_per_bit=bits_per_bit)
    display = DisplayConfig(width=3, height=1, color_order="GRB")
    with LedOutput(display, SpiBackend(cfg, spi_factory=FakeSpiDev)) as out:
        out.show(np.array([[[255, 0, 0], [0, 255, 1], [0x12, 0x34, 0x56]]], dtype=np.uint8))
        spi = FakeSpiDev.instances[0]
        assert spi.calls == [("open", (0, 1)), ("max_speed_hz", 2_400_000 if bits_per_bit == 3 else 3_200_000),
                             ("mode", 0)]  # fmt: skip
        frame = spi.writes[0]
        # GRB on the wire (the last value ends in 0 bits, which the decoder trims; compare on what it returns)
        expected = [0, 255, 0, 255, 0, 1, 0x34, 0x12, 0x56]
        decoded = decode_spi(frame, bits_per_bit)
        assert decoded == expected[: len(decoded)] and len(decoded) >= len(expected) - 1
        reset = 90 if bits_per_bit == 3 else 120  # 300 µs of zeros at 2.4 / 3.2 MHz
        assert frame[0] == 0 and frame[-reset:] == bytes(reset)
        assert len(frame) == 1 + 9 * bits_per_bit + reset
    # close() blanked (all-zero data bits) and closed the device
    assert decode_spi(spi.writes[-1], bits_per_bit) == [0] * 9
    assert spi.closed


def test_encode_is_exact_per_byte() -> None:
    # 0xA5 = 10100101 -> 110 100 110 100 100 110 100 110
    enc = encode_ws2812(np.array([[0xA5]], dtype=np.uint8), 3, reset_bytes=0)
    assert enc == b"\x00" + int("110100110100100110100110", 2).to_bytes(3, "big")


def test_spi_open_failure_is_backend_unavailable() -> None:
    class NoDevice(FakeSpiDev):
        def open(self, bus: int, device: int) -> None:
            raise FileNotFoundError(2, "No such file or directory")

    be = SpiBackend(SpiBackendConfig(), spi_factory=NoDevice)
    with pytest.raises(BackendUnavailable, match=r"/dev/spidev0\.0.*dtparam=spi=on"):
        be.open(10, 3)


def test_spi_without_spidev_installed_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # without the [pi] extra (a None entry makes `import spidev` raise ImportError, whether or not it is installed)
    monkeypatch.setitem(sys.modules, "spidev", None)
    with pytest.raises(BackendUnavailable, match=r"edged\[pi\]"):
        SpiBackend(SpiBackendConfig()).open(10, 3)


# --- spi: leds0 --------------------------------------------------------------------------------------------------


def test_leds0_writes_rgbw_bytes(tmp_path: Path) -> None:
    dev = tmp_path / "leds0"
    dev.touch()
    cfg = SpiBackendConfig(mode="leds0", path=str(dev))
    display = DisplayConfig(width=2, height=1, color_order="RGB")
    out = open_led_output(display, cfg)
    out.show(np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8))
    assert dev.read_bytes() == bytes([1, 2, 3, 0, 4, 5, 6, 0])
    out.show(np.array([[[7, 8, 9], [10, 11, 12]]], dtype=np.uint8))
    assert dev.read_bytes() == bytes([7, 8, 9, 0, 10, 11, 12, 0])  # each frame replaces the last
    out.close()
    assert dev.read_bytes() == bytes(8)  # blanked on close


def test_leds0_rgbw(tmp_path: Path) -> None:
    dev = tmp_path / "leds0"
    dev.touch()
    out = open_led_output(
        DisplayConfig(width=1, height=1, color_order="RGBW"), SpiBackendConfig(mode="leds0", path=str(dev))
    )
    out.show(np.array([[[200, 150, 100]]], dtype=np.uint8))
    assert dev.read_bytes() == bytes([100, 50, 0, 100])
    out.close()


class Leds0Driver:
    """The ws2812-pio-rp1 driver's file contract, over a plain file standing in for /dev/leds0 (installed as the
    spi module's ``os``, so only the backend sees it): write() starts at the fd's position and advances it, and
    refuses to go past ``num_leds * 4`` bytes (ENOSPC); lseek fails (ESPIPE: no llseek); fstat says a character
    device; a 1-byte write at position 0 would set the brightness (recorded, so tests can say it never happens)."""

    def __init__(self, dev: Path, num_leds: int) -> None:
        dev.touch()
        self.dev, self.size = dev, num_leds * 4
        self.writes: list[tuple[int, int]] = []  # (position, length) of each write the backend made
        self.brightness_writes = 0
        self.takes: int | None = None  # set: each write takes only this many bytes (a short write)

    def _is_dev(self, fd: int) -> bool:
        st, dev = os.fstat(fd), self.dev.stat()
        return (st.st_dev, st.st_ino) == (dev.st_dev, dev.st_ino)

    def write(self, fd: int, data: bytes) -> int:
        if not self._is_dev(fd):
            return os.write(fd, data)
        pos = os.lseek(fd, 0, os.SEEK_CUR)  # the real os: where the file position stands
        self.writes.append((pos, len(data)))
        if pos + len(data) > self.size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if pos == 0 and len(data) == 1:
            self.brightness_writes += 1
        return os.write(fd, data if self.takes is None else data[: self.takes])

    def lseek(self, fd: int, pos: int, how: int) -> int:
        if self._is_dev(fd):
            raise OSError(errno.ESPIPE, os.strerror(errno.ESPIPE))
        return os.lseek(fd, pos, how)

    def fstat(self, fd: int) -> os.stat_result:
        st = os.fstat(fd)
        if not self._is_dev(fd):
            return st
        fields = list(st[:10])
        fields[0] = stat.S_IFCHR | 0o660
        return os.stat_result(fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.fixture
def leds0_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Leds0Driver]:
    def install(num_leds: int) -> Leds0Driver:
        driver = Leds0Driver(tmp_path / "leds0", num_leds)
        monkeypatch.setattr(spi_module, "os", driver)
        return driver

    return install


def test_leds0_takes_one_frame_per_open(leds0_driver: Callable[[int], Leds0Driver]) -> None:
    driver = leds0_driver(2)
    out = open_led_output(
        DisplayConfig(width=2, height=1, color_order="RGB"), SpiBackendConfig(mode="leds0", path=str(driver.dev))
    )
    for i in range(3):
        out.show(np.array([[[i, 2, 3], [4, 5, 6 + i]]], dtype=np.uint8))
    assert driver.dev.read_bytes() == bytes([2, 2, 3, 0, 4, 5, 8, 0])  # the last frame
    out.close()
    assert driver.dev.read_bytes() == bytes(8)
    assert driver.writes == [(0, 8)] * 4  # three frames and the blank, each whole, each from position 0


def test_leds0_one_led_never_sets_the_brightness(leds0_driver: Callable[[int], Leds0Driver]) -> None:
    driver = leds0_driver(1)
    out = open_led_output(
        DisplayConfig(width=1, height=1, color_order="RGB"), SpiBackendConfig(mode="leds0", path=str(driver.dev))
    )
    out.show(np.array([[[9, 8, 7]]], dtype=np.uint8))
    out.show(np.array([[[1, 2, 3]]], dtype=np.uint8))
    out.close()
    assert driver.writes == [(0, 4)] * 3 and driver.brightness_writes == 0  # RGB padded to 4 bytes, not 1


def test_leds0_too_few_leds_in_the_overlay_is_a_clear_error(leds0_driver: Callable[[int], Leds0Driver]) -> None:
    driver = leds0_driver(2)
    out = open_led_output(
        DisplayConfig(width=3, height=1, color_order="RGB"), SpiBackendConfig(mode="leds0", path=str(driver.dev))
    )
    with pytest.raises(HardwareError, match=r"leds0: .*fewer LEDs than the display's 3: set num_leds=3") as info:
        out.show(np.zeros((1, 3, 3), dtype=np.uint8))
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC


def test_leds0_short_write_is_a_clear_error(leds0_driver: Callable[[int], Leds0Driver]) -> None:
    driver = leds0_driver(2)
    be = SpiBackend(SpiBackendConfig(mode="leds0", path=str(driver.dev)))
    be.open(2, 3)
    driver.takes = 4
    with pytest.raises(HardwareError, match=r"leds0: it took 4 of 8 bytes"):
        be.write(np.zeros((2, 3), dtype=np.uint8))


def test_leds0_device_gone_while_running_is_a_clear_error(tmp_path: Path) -> None:
    dev = tmp_path / "leds0"
    dev.touch()
    be = SpiBackend(SpiBackendConfig(mode="leds0", path=str(dev)))
    be.open(2, 3)
    dev.unlink()
    with pytest.raises(HardwareError, match=r"leds0 does not exist \(add dtoverlay=ws2812-pio"):
        be.write(np.zeros((2, 3), dtype=np.uint8))
    be.close()  # nothing held open


def test_leds0_missing_device(tmp_path: Path) -> None:
    cfg = SpiBackendConfig(mode="leds0", path=str(tmp_path / "nope"))
    with pytest.raises(BackendUnavailable, match="dtoverlay=ws2812-pio"):
        open_led_output(DisplayConfig(width=2, height=1, color_order="RGB"), cfg)


def test_leds0_refuses_a_wire_colour_order(tmp_path: Path) -> None:
    cfg = SpiBackendConfig(mode="leds0", path=str(tmp_path / "leds0"))
    with pytest.raises(ConfigError, match="color_order to RGB or RGBW"):
        open_led_output(DisplayConfig(width=2, height=1, color_order="GRB"), cfg)


# --- config union, factory and LedOutput --------------------------------------------------------------------------


def test_backend_config_union() -> None:
    ta: TypeAdapter[Any] = TypeAdapter(BackendConfig)
    assert isinstance(ta.validate_python({"type": "spi", "mode": "leds0"}), SpiBackendConfig)
    assert isinstance(ta.validate_python({"type": "emulated"}), EmulatedBackendConfig)
    with pytest.raises(ValidationError, match="type"):
        ta.validate_python({"type": "neopixel"})
    with pytest.raises(ValidationError, match="baud"):
        ta.validate_python({"type": "spi", "baud": 1})
    assert isinstance(create_backend(EmulatedBackendConfig(history=4)), EmulatedBackend)


def test_emulate_always_uses_the_emulated_backend(tmp_path: Path) -> None:
    out = open_led_output(DisplayConfig(width=4, height=4), Ws281xBackendConfig(), emulate=True)
    assert isinstance(out.backend, EmulatedBackend)
    out.close()


def test_led_output_shows_blanks_and_closes() -> None:
    be = EmulatedBackend()
    display = DisplayConfig(width=2, height=2, color_order="GRB", max_ma=50)
    with LedOutput(display, be) as out:
        out.show(np.full((2, 2, 3), 255, dtype=np.uint8))
        rgba = np.zeros((2, 2, 4), dtype=np.uint8)
        rgba[..., 0], rgba[..., 3] = 255, 255
        out.show(rgba)  # RGBA is composited over black
        latest = be.latest()
        assert latest is not None and latest.data[:, 1].min() > 0 and latest.data[:, 0].max() == 0  # red is byte 1
        assert out.stats.frames == 2 and out.stats.limited >= 1
        assert out.last_current_ma <= 50
    assert be.closed and out.closed
    latest = be.latest()
    assert latest is not None and latest.data.max() == 0  # blanked before closing
    n = be.frame_count
    out.close()  # twice is fine
    assert be.frame_count == n
    with pytest.raises(RuntimeError, match="closed"):
        out.show(np.zeros((2, 2, 3), dtype=np.uint8))


def test_close_closes_the_backend_even_when_blank_fails() -> None:
    class Failing(EmulatedBackend):
        def blank(self) -> None:
            raise OSError("bus error")

    be = Failing()
    out = LedOutput(DisplayConfig(width=1, height=1), be)
    with pytest.raises(OSError, match="bus error"):
        out.close()
    assert be.closed  # the backend was closed anyway
