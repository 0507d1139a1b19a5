"""The HTTP API, the live view and ``/metrics`` of a running daemon, as one FastAPI application.

Every change goes through :func:`edged.daemon.control.execute`, the code path of ``edged ctl``: the API can do what
``ctl`` can, and answers the same errors. Bodies are pydantic models; errors are ``{"error": "…"}`` with a 4xx
status, and change nothing. The page and its assets are served from this package (no CDN); the OpenAPI description
is at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..daemon.control import ControlRequest, execute
from .auth import SESSION_COOKIE, Guard, Refusal
from .live import LiveHub
from .metrics import CONTENT_TYPE, make_registry, render_metrics

if TYPE_CHECKING:
    from ..daemon.daemon import Daemon
    from ..deploy.agent_view import AgentSource

log = logging.getLogger("edged.web")

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

_STRICT = ConfigDict(extra="forbid")


class LayerBody(BaseModel):
    model_config = _STRICT
    layer: str | None = Field(default=None, description="layer name (default: the display's first layer)")


class PlaylistBody(LayerBody):
    playlist: str


class PlayBody(LayerBody):
    plugin: str


class PowerBody(BaseModel):
    model_config = _STRICT
    on: bool


class BrightnessBody(BaseModel):
    model_config = _STRICT
    brightness: int = Field(ge=0, le=255, description="0-255, applied before gamma")


class IdentifyBody(BaseModel):
    model_config = _STRICT
    seconds: float = Field(default=5.0, gt=0, le=3600)


class SessionBody(BaseModel):
    model_config = _STRICT
    token: str = Field(max_length=512)


class Layer(BaseModel):
    name: str
    playlist: str | None
    playing: str | None
    items: list[str]
    x: int
    y: int
    width: int
    height: int


class Display(BaseModel):
    name: str
    width: int
    height: int
    fps: float
    power: bool
    brightness: int
    layers: list[Layer]


class PluginRow(BaseModel):
    display: str | None
    layer: str | None
    plugin: str
    version: str
    kind: str
    playing: bool
    quarantined: bool
    strikes: int
    stats: dict[str, Any] = Field(default_factory=dict)


class ProblemRow(BaseModel):
    where: str
    message: str
    t: float


class Playlist(BaseModel):
    loop: bool
    items: list[dict[str, Any]]


class State(BaseModel):
    """Everything the page shows, in one read."""

    device: str
    uptime_s: float
    auth: dict[str, bool]
    displays: list[Display]
    playlists: dict[str, Playlist]
    plugins: list[PluginRow]
    problems: list[ProblemRow]
    sensors: dict[str, dict[str, str]]


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before the application reads it whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_error(send, 413, f"request body too large (at most {self.limit} bytes)")
            return
        # bodies are small (a limit of 64 KiB by default): read it whole here, refusing it as soon as it is too big
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _send_error(send, 413, f"request body too large (at most {self.limit} bytes)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_error(send: Send, status: int, message: str) -> None:
    body = JSONResponse({"error": message}).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    daemon: Daemon,
    guard: Guard,
    *,
    device: str = "edged",
    fps_max: float = 30.0,
    max_body: int = 64 * 1024,
    agent: AgentSource | None = None,
) -> ASGIApp:
    """The ASGI application for ``daemon`` (a :class:`~edged.daemon.daemon.Daemon`)."""
    app = FastAPI(
        title="edged",
        summary="The HTTP API of an edged device: displays, playlists, plugins, live view, metrics",
        version="1",
        docs_url=None,  # the Swagger and ReDoc pages load their scripts from a CDN: only the description is served
        redoc_url=None,
    )
    hub = LiveHub(daemon, fps_max)
    registry = make_registry(daemon, agent)
    app.state.hub = hub

    @app.middleware("http")
    async def guard_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        public = request.method in ("GET", "HEAD") and (path == "/" or path.startswith("/static/"))
        if not public:
            refusal: Refusal | None = guard.check(
                request.method,
                {k.lower(): v for k, v in request.headers.items()},
                dict(request.cookies),
                host=request.headers.get("host", ""),
                scheme=request.url.scheme,
                exempt=path == "/api/session",
            )
            if refusal is not None:
                if refusal.status in (401, 403) and request.headers.get("authorization"):
                    log.warning("web request refused", extra={"path": path, "reason": refusal.message})
                return _error(refusal.status, refusal.message)
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            return _error(400, f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}")
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return _error(422, f"bad request: {where}: {first['msg']}")

    def run(req: ControlRequest) -> Any:
        try:
            return execute(daemon, req)
        except KeyError as exc:
            return _error(404, exc.args[0] if exc.args else str(exc))
        except ValueError as exc:
            return _error(409, exc.args[0] if exc.args else str(exc))

    def display_or_404(name: str) -> JSONResponse | None:
        if name not in daemon.displays:
            return _error(404, f"unknown display '{name}' (known: {sorted(daemon.displays)})")
        return None

    # --- reads ---------------------------------------------------------------------------------------------------

    @app.get("/api/state", response_model=State, tags=["read"])
    def state() -> Any:
        """Displays, playlists, plugins with their statistics, problems and sensor values."""
        stats = daemon.stats()
        rows = [{**row.summary(), "stats": row.stats()} for row in daemon.plugin_rows()]
        return {
            "device": device,
            "uptime_s": stats["uptime_s"],
            "auth": {"lan": guard.lan, "reads_need_credential": guard.reads_need_credential},
            "displays": execute(daemon, ControlRequest(cmd="displays")),
            "playlists": {k: v.model_dump(mode="json") for k, v in daemon.config.playlists.items()},
            "plugins": rows,
            "problems": stats["problems"],
            "sensors": daemon.sensor_values(),
        }

    @app.get("/api/displays", response_model=list[Display], tags=["read"])
    def displays() -> Any:
        return run(ControlRequest(cmd="displays"))

    @app.get("/api/displays/{name}", response_model=Display, tags=["read"])
    def display(name: str) -> Any:
        return display_or_404(name) or daemon.display_state(name)

    @app.get("/api/displays/{name}/layers", response_model=list[Layer], tags=["read"])
    def layers(name: str) -> Any:
        return display_or_404(name) or daemon.display_state(name)["layers"]

    @app.get("/api/playlists", response_model=dict[str, Playlist], tags=["read"])
    def playlists() -> Any:
        return {k: v.model_dump(mode="json") for k, v in daemon.config.playlists.items()}

    @app.get("/api/plugins", response_model=list[PluginRow], tags=["read"])
    def plugins() -> Any:
        return state()["plugins"]

    @app.get("/api/stats", tags=["read"])
    def stats() -> Any:
        """What ``edged ctl stats`` prints."""
        return run(ControlRequest(cmd="stats"))

    @app.get("/api/problems", response_model=list[ProblemRow], tags=["read"])
    def problems() -> Any:
        return run(ControlRequest(cmd="problems"))

    @app.get("/api/sensors", response_model=dict[str, dict[str, str]], tags=["read"])
    def sensors() -> Any:
        """Each sensor plugin's published values (text)."""
        return run(ControlRequest(cmd="sensors"))

    @app.get("/metrics", tags=["read"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(render_metrics(registry), media_type=CONTENT_TYPE)

    @app.get("/api/live", tags=["read"], response_class=StreamingResponse)
    async def live(request: Request) -> StreamingResponse:
        """Server-sent events: ``frame`` events (display, seq, width, height, rgb: base64 of H×W×3 bytes) as the
        LEDs show them, at the display's rate capped at ``http.live_fps_max``."""

        async def events() -> AsyncIterator[str]:
            hub.attach()
            try:
                yield "retry: 1000\n\n"
                sent: dict[str, int] = {}
                ping, last = time.monotonic(), 0.0
                while True:
                    await hub.next_frame(timeout=1.0)  # woken right after a display showed a frame
                    now = time.monotonic()
                    if now - last < hub.min_interval():
                        continue
                    hub.keep()
                    for name in list(daemon.displays):
                        item = hub.frame(name)
                        if item is not None and sent.get(name) != item[0]:
                            sent[name] = item[0]
                            last = now
                            yield f"event: frame\ndata: {item[1]}\n\n"
                    if now - ping > 15:
                        ping = now
                        yield ": ping\n\n"
            finally:
                hub.detach()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})

    # --- changes -------------------------------------------------------------------------------------------------

    @app.post("/api/displays/{name}/playlist", tags=["control"])
    def switch(name: str, body: PlaylistBody) -> Any:
        """Play another playlist on a layer (``edged ctl switch``)."""
        return run(ControlRequest(cmd="switch", display=name, playlist=body.playlist, layer=body.layer))

    @app.post("/api/displays/{name}/next", tags=["control"])
    def next_item(name: str, body: LayerBody | None = None) -> Any:
        """Cut to the next item of a layer's playlist (``edged ctl next``)."""
        return run(ControlRequest(cmd="next", display=name, layer=body.layer if body else None))

    @app.post("/api/displays/{name}/play", tags=["control"])
    def play(name: str, body: PlayBody) -> Any:
        """Cut to a plugin of a layer's playlist (``edged ctl play``)."""
        return run(ControlRequest(cmd="play", display=name, plugin=body.plugin, layer=body.layer))

    @app.post("/api/displays/{name}/power", response_model=Display, tags=["control"])
    def power(name: str, body: PowerBody) -> Any:
        """Switch a display's LEDs off or on; plugins keep running (``edged ctl power``)."""
        return run(ControlRequest(cmd="power", display=name, on=body.on))

    @app.post("/api/displays/{name}/brightness", response_model=Display, tags=["control"])
    def brightness(name: str, body: BrightnessBody) -> Any:
        """Set a display's brightness, 0-255 (``edged ctl brightness``)."""
        return run(ControlRequest(cmd="brightness", display=name, brightness=body.brightness))

    @app.post("/api/identify", tags=["control"])
    def identify(body: IdentifyBody | None = None) -> Any:
        """Blink a white border on every display (``edged ctl identify``)."""
        return run(ControlRequest(cmd="identify", seconds=body.seconds if body else 5.0))

    @app.post("/api/reload", tags=["control"])
    def reload() -> Any:
        """Re-read the config file, as SIGHUP does (``edged ctl reload``)."""
        return run(ControlRequest(cmd="reload"))

    @app.post("/api/session", tags=["session"])
    async def login(body: SessionBody) -> Response:
        """Trade the credential for a session cookie and the CSRF token the page sends with each change."""
        if not guard.token_ok(body.token):
            await asyncio.sleep(0.5)  # slows guessing down
            log.warning("wrong web credential")
            return _error(403, "wrong credential (see 'edged ctl token' on the device)")
        sid, csrf = guard.new_session()
        response = JSONResponse({"csrf": csrf})
        response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/")
        return response

    @app.delete("/api/session", tags=["session"])
    def logout(request: Request) -> Response:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            guard.drop_session(sid)
        response = JSONResponse({"ok": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- the page ------------------------------------------------------------------------------------------------

    files = resources.files(__package__) / "static"

    def static(name: str) -> Response:
        if name not in STATIC:
            return _error(404, f"no such file: {name}")
        return Response((files / name).read_bytes(), media_type=STATIC[name])

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        return static(name)

    return BodyLimit(app, max_body)
