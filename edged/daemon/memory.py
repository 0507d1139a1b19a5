"""The memory plan: what the configured plugins may use together, against what the machine has.

Everything one plugin can make the host hold (its memories, the kernel's blocks and vars) is capped by
``daemon.plugin_memory_mb`` (a manifest can only ask for less). The caps are what misbehaving plugins can reach, so
their sum plus edged itself must fit the machine, or a memory bomb takes the whole Pi down through the OOM killer
instead of one plugin trapping.
"""

from __future__ import annotations

from pathlib import Path

from ..host.plugin import DEFAULT_PLUGIN_MEMORY_MB

#: edged itself (Python, wasmtime, numpy, the compiled modules) with 10 plugins loaded, measured ~85 MiB RSS; rounded up
EDGED_BASE_MB = 100

#: device classes and a ``plugin_memory_mb`` that lets ten plugins fit beside the OS (see docs/daemon.md, Sizing)
DEVICE_CLASSES: dict[str, tuple[int, int]] = {
    # name: (RAM in MiB, plugin_memory_mb)
    "Pi Zero 2 W / Pi 3A+ (512 MB)": (512, DEFAULT_PLUGIN_MEMORY_MB),  # the default
    "Pi 3B/3B+ (1 GB)": (1024, 48),
    "Pi 4/5 (2 GB or more)": (2048, 64),
}


def machine_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal in MiB (what the kernel can hand out, after the GPU's share on a Pi), or None when unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_problem(caps_mb: dict[str, float], machine_mb: int | None) -> str | None:
    """``None`` when edged plus every plugin at its cap fits in ``machine_mb``; else a message with the numbers and
    how to size them."""
    if machine_mb is None or not caps_mb:
        return None
    total = EDGED_BASE_MB + sum(caps_mb.values())
    if total <= machine_mb:
        return None
    biggest = max(caps_mb.values())
    fit = max(1, int((machine_mb - EDGED_BASE_MB) / len(caps_mb))) if machine_mb > EDGED_BASE_MB else 0
    return (
        f"the configured memory does not fit this machine: {len(caps_mb)} plugins capped at up to {biggest:g} MiB "
        f"each ({sum(caps_mb.values()):g} MiB) plus edged (~{EDGED_BASE_MB} MiB) is {total:g} MiB, and this "
        f"machine has {machine_mb} MiB; lower daemon.plugin_memory_mb (at most {fit} for {len(caps_mb)} plugins "
        "here; 16 fits ten on a Pi Zero 2 W) or run fewer plugins (docs/daemon.md, Sizing)"
    )
