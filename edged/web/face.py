"""What ``edged run`` starts for the device's face: the web server and, when configured, Home Assistant discovery.

Neither may stop the daemon: an address already in use or a broker that cannot be reached is a problem shown by
``edged ctl problems`` (and on stderr at start), and the LEDs keep playing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..daemon.config import DaemonConfig
from .auth import load_or_create_token

if TYPE_CHECKING:
    from ..daemon.daemon import Daemon
    from ..deploy.agent_view import AgentView
    from ..homeassistant.bridge import HomeAssistantBridge
    from .server import WebServer

log = logging.getLogger("edged.web")


class Face:
    """Starts and stops the web server and the Home Assistant bridge of a running daemon."""

    def __init__(self, daemon: Daemon, cfg: DaemonConfig, agent: AgentView | None = None, *, http: bool = True) -> None:
        self.daemon = daemon
        self.cfg = cfg
        self.agent: AgentView | None = agent
        self.http = http
        self.web: WebServer | None = None
        self.ha: HomeAssistantBridge | None = None
        self.token = ""
        if http:  # imports and builds the application now, before the frame threads run
            from .server import WebServer

            try:
                self.token = load_or_create_token(cfg.http_token_file)
                self.web = WebServer.from_config(daemon, cfg, lambda: self.agent)
            except OSError as exc:
                self._http_problem(exc)
        if cfg.mqtt is not None:
            from ..homeassistant import bridge  # noqa: F401  (paho is loaded already; this is the rest)

    @property
    def local(self) -> dict[str, Callable[[], Any]]:
        """Commands only the control socket answers: ``token`` prints the web credential."""
        return {
            "token": lambda: self.token or load_or_create_token(self.cfg.http_token_file),
            "decommission": self.decommission,
        }

    def decommission(self) -> dict[str, Any]:
        """Remove the device from Home Assistant (every discovery document), for a device leaving service."""
        if self.ha is None:
            raise ValueError(
                "Home Assistant discovery is not running (enable it in [mqtt.home_assistant], or it was decommissioned)"
            )
        try:
            removed = self.ha.remove()
        except OSError as exc:
            raise ValueError(str(exc)) from None
        self.ha.stop()
        self.ha = None
        return {"removed": removed}

    def start(self) -> None:
        """Listen (an address in use is a problem, not an error) and start the Home Assistant bridge."""
        if self.web is not None:
            try:
                self.web.start()
            except OSError as exc:
                self._http_problem(exc)
                self.web = None
        mqtt = self.cfg.mqtt
        if mqtt is not None and mqtt.home_assistant.enabled:
            from ..homeassistant.bridge import HomeAssistantBridge

            self.ha = HomeAssistantBridge.from_config(self.daemon, self.cfg, self.cfg.state_dir, self.agent)
            self.ha.start()
        elif mqtt is not None and (self.cfg.state_dir / "homeassistant.json").exists():
            threading.Thread(target=self._remove_leftovers, name="edged-homeassistant-cleanup", daemon=True).start()

    def _http_problem(self, exc: OSError) -> None:
        h = self.cfg.http
        self.daemon._problem(
            "http",
            f"cannot serve the web page on {h.bind}:{h.port}: {exc.strerror or exc} "
            "(set [http] port or bind, or run with --no-http)",
        )

    def _remove_leftovers(self) -> None:
        """Home Assistant discovery was turned off since the last run: remove what that run announced."""
        from ..homeassistant.bridge import HomeAssistantBridge

        bridge = HomeAssistantBridge.from_config(self.daemon, self.cfg, self.cfg.state_dir)
        if not bridge._announced:
            return
        bridge.client.connect_async(bridge.broker.host, bridge.broker.port, keepalive=bridge.broker.keepalive)
        bridge.client.loop_start()
        try:
            bridge._on_connect_event.wait(30)
            bridge.connected.set()
            bridge.remove()
        except OSError as exc:
            log.warning("could not remove the old Home Assistant entities: %s", exc)
        finally:
            bridge.client.disconnect()
            bridge.client.loop_stop()

    def close(self) -> None:
        if self.ha is not None:
            self.ha.stop()
        if self.web is not None:
            self.web.close()
