"""http_request: deny by default, allowed_hosts globs, non-2xx is not an error, response cap."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from edged.runtime import Plugin, PluginError, PluginTimeout
from tests.runtime.wats import KITCHEN
from tests.support.http import QuietHandler, loopback_server


class _Handler(QuietHandler):
    hits: list[str] = []  # noqa: RUF012 - shared by the test server's threads on purpose
    release = threading.Event()

    def do_GET(self) -> None:
        _Handler.hits.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/held":
            _Handler.release.wait(120)
        status = 404 if self.path == "/missing" else 200
        body = b"z" * 5000 if self.path == "/big" else f"path={self.path}".encode()
        self.send_response(status)
        self.send_header("X-Edged", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with loopback_server(_Handler) as url:
        yield url


def _req(url: str) -> bytes:
    return json.dumps({"url": url, "method": "GET", "headers": {}}).encode()


def test_denied_without_allowed_hosts(server: str) -> None:
    with pytest.raises(PluginError, match=f"^HTTP request to {server}/x is not allowed$"):
        Plugin(KITCHEN).call("http", _req(server + "/x"))


def test_denied_when_no_glob_matches(server: str) -> None:
    p = Plugin({"wasm": [{"data": KITCHEN}], "allowed_hosts": ["*.example.com"]})
    with pytest.raises(PluginError, match="is not allowed"):
        p.call("http", _req(server + "/x"))


def test_allowed_by_glob_with_status_and_headers(server: str) -> None:
    p = Plugin({"wasm": [{"data": KITCHEN}], "allowed_hosts": ["127.0.0.*"]})
    assert p.call("http", _req(server + "/hello")) == b"path=/hello"
    assert int.from_bytes(p.call("http_status"), "little") == 200
    assert p.env.http_headers is not None and p.env.http_headers["x-edged"] == "yes"
    # a non-2xx status is not an error
    assert p.call("http", _req(server + "/missing")) == b"path=/missing"
    assert int.from_bytes(p.call("http_status"), "little") == 404


def test_response_cap(server: str) -> None:
    p = Plugin(
        {"wasm": [{"data": KITCHEN}], "allowed_hosts": ["127.0.0.1"], "memory": {"max_http_response_bytes": 1000}}
    )
    with pytest.raises(PluginError, match="exceeds the limit of 1000 bytes"):
        p.call("http", _req(server + "/big"))
    assert p.call("http", _req(server + "/ok")) == b"path=/ok"


def test_bad_request_json_is_a_plugin_error() -> None:
    p = Plugin({"wasm": [{"data": KITCHEN}], "allowed_hosts": ["*"]})
    with pytest.raises(PluginError, match="invalid HTTP request"):
        p.call("http", b"not json")
    with pytest.raises(PluginError, match="is not allowed"):
        p.call("http", _req("file:///etc/passwd"))


@pytest.mark.parametrize(
    "doc",
    [b'{"url": 5}', b'{"url": "http://[::1"}', b'{"method": "GET"}', b'{"url": "http://x", "headers": [1]}', b"[]"],
)
def test_malformed_request_documents_are_plugin_errors(doc: bytes) -> None:
    p = Plugin({"wasm": [{"data": KITCHEN}], "allowed_hosts": ["*"]})
    with pytest.raises(PluginError, match="invalid HTTP request|is not allowed"):
        p.call("http", doc)
    assert p.call("echo", "still fine") == b"still fine"


def test_redirects_are_checked_against_allowed_hosts(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    p = Plugin({"wasm": [{"data": KITCHEN}], "allowed_hosts": ["127.0.0.1"]})
    # an allowed host redirecting to an allowed host is followed
    assert p.call("http", _req(f"{server}/redirect?to={server}/landed")) == b"path=/landed"
    # an allowed host cannot send the plugin on to a host it may not reach (here: localhost, same server)
    _Handler.hits.clear()
    with pytest.raises(PluginError, match=f"^HTTP redirect to http://localhost:{port}/secret is not allowed$"):
        p.call("http", _req(f"{server}/redirect?to=http://localhost:{port}/secret"))
    assert "/secret" not in _Handler.hits


def test_http_request_never_outlives_the_call_deadline(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server holds the request until the test lets it go, and the fallback timeout is made huge: the call can
    only come back on its own through its 200 ms deadline (no timing is asserted; a generous join bounds the test)."""
    from edged.runtime import _env

    monkeypatch.setattr(_env, "HTTP_TIMEOUT_S", 3600.0)
    _Handler.release.clear()
    p = Plugin({"wasm": [{"data": KITCHEN}], "allowed_hosts": ["127.0.0.1"]}, timeout_ms=200)
    outcome: list[BaseException | bytes] = []

    def call() -> None:
        try:
            outcome.append(p.call("http", _req(server + "/held")))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=60)
    held = caller.is_alive()
    _Handler.release.set()  # let the server answer (and a stuck caller finish) before asserting
    assert not held, "the HTTP request outlived the call's deadline"
    assert isinstance(outcome[0], PluginTimeout) and str(outcome[0]) == "timeout"
    assert p.call("echo", "after") == b"after"
