"""Where a daemon keeps its state and its control socket, found without loading (or validating) its whole config:
``edged ctl`` asks this before it talks to a daemon."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..tomlconfig import read_toml


def default_state_dir() -> Path:
    """``$EDGED_STATE_DIR``, else ``/var/lib/edged`` for root, else ``~/.local/state/edged``."""
    if env := os.environ.get("EDGED_STATE_DIR"):
        return Path(env)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/edged")
    return Path.home() / ".local" / "state" / "edged"


def control_socket(config_file: str | Path | None) -> Path:
    """The control socket of a daemon run with ``config_file`` (None: the embedded default), as its
    ``DaemonConfig.control_socket`` says: ``[daemon] control_socket``, else ``control.sock`` in ``[daemon]
    state_dir``, else in :func:`default_state_dir`; relative paths are against the file's folder."""
    if config_file is None:
        return default_state_dir() / "control.sock"
    daemon = read_toml(config_file).get("daemon", {})
    if not isinstance(daemon, dict):
        raise ConfigError(f"{config_file}: daemon: expected a table")
    base = Path(config_file).resolve().parent

    def setting(key: str) -> Path | None:
        value = daemon.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{config_file}: daemon.{key}: expected a path")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    return setting("control_socket") or (setting("state_dir") or default_state_dir()) / "control.sock"
