"""The daemon behind ``edged run``: config, hardware, displays and plugins under supervision, live control."""

from .config import DaemonConfig, default_config, load_config
from .daemon import Daemon, DisplayGeometry

__all__ = ["Daemon", "DaemonConfig", "DisplayGeometry", "default_config", "load_config"]
