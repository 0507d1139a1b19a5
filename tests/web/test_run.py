"""``edged run`` serves the page and API by default (loopback), on the LAN when configured, with the credential
created at first start and printed by ``edged ctl token``; a port already taken is a problem, not a crash."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

import httpx

from edged.deploy.testing import free_port
from tests.cli.test_run import PATIENCE, ctl, start, wait_for
from tests.cli.test_run import site as site  # the fixture


def http_section(site: Path, text: str) -> None:
    (site / "edged.toml").write_text((site / "edged.toml").read_text() + "\n[http]\n" + text + "\n")


def test_edged_run_serves_the_api_and_ctl_shows_the_credential(site: Path) -> None:
    port = free_port()
    http_section(site, f'bind = "0.0.0.0"\nport = {port}')
    proc = start(site)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/api/state") is not None, "the web server")
        assert _get(f"{url}/api/state") == 401  # on the LAN: reads need the credential
        token_file = site / "state" / "http-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        shown = ctl(site, "token")
        assert shown.returncode == 0 and shown.stdout.strip() == token_file.read_text().strip()
        auth = {"authorization": f"Bearer {shown.stdout.strip()}"}
        assert httpx.get(f"{url}/api/state", headers=auth, timeout=10).json()["displays"][0]["name"] == "main"
        assert ctl(site, "power", "main", "off").returncode == 0
        assert httpx.get(f"{url}/api/displays/main", headers=auth, timeout=10).json()["power"] is False
        assert (
            httpx.post(f"{url}/api/displays/main/power", json={"on": True}, headers=auth, timeout=10).status_code == 200
        )
        dimmed = ctl(site, "brightness", "main", "64")
        assert dimmed.returncode == 0 and json.loads(dimmed.stdout)["brightness"] == 64
        bad = ctl(site, "brightness", "main", "300")
        assert bad.returncode == 2 and "brightness takes 0-255" in bad.stderr
        refused = ctl(site, "power", "nope", "on")
        assert refused.returncode == 1 and "unknown display 'nope'" in refused.stderr
        assert ctl(site, "play", "main", "blue").returncode == 1  # not in the playlist: refused
        # a second daemon on the same port: a problem that says what to do, and it still runs
        other = site / "other"
        other.mkdir()
        (other / "edged.toml").write_text(
            (site / "edged.toml")
            .read_text()
            .replace('state_dir = "state"', 'state_dir = "other-state"')
            .replace(".sock", "-2.sock")
            .replace('plugins_dir = ["plugins"]', f'plugins_dir = ["{site / "plugins"}"]')
        )
        second = start(other, "--frames", "20")
        assert second.wait(timeout=PATIENCE) == 0
        err = second.stderr.read() if second.stderr else ""
        assert f"http: cannot serve the web page on 0.0.0.0:{port}" in err and "--no-http" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=PATIENCE) == 0
    assert _get(f"{url}/api/state") is None  # stopped with the daemon


def test_no_http(site: Path) -> None:
    port = free_port()
    http_section(site, f"port = {port}")
    proc = start(site, "--no-http")
    try:
        wait_for(lambda: ctl(site, "displays").returncode == 0, "the daemon")
        assert _get(f"http://127.0.0.1:{port}/api/state") is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=PATIENCE) == 0


def _get(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except (TimeoutError, httpx.ConnectError, httpx.ReadError, httpx.TimeoutException):
        return None
