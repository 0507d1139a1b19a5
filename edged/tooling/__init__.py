"""Tooling for plugin authors: scaffold a plugin from a template, and check one before it ships.

The ``edged plugin new`` and ``edged plugin check`` commands are thin wrappers over :func:`new_plugin` and
:func:`check_plugin`.
"""

from __future__ import annotations

from ..errors import ScaffoldError
from .check import CheckOptions, CheckReport, FrameStats, check_plugin
from .scaffold import LANGUAGES, build_hint, default_templates_dir, new_plugin, source_build_script

__all__ = [
    "LANGUAGES",
    "CheckOptions",
    "CheckReport",
    "FrameStats",
    "ScaffoldError",
    "build_hint",
    "check_plugin",
    "default_templates_dir",
    "new_plugin",
    "source_build_script",
]
