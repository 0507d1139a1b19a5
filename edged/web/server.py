"""The web server of ``edged run``: uvicorn on a thread of its own, so the frame threads never wait for it."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import TYPE_CHECKING

import uvicorn

from ..daemon.config import DaemonConfig
from .app import create_app
from .auth import Guard, is_loopback, load_or_create_token

if TYPE_CHECKING:
    from ..daemon.daemon import Daemon
    from ..deploy.agent_view import AgentSource, AgentView

log = logging.getLogger("edged.web")


class WebServer:
    """Serves :func:`~edged.web.app.create_app` for a daemon. ``start()`` binds (raising :class:`OSError` when the
    address is taken) and returns; ``close()`` stops it. ``port`` is the bound port (useful with port 0)."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        bind: str = "127.0.0.1",
        port: int = 8080,
        token: str,
        open_reads: bool = False,
        device: str = "edged",
        fps_max: float = 30.0,
        max_body: int = 64 * 1024,
        agent: AgentView | AgentSource | None = None,
    ) -> None:
        """``agent``: the MQTT agent for ``/metrics``, or a callable returning it (it may start later)."""
        self.bind = bind
        self.guard = Guard(token, lan=not is_loopback(bind), open_reads=open_reads)
        get_agent = agent if callable(agent) else lambda: agent
        self.app = create_app(daemon, self.guard, device=device, fps_max=fps_max, max_body=max_body, agent=get_agent)
        self._requested_port = port
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @classmethod
    def from_config(cls, daemon: Daemon, cfg: DaemonConfig, agent: AgentView | AgentSource | None = None) -> WebServer:
        h = cfg.http
        return cls(
            daemon,
            bind=h.bind,
            port=h.port,
            token=load_or_create_token(cfg.http_token_file),
            open_reads=h.open_reads,
            device=cfg.mqtt.device_id if cfg.mqtt else socket.gethostname(),
            fps_max=h.live_fps_max,
            max_body=h.max_body_bytes,
            agent=agent,
        )

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.bind, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def serve() -> None:
            assert self._server is not None
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            started.set()
            try:
                loop.run_until_complete(self._server.serve(sockets=[sock]))
            except Exception:
                log.exception("web server stopped on an error")
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="edged-web", daemon=True)
        self._thread.start()
        started.wait(5)
        log.info("web page and API listening", extra={"url": self.url, "lan": self.guard.lan})

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # live streams never end by themselves
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
