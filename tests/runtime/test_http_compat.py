"""Issue 14, point 6: HTTP requests and response headers as the Extism runtime makes them, checked side by side
with the official SDK against a loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import extism
import pytest

from edged.runtime import Plugin
from tests.conftest import wat
from tests.support.http import QuietHandler, loopback_server

#: POSTs the fixed body "hello" with the request document given as input; outputs the response body
#: ("http_post"), or the JSON of the last response's headers, "" when the host returns none ("headers"), or both
#: steps in one call ("post_then_headers": the headers)
HTTP_WAT = bytes(
    wat(
        r"""(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "http_request" (func $http_request (param i64 i64) (result i64)))
  (import "extism:host/env" "http_headers" (func $http_headers (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello")
  (func $copy (param $src i32) (param $n i64) (result i64) (local $h i64) (local $i i64)
    (local.set $h (call $alloc (local.get $n)))
    (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $h) (local.get $i))
        (i32.load8_u (i32.add (local.get $src) (i32.wrap_i64 (local.get $i)))))
      (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
    (local.get $h))
  (func $copy_input (result i64) (local $n i64) (local $h i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $h (call $alloc (local.get $n)))
    (block $d (loop $l (br_if $d (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u8 (i64.add (local.get $h) (local.get $i)) (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
    (local.get $h))
  (func (export "http_post") (result i32) (local $b i64)
    (local.set $b (call $http_request (call $copy_input) (call $copy (i32.const 0) (i64.const 5))))
    (if (i64.ne (local.get $b) (i64.const 0))
      (then (call $output_set (local.get $b) (call $length (local.get $b)))))
    (i32.const 0))
  (func (export "post_then_headers") (result i32) (local $h i64)
    (drop (call $http_request (call $copy_input) (call $copy (i32.const 0) (i64.const 5))))
    (local.set $h (call $http_headers))
    (if (i64.ne (local.get $h) (i64.const 0))
      (then (call $output_set (local.get $h) (call $length (local.get $h)))))
    (i32.const 0))
  (func (export "headers") (result i32) (local $h i64)
    (local.set $h (call $http_headers))
    (if (i64.ne (local.get $h) (i64.const 0))
      (then (call $output_set (local.get $h) (call $length (local.get $h)))))
    (i32.const 0)))"""
    )
)


class _Echo(QuietHandler):
    """Answers with the Content-Type the request carried ("<none>" without one) and a header of its own."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = (self.headers.get("Content-Type") or "<none>").encode()
        self.send_response(200)
        self.send_header("X-Edged", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with loopback_server(_Echo) as url:
        yield url


def _pair(**kwargs: object) -> tuple[Plugin, extism.Plugin]:
    manifest = {"wasm": [{"data": HTTP_WAT}], "allowed_hosts": ["127.0.0.1"]}
    return Plugin(manifest, functions=[], **kwargs), extism.Plugin(manifest, functions=[])  # type: ignore[arg-type]


def test_a_post_without_content_type_is_sent_without_one(server: str) -> None:
    ours, theirs = _pair()
    doc = json.dumps({"url": server + "/p", "method": "POST", "headers": {}})
    assert theirs.call("http_post", doc) == b"<none>"
    assert ours.call("http_post", doc) == b"<none>"
    # a Content-Type the plugin sets is sent as it is, by both
    doc = json.dumps({"url": server + "/p", "method": "POST", "headers": {"content-type": "text/plain"}})
    assert ours.call("http_post", doc) == theirs.call("http_post", doc) == b"text/plain"


def test_response_headers_reach_the_plugin_only_when_enabled(server: str) -> None:
    ours, theirs = _pair()
    doc = json.dumps({"url": server + "/p", "method": "POST", "headers": {}})
    ours.call("http_post", doc)
    theirs.call("http_post", doc)
    assert ours.call("headers", b"") == theirs.call("headers", b"") == b""  # the PDKs turn this into {}
    enabled = Plugin({"wasm": [{"data": HTTP_WAT}], "allowed_hosts": ["127.0.0.1"]}, http_response_headers=True)
    enabled.call("http_post", doc)
    assert json.loads(enabled.call("headers", b""))["x-edged"] == "yes"
