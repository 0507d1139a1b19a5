"""The HTTP API (issue 17, points 1 and 3): reads, controls acting on the LEDs through ctl's code path, bad requests
answered 4xx without changing anything, and the credential and CSRF rules when bound beyond loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from edged.daemon.client import request
from edged.daemon.control import ControlServer

from .conftest import TOKEN, Face


def eventually(check: Callable[[], object], timeout: float = 10.0) -> object:
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not true after {timeout} s: {check}")
        time.sleep(0.05)


def client(face: Face, **kw: object) -> httpx.Client:
    return httpx.Client(base_url=face.url, timeout=10, **kw)  # type: ignore[arg-type]


def test_reads_show_displays_layers_playlists_plugins_problems_and_sensors(face: Face) -> None:
    with client(face) as c:
        eventually(lambda: c.get("/api/sensors").json().get("distance_sensor"))
        state = c.get("/api/state").json()
    (main,) = state["displays"]
    assert (main["name"], main["width"], main["height"], main["fps"], main["power"]) == ("main", 8, 8, 30, True)
    assert main["layers"][0]["playlist"] == "colors" and main["layers"][0]["playing"] == "red"
    assert main["layers"][0]["items"] == ["red", "green", "plasma"]
    assert set(state["playlists"]) == {"colors", "fire"}
    red = next(p for p in state["plugins"] if p["plugin"] == "red")
    assert red["stats"]["calls"] > 0 and red["strikes"] == 0 and red["quarantined"] is False
    assert any(p["plugin"] == "distance_sensor" and p["layer"] is None for p in state["plugins"])
    assert float(state["sensors"]["distance_sensor"]["distance_m"]) > 0
    assert state["problems"] == []
    with client(face) as c:
        assert c.get("/api/displays/main/layers").json()[0]["name"] == "main"
        assert c.get("/api/playlists").json()["fire"]["items"][0]["plugin"] == "fire"
        assert c.get("/api/stats").json()["displays"]["main"]["frames"] > 0
        assert c.get("/api/problems").json() == []


def test_openapi_describes_every_route(face: Face) -> None:
    with client(face) as c:
        doc = c.get("/openapi.json").json()
    paths = set(doc["paths"])
    for path in (
        "/api/state",
        "/api/displays",
        "/api/displays/{name}",
        "/api/displays/{name}/layers",
        "/api/playlists",
        "/api/plugins",
        "/api/problems",
        "/api/sensors",
        "/api/live",
        "/metrics",
        "/api/displays/{name}/playlist",
        "/api/displays/{name}/next",
        "/api/displays/{name}/play",
        "/api/displays/{name}/power",
        "/api/displays/{name}/brightness",
        "/api/identify",
        "/api/reload",
    ):
        assert path in paths, path
    body = doc["components"]["schemas"]["BrightnessBody"]["properties"]["brightness"]
    assert (body["minimum"], body["maximum"]) == (0, 255)


def red_level(face: Face) -> int:
    return int(face.latest()[..., 0].max())


def test_controls_change_the_leds(face: Face) -> None:
    with client(face) as c:
        eventually(lambda: red_level(face) > 200)
        assert c.post("/api/displays/main/brightness", json={"brightness": 40}).json()["brightness"] == 40
        eventually(lambda: 0 < red_level(face) < 120)
        assert c.post("/api/displays/main/power", json={"on": False}).json()["power"] is False
        eventually(lambda: not face.latest().any())
        c.post("/api/displays/main/power", json={"on": True})
        c.post("/api/displays/main/brightness", json={"brightness": 255})
        eventually(lambda: red_level(face) > 200)
        assert c.post("/api/displays/main/next").json() == {"display": "main", "playing": "green"}
        eventually(lambda: face.latest()[..., 1].min() > 200 and face.latest()[..., 0].max() == 0)
        assert c.post("/api/displays/main/play", json={"plugin": "red"}).json()["playing"] == "red"
        eventually(lambda: face.latest()[..., 0].min() > 200)
        reply = c.post("/api/displays/main/playlist", json={"playlist": "fire"}).json()
        assert reply == {"display": "main", "layer": "main", "playlist": "fire"}
        assert c.get("/api/displays/main").json()["layers"][0]["playlist"] == "fire"
        c.post("/api/displays/main/playlist", json={"playlist": "colors"})
        eventually(lambda: face.latest()[..., 0].min() > 200)  # red again, everywhere
        assert c.post("/api/identify", json={"seconds": 2}).json()["identify_s"] == 2
        eventually(lambda: face.latest()[0, 0].min() > 200)  # the white border


def test_the_api_and_ctl_share_one_code_path(face: Face, tmp_path: Path) -> None:
    sock = tmp_path / "ctl.sock"
    server = ControlServer(face.daemon, sock)
    server.start()
    try:
        assert request(sock, {"cmd": "brightness", "display": "main", "brightness": 77})["ok"]
        with client(face) as c:
            assert c.get("/api/displays/main").json()["brightness"] == 77
            c.post("/api/displays/main/power", json={"on": False})
            assert request(sock, {"cmd": "displays"})["result"][0]["power"] is False
            over_http = c.post("/api/displays/nope/next").json()["error"]
            over_ctl = request(sock, {"cmd": "next", "display": "nope"})["error"]
            assert over_http == over_ctl == "unknown display 'nope' (known: ['main'])"
            over_http = c.post("/api/displays/main/playlist", json={"playlist": "nope"}).json()["error"]
            over_ctl = request(sock, {"cmd": "switch", "display": "main", "playlist": "nope"})["error"]
            assert over_http == over_ctl and "unknown playlist 'nope'" in over_http
            # the credential is the socket's only: never over HTTP
            assert request(sock, {"cmd": "token"})["ok"] is False
    finally:
        server.close()


BAD = [
    ("/api/displays/nope/brightness", {"json": {"brightness": 10}}, 404, "unknown display 'nope'"),
    ("/api/displays/main/brightness", {"json": {"brightness": 256}}, 422, "brightness: Input should be less"),
    ("/api/displays/main/brightness", {"json": {"brightness": -1}}, 422, "brightness: Input should be greater"),
    ("/api/displays/main/brightness", {"json": {"brightness": "max"}}, 422, "brightness: Input should be a valid"),
    ("/api/displays/main/brightness", {"json": {}}, 422, "brightness: Field required"),
    ("/api/displays/main/brightness", {"json": {"brightness": 9, "x": 1}}, 422, "x: Extra inputs are not permitted"),
    (
        "/api/displays/main/brightness",
        {"content": b'{"brightness": 9', "headers": {"content-type": "application/json"}},
        400,
        "malformed JSON",
    ),
    (
        "/api/displays/main/brightness",
        {"content": b"brightness=9", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        415,
        "must be JSON",
    ),
    (
        "/api/displays/main/brightness",
        {
            "content": b'{"brightness": 9, "pad": "' + b"x" * 70_000 + b'"}',
            "headers": {"content-type": "application/json"},
        },
        413,
        "too large",
    ),
    ("/api/displays/main/power", {"json": {"on": "maybe"}}, 422, "on: Input should be a valid boolean"),
    ("/api/displays/main/playlist", {"json": {"playlist": "nope"}}, 404, "unknown playlist 'nope'"),
    ("/api/displays/main/play", {"json": {"plugin": "fire"}}, 404, "plugin 'fire' is not in the playlist"),
    ("/api/displays/main/next", {"json": {"layer": "nope"}}, 404, "unknown layer 'nope'"),
    ("/api/identify", {"json": {"seconds": 0}}, 422, "seconds: Input should be greater than 0"),
]


@pytest.mark.parametrize(("path", "kw", "status", "message"), BAD, ids=[f"{b[2]}-{b[3][:24]}" for b in BAD])
def test_bad_requests_get_a_4xx_with_a_clear_message_and_change_nothing(
    face: Face, path: str, kw: dict, status: int, message: str
) -> None:
    with client(face) as c:
        before = c.get("/api/displays/main").json()
        reply = c.post(path, **kw)
        assert reply.status_code == status, reply.text
        assert message in reply.json()["error"]
        after = c.get("/api/displays/main").json()
    for layer in (before, after):
        for item in layer["layers"]:
            item.pop("playing")
    assert after == before


def test_a_huge_streamed_body_is_cut_off(face: Face) -> None:
    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(100):
            yield b"x" * 4096

    with client(face) as c:
        reply = c.post("/api/displays/main/brightness", content=chunks(), headers={"content-type": "application/json"})
        assert reply.status_code == 413 and "too large" in reply.json()["error"]
        assert c.get("/api/displays/main").json()["brightness"] == face.output().pipeline.cfg.brightness


def test_loopback_refuses_cross_site_changes(face: Face) -> None:
    with client(face) as c:
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}):
            reply = c.post("/api/displays/main/power", json={"on": False}, headers=headers)
            assert reply.status_code == 403 and "refused" in reply.json()["error"]
        same = c.post("/api/displays/main/brightness", json={"brightness": 10}, headers={"origin": face.url})
        assert same.status_code == 200
        assert c.get("/api/displays/main").json()["power"] is True


def test_on_the_lan_changes_and_reads_need_the_credential(start_face: Callable[..., Face]) -> None:
    face = start_face(bind="0.0.0.0")
    good = {"authorization": f"Bearer {TOKEN}"}
    with client(face) as c:
        assert c.get("/").status_code == 200  # the page itself (it asks for the credential)
        assert c.get("/static/app.js").status_code == 200
        for path in ("/api/state", "/metrics", "/api/live"):
            reply = c.get(path)
            assert reply.status_code == 401 and "credential" in reply.json()["error"], path
        refused = c.post("/api/displays/main/power", json={"on": False})
        assert refused.status_code == 401 and "edged ctl token" in refused.json()["error"]
        wrong = c.post("/api/displays/main/power", json={"on": False}, headers={"authorization": "Bearer guess"})
        assert wrong.status_code == 403 and "wrong credential" in wrong.json()["error"]
        assert c.get("/api/state", headers={"authorization": "Basic eDp5"}).status_code == 401
        assert face.daemon.display_state("main")["power"] is True
        assert c.get("/api/state", headers=good).status_code == 200
        assert c.get("/metrics", headers=good).status_code == 200
        ok = c.post("/api/displays/main/power", json={"on": False}, headers=good)
        assert ok.status_code == 200 and ok.json()["power"] is False
        evil = c.post("/api/displays/main/power", json={"on": True}, headers={**good, "origin": "http://evil.example"})
        assert evil.status_code == 403 and face.daemon.display_state("main")["power"] is False


def test_the_page_session_needs_its_csrf_token(start_face: Callable[..., Face]) -> None:
    face = start_face(bind="0.0.0.0")
    with client(face) as c:
        assert c.post("/api/session", json={"token": "guess"}).status_code == 403
        assert "edged_session" not in c.cookies
        login = c.post("/api/session", json={"token": TOKEN})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        csrf = login.json()["csrf"]
        assert c.get("/api/state").status_code == 200  # reads with the session cookie
        no_csrf = c.post("/api/displays/main/brightness", json={"brightness": 5})
        assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
        bad_csrf = c.post("/api/displays/main/brightness", json={"brightness": 5}, headers={"x-csrf-token": "x"})
        assert bad_csrf.status_code == 403
        assert face.daemon.display_state("main")["brightness"] != 5
        ok = c.post("/api/displays/main/brightness", json={"brightness": 5}, headers={"x-csrf-token": csrf})
        assert ok.status_code == 200 and face.daemon.display_state("main")["brightness"] == 5
        c.delete("/api/session", headers={"x-csrf-token": csrf})
        c.cookies.clear()
        assert c.get("/api/state").status_code == 401


def test_open_reads_let_anyone_read_but_not_change(start_face: Callable[..., Face]) -> None:
    face = start_face(bind="0.0.0.0", open_reads=True)
    with client(face) as c:
        assert c.get("/api/state").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.post("/api/displays/main/next").status_code == 401


def test_the_live_stream_sends_the_leds_and_costs_nothing_unwatched(face: Face) -> None:
    out = face.output()
    assert out.keep_last is False and out.last is None  # nobody watches: the frame path keeps nothing
    frames = []
    with client(face) as c, c.stream("GET", "/api/live") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
                assert out.keep_last is True  # (checked while the stream is open: leaving the loop closes it)
                if len(frames) == 3:
                    break
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs))
    for f in frames:
        image = np.frombuffer(base64.b64decode(f["rgb"]), np.uint8).reshape(8, 8, 3)
        recorded = face.image_of(f["seq"])
        assert recorded is not None and np.array_equal(image, recorded)
    eventually(lambda: out.keep_last is False and out.last is None)  # the viewer left: back to nothing kept


def test_brightness_and_power_survive_a_restart(start_face: Callable[..., Face]) -> None:
    first = start_face()
    with client(first) as c:
        c.post("/api/displays/main/brightness", json={"brightness": 33})
        c.post("/api/displays/main/power", json={"on": False})
    first.web.close()
    first.daemon.stop()
    second = start_face()
    state = second.daemon.display_state("main")
    assert (state["brightness"], state["power"]) == (33, False)
    eventually(lambda: second.backend().frame_count > 3 and not second.latest().any())
