"""``edged preview PLUGIN --serve`` (issue 17, point 2): one plugin live on the daemon's page, reloaded when its
.wasm is rebuilt; a rebuild that does not load is a problem on the page and the last good one keeps playing."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from edged.deploy.testing import free_port
from tests.engine.anims import solid

from .test_api import eventually


def live_colour(url: str) -> tuple[int, int, int] | None:
    try:
        with httpx.Client(timeout=5) as c, c.stream("GET", f"{url}/api/live") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    doc = json.loads(line[6:])
                    rgb = np.frombuffer(base64.b64decode(doc["rgb"]), np.uint8).reshape(doc["height"], doc["width"], 3)
                    return tuple(int(v) for v in rgb[0, 0])  # type: ignore[return-value]
    except httpx.HTTPError:
        return None
    return None


def test_preview_serve_reloads_the_plugin_when_it_is_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "glow"
    folder.mkdir()
    wasm = folder / "glow.wasm"
    wasm.write_bytes(solid(255, 0, 0))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "preview", str(folder), "--serve", "--port", str(port), "--size", "12x6"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # started with SIGINT ignored, as a shell without job control starts a background job (`tests/run &`: the
        # whole suite and every process it starts then have it ignored); it must stop on SIGINT all the same
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: live_colour(url) == (255, 0, 0), timeout=60)
        state = httpx.get(f"{url}/api/state", timeout=10).json()
        (display,) = state["displays"]
        assert (display["name"], display["width"], display["height"]) == ("glow", 12, 6)
        assert state["device"] == "preview: glow"
        time.sleep(0.1)
        wasm.write_bytes(solid(0, 255, 0))  # the author rebuilds
        eventually(lambda: live_colour(url) == (0, 255, 0), timeout=30)
        wasm.write_bytes(b"\0asm broken")  # a build that does not load
        eventually(lambda: httpx.get(f"{url}/api/problems", timeout=10).json(), timeout=30)
        problem = httpx.get(f"{url}/api/problems", timeout=10).json()[-1]
        assert problem["where"] == "rebuilt plugin 'glow'" and "the last build plays on" in problem["message"]
        assert live_colour(url) == (0, 255, 0)  # the last good build keeps playing
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert f"glow live at {url}/" in err
