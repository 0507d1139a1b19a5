"""The daemon behind ``edged run``: config, hardware, displays and plugins under supervision, live control.

Its names load on first use, so that light modules of this package (:mod:`.client`, :mod:`.paths`, :mod:`.logs`)
serve ``edged ctl`` without importing the daemon, pydantic or wasmtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import DaemonConfig, default_config, load_config
    from .daemon import Daemon, DisplayGeometry

__all__ = ["Daemon", "DaemonConfig", "DisplayGeometry", "default_config", "load_config"]

_HOME = {
    "Daemon": ".daemon",
    "DisplayGeometry": ".daemon",
    "DaemonConfig": ".config",
    "default_config": ".config",
    "load_config": ".config",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name], __name__), name)
