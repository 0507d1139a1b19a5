"""Is this a platform edged runs on? Checked by the command line before anything imports wasmtime.

wasmtime ships native code for 64-bit x86 and ARM only: on a 32-bit OS (Raspberry Pi OS 32-bit, a Pi Zero W, Pi 1
or Pi 2) pip installs its generic wheel, whose import fails with a traceback. edged says what is needed instead.
"""

from __future__ import annotations

import platform
import sys

#: ``platform.machine()`` values wasmtime has native code for, normalised
SUPPORTED_MACHINES = ("x86_64", "aarch64")
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}

#: which Raspberry Pi boards can run a 64-bit OS, and which cannot
PI_MODELS = (
    "Raspberry Pi 3, 4, 5, 400, 500, Zero 2 W, Compute Module 3/4/5 or Pi 2 v1.2 with Raspberry Pi OS (64-bit); "
    "Pi 1, Pi 2 (before v1.2), Zero and Zero W cannot run edged"
)


def unsupported_reason() -> str | None:
    """``None`` on a supported platform, else one line saying what edged needs and which Pi models have it."""
    machine = platform.machine()
    arch = _ALIASES.get(machine.lower(), machine)
    if sys.maxsize <= 2**32:
        # a 32-bit userland on a 64-bit kernel (Raspberry Pi OS 32-bit on a Pi 4) reports aarch64 here
        return f"edged needs a 64-bit OS (this Python is 32-bit, on {machine or 'an unknown CPU'}): {PI_MODELS}"
    if arch not in SUPPORTED_MACHINES:
        return (
            f"edged needs a 64-bit x86_64 or aarch64 (ARM64) machine; this one is {machine or 'unknown'}, which "
            f"wasmtime has no native code for. On a Pi: {PI_MODELS}"
        )
    return None
