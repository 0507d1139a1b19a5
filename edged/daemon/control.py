"""The local control interface: a Unix socket speaking one JSON request and one JSON reply per line.

Requests: ``{"cmd": "list"}``, ``{"cmd": "stats"}``, ``{"cmd": "health"}``, ``{"cmd": "problems"}``,
``{"cmd": "reload"}``,
``{"cmd": "switch", "display": "main", "playlist": "night", "layer": null}``,
``{"cmd": "next", "display": "main", "layer": null}``, ``{"cmd": "play", "display": "main", "plugin": "fire"}``,
``{"cmd": "power", "display": "main", "on": false}``, ``{"cmd": "brightness", "display": "main", "brightness": 64}``,
``{"cmd": "identify", "seconds": 5}``, ``{"cmd": "displays"}``, ``{"cmd": "sensors"}``, and on the socket only
``{"cmd": "token"}`` (the web credential) and ``{"cmd": "decommission"}`` (remove the device from Home Assistant).
Replies: ``{"ok": true, "result": …}`` or ``{"ok": false, "error": "…"}``.
The socket is created mode 0600: only the daemon's user may control it. The HTTP API (:mod:`edged.web`) runs the
same commands through :func:`execute`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .daemon import Daemon

log = logging.getLogger("edged.daemon")

MAX_REQUEST = 64 * 1024


Command = Literal[
    "list",
    "stats",
    "health",
    "problems",
    "reload",
    "switch",
    "next",
    "play",
    "power",
    "brightness",
    "identify",
    "displays",
    "sensors",
    "token",
    "decommission",
]


class ControlRequest(BaseModel):
    """One command, from the control socket or the HTTP API."""

    model_config = ConfigDict(extra="forbid")
    cmd: Command
    display: str | None = None
    layer: str | None = None
    playlist: str | None = None
    plugin: str | None = None
    on: bool | None = None
    brightness: int | None = Field(default=None, ge=0, le=255)
    seconds: float | None = Field(default=None, gt=0, le=3600)


def execute(daemon: Daemon, req: ControlRequest) -> Any:
    """Run one command on ``daemon`` and return its result; the one code path of ``edged ctl`` and the HTTP API.

    Raises :class:`KeyError` for an unknown display, layer, playlist or plugin and :class:`ValueError` for a
    command that cannot be done (a missing argument, a playlist whose plugins do not load); nothing changes then.
    """
    if req.cmd == "list":
        return daemon.list_plugins()
    if req.cmd == "stats":
        return daemon.stats()
    if req.cmd == "health":
        return daemon.health()
    if req.cmd == "problems":
        return daemon.stats()["problems"]
    if req.cmd == "reload":
        report = daemon.reload()
        if report.get("error"):  # the config did not load: nothing changed, and the caller must hear why
            raise ValueError("reload refused, the daemon runs on: " + "; ".join(report["error"]))
        return report
    if req.cmd == "identify":
        seconds = req.seconds or 5.0
        daemon.identify(seconds)
        return {"identify_s": seconds, "displays": sorted(daemon.displays)}
    if req.cmd == "displays":
        return [daemon.display_state(name) for name in list(daemon.displays)]
    if req.cmd == "sensors":
        return daemon.sensor_values()
    if req.cmd in ("token", "decommission"):
        raise ValueError(f"'{req.cmd}' is answered on the control socket only")
    if req.display is None:
        raise ValueError(f"'{req.cmd}' needs a display")
    if req.cmd == "switch":
        if req.playlist is None:
            raise ValueError("'switch' needs a playlist")
        layer = daemon.switch_playlist(req.display, req.playlist, req.layer)
        return {"display": req.display, "layer": layer, "playlist": req.playlist}
    if req.cmd == "next":
        return {"display": req.display, "playing": daemon.next_item(req.display, req.layer)}
    if req.cmd == "play":
        if req.plugin is None:
            raise ValueError("'play' needs a plugin")
        return {"display": req.display, "playing": daemon.play(req.display, req.plugin, req.layer)}
    if req.cmd == "power":
        if req.on is None:
            raise ValueError("'power' needs on (true or false)")
        return daemon.set_power(req.display, req.on)
    if req.brightness is None:
        raise ValueError("'brightness' needs a brightness (0-255)")
    return daemon.set_brightness(req.display, req.brightness)


def validation_message(exc: ValidationError) -> str:
    """One line naming the first field that is wrong and why."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return f"bad request: {where}: {first['msg']}"


def handle(daemon: Daemon, raw: bytes, local: dict[str, Callable[[], Any]] | None = None) -> dict[str, Any]:
    """Answer one request line; never raises. ``local`` answers commands only the socket may (``token``)."""
    try:
        req = ControlRequest.model_validate_json(raw)
    except ValidationError as exc:
        return {"ok": False, "error": validation_message(exc)}
    try:
        if local is not None and req.cmd in local:
            return {"ok": True, "result": local[req.cmd]()}
        return {"ok": True, "result": execute(daemon, req)}
    except (KeyError, ValueError) as exc:
        return {"ok": False, "error": exc.args[0] if exc.args else str(exc)}


class ControlServer:
    """Serves :func:`handle` on a Unix socket in a background thread."""

    def __init__(self, daemon: Daemon, path: Path, local: dict[str, Callable[[], Any]] | None = None) -> None:
        self.daemon = daemon
        self.path = path
        #: commands answered only here, never over HTTP (``token``: the web credential)
        self.local = local or {}
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST + 1)
                if len(line) > MAX_REQUEST:
                    reply: dict[str, Any] = {"ok": False, "error": "request too large"}
                else:
                    reply = handle(owner.daemon, line, owner.local)
                self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")

        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if _alive(path):
                raise OSError(f"another edged is listening on {path}")
            path.unlink()
        old = os.umask(0o177)
        try:
            self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        finally:
            os.umask(old)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="edged-control", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("control socket listening", extra={"path": str(self.path)})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True
