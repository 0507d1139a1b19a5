"""Issue 16.2: on a 32-bit or otherwise unsupported platform every command exits 2 with one plain line saying a
64-bit OS is needed and which Pi models have one. Before, wasmtime's import died with a traceback
("wasmtime only works on 64-bit platforms").

The platform facts wasmtime and edged read (``sys.maxsize``, ``platform.machine()``) are set in a fresh interpreter
before the console script's entry point is imported, as on a Pi running a 32-bit OS."""

from __future__ import annotations

import subprocess
import sys

import pytest

SIMULATE = """
import platform, sys
bits, machine = sys.argv[1], sys.argv[2]
if bits == "32":
    sys.maxsize = 2**31 - 1
platform.machine = lambda: machine
from edged.cli import main
sys.exit(main(sys.argv[3:]))
"""

COMMANDS = [
    ["run", "--emulate", "--frames", "1"],
    ["call", "x.wasm", "f"],
    ["preview", "fire", "--frames", "1", "--png", "x.png"],
    ["ctl", "stats"],
    ["plugin", "check", "x.wasm"],
    ["market", "list"],
    ["--version"],
    [],
]


def _simulate(bits: str, machine: str, args: list[str], cwd: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SIMULATE, bits, machine, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "(none)")
def test_32_bit_raspberry_pi_os_exits_2_with_one_line(args: list[str], tmp_path: object) -> None:
    r = _simulate("32", "armv7l", args, tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "wasmtime" not in r.stderr
    assert "64-bit OS" in lines[0] and "Raspberry Pi OS (64-bit)" in lines[0]
    assert "Zero 2 W" in lines[0] and "Zero W cannot" in lines[0]
    assert r.stdout == ""


def test_32_bit_userland_on_a_64_bit_kernel_is_caught_too(tmp_path: object) -> None:
    # Raspberry Pi OS 32-bit on a Pi 4 boots a 64-bit kernel: uname says aarch64, Python is 32-bit
    r = _simulate("32", "aarch64", ["run", "--emulate"], tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("edged: edged needs a 64-bit OS (this Python is 32-bit, on aarch64)")


@pytest.mark.parametrize("machine", ["riscv64", "ppc64le", "s390x"])
def test_64_bit_cpu_without_wasmtime_support(machine: str, tmp_path: object) -> None:
    r = _simulate("64", machine, ["run", "--emulate"], tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert f"this one is {machine}" in r.stderr


def test_supported_platforms_run(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from edged.platformcheck import unsupported_reason

    r = _simulate("64", platform.machine(), ["--version"], tmp_path)  # this machine, as is
    assert r.returncode == 0 and r.stdout.startswith("edged "), r.stderr
    for machine in ("aarch64", "arm64", "x86_64", "AMD64"):
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        assert unsupported_reason() is None


def test_pi_extra_is_64_bit_only() -> None:
    # the [pi] extra must not offer 32-bit ARM: edged cannot run there (it listed armv7l)
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pi = meta["project"]["optional-dependencies"]["pi"]
    assert pi and all("armv7l" not in req and "platform_machine == 'aarch64'" in req for req in pi)
