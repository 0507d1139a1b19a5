"""The local control interface: a Unix socket speaking one JSON request and one JSON reply per line.

Requests: ``{"cmd": "list"}``, ``{"cmd": "stats"}``, ``{"cmd": "health"}``, ``{"cmd": "problems"}``, ``{"cmd":
"reload"}``, ``{"cmd": "switch", "display": "main", "playlist": "night", "layer": null}``, ``{"cmd": "next",
"display": "main", "layer": null}``. Replies: ``{"ok": true, "result": …}`` or ``{"ok": false, "error": "…"}``. The
socket is created mode 0600: only the daemon's user may control it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .daemon import Daemon

log = logging.getLogger("edged.daemon")

MAX_REQUEST = 64 * 1024


class ControlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cmd: Literal["list", "stats", "problems", "reload", "switch", "next", "health"]
    display: str | None = None
    layer: str | None = None
    playlist: str | None = None


def handle(daemon: Daemon, raw: bytes) -> dict[str, Any]:
    """Answer one request line; never raises."""
    try:
        req = ControlRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        return {"ok": False, "error": f"bad request: {where}: {first['msg']}"}
    try:
        if req.cmd == "list":
            return {"ok": True, "result": daemon.list_plugins()}
        if req.cmd == "stats":
            return {"ok": True, "result": daemon.stats()}
        if req.cmd == "health":
            return {"ok": True, "result": daemon.health()}
        if req.cmd == "problems":
            return {"ok": True, "result": daemon.stats()["problems"]}
        if req.cmd == "reload":
            report = daemon.reload()
            if report.get("error"):  # the config did not load: nothing changed, and the caller must hear why
                return {"ok": False, "error": "reload refused, the daemon runs on: " + "; ".join(report["error"])}
            return {"ok": True, "result": report}
        if req.display is None:
            return {"ok": False, "error": f"'{req.cmd}' needs a display"}
        if req.cmd == "switch":
            if req.playlist is None:
                return {"ok": False, "error": "'switch' needs a playlist"}
            layer = daemon.switch_playlist(req.display, req.playlist, req.layer)
            return {"ok": True, "result": {"display": req.display, "layer": layer, "playlist": req.playlist}}
        return {"ok": True, "result": {"display": req.display, "playing": daemon.next_item(req.display, req.layer)}}
    except (KeyError, ValueError) as exc:
        return {"ok": False, "error": exc.args[0] if exc.args else str(exc)}


class ControlServer:
    """Serves :func:`handle` on a Unix socket in a background thread."""

    def __init__(self, daemon: Daemon, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST + 1)
                if len(line) > MAX_REQUEST:
                    reply: dict[str, Any] = {"ok": False, "error": "request too large"}
                else:
                    reply = handle(owner.daemon, line)
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


def request(path: Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to a running daemon and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    result: dict[str, Any] = json.loads(buf)
    return result
