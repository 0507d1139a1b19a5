"""Data that ships with edged: the hardware profiles, their example scenarios and the demo plugins.

In a source checkout they live where a reader expects them (``hardware/``, ``hardware/scenarios/``,
``plugins/gallery/``); a built wheel carries copies as package data under ``edged/_bundled/`` (``setup.py`` copies
them at build time), found through :mod:`importlib.resources`. Callers get a real folder either way.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

Kind = Literal["hardware", "scenarios", "plugins"]

#: where each kind lives in a source checkout, relative to the repository root
SOURCE_LAYOUT: dict[str, str] = {
    "hardware": "hardware",
    "scenarios": "hardware/scenarios",
    "plugins": "plugins/gallery",
}


def bundled_dir(kind: Kind) -> Path:
    """The folder holding the bundled ``kind``: the installed package data, else the source checkout's folder
    (which may not exist: callers treat a missing folder as "nothing bundled")."""
    installed = files("edged").joinpath("_bundled", kind)
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[1] / SOURCE_LAYOUT[kind]
