"""The client side of the control socket (:mod:`.control` is the server): one JSON request, one JSON reply.

Light on purpose: ``edged ctl`` talks to a daemon without importing it."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


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
