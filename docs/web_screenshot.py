#!/usr/bin/env python3
"""Regenerate docs/web.png: the embedded demo config on an emulated 16×16 matrix with a sensor kit's sensor, served
by the daemon and photographed in Debian's headless chromium (Playwright)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from edged.daemon import Daemon  # noqa: E402
from edged.daemon.config import default_config  # noqa: E402
from edged.daemon.hardware import DeviceHardware  # noqa: E402
from edged.web.server import WebServer  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = default_config()
        cfg = cfg.model_copy(update={"daemon": cfg.daemon.model_copy(update={"state_dir": Path(tmp)})})
        daemon = Daemon(cfg, DeviceHardware("emulated-16x16", emulate=True))
        daemon.start()
        daemon.play("main", "fire")
        web = WebServer(daemon, port=0, token="screenshot-credential-0123", device="pi-hall")
        web.start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium")
                page = browser.new_page(viewport={"width": 900, "height": 760})
                page.goto(web.url)
                page.wait_for_selector("canvas[data-seq]")
                time.sleep(2.5)  # two state refreshes: the plugins' fps column is filled
                page.screenshot(path=str(ROOT / "docs" / "web.png"))
                browser.close()
        finally:
            web.close()
            daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
