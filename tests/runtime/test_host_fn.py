"""User host functions: type inference, JSON, raw ints, namespaces and exceptions that are never swallowed."""

from __future__ import annotations

from typing import Annotated

import pytest

from edged.runtime import CurrentPlugin, HostFunctionError, Json, Plugin, PluginLoadError, host_fn
from tests.conftest import wat
from tests.runtime.wats import ENV


# ENV declares functions before the memory, so the import must go before ENV's first func: rebuild ENV for that
def _with_import(import_line: str, body: str) -> bytes:
    head, tail = ENV.split("  (memory", 1)
    return wat("(module" + head + import_line + "\n  (memory" + tail + body + ")")


RUN_HANDLE = r"""
  (func (export "run") (result i32) (local $h i64)
    (local.set $h (call $hf (call $input_offset)))
    (if (i64.ne (local.get $h) (i64.const 0)) (then (call $output_block (local.get $h))))
    (i32.const 0))"""


def test_bytes_and_str_handles() -> None:
    @host_fn
    def shout(data: str) -> str:
        return data.upper() + "!"

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    assert Plugin(plugin, functions=[shout]).call("run", "hi there") == b"HI THERE!"

    @host_fn(name="shout")
    def reverse(data: bytes) -> bytes:
        return data[::-1]

    assert Plugin(plugin, functions=[reverse]).call("run", b"abc") == b"cba"


def test_json_in_and_out() -> None:
    @host_fn(name="shout")
    def total(doc: Annotated[dict, Json]) -> Annotated[dict, Json]:
        return {"sum": sum(doc["xs"])}

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    assert Plugin(plugin, functions=[total]).call_json("run", {"xs": [1, 2, 3]}) == {"sum": 6}


def test_raw_ints_and_custom_namespace() -> None:
    # an annotated `-> int` returns a handle to 8 bytes, as in the SDK (test_compat.py); a raw i64 result is
    # declared with kind names
    @host_fn(namespace="math", signature=(["i64", "i64"], ["i64"]))
    def add(a: int, b: int) -> int:
        return a + b

    body = r"""
      (func (export "run") (result i32)
        (i64.store (i32.const 300) (call $hf (i64.const 40) (i64.const 2)))
        (call $output_block (call $block (i32.const 300) (i32.const 8))) (i32.const 0))"""
    plugin = _with_import('(import "math" "add" (func $hf (param i64 i64) (result i64)))', body)
    out = Plugin(plugin, functions=[add]).call("run")
    assert int.from_bytes(out, "little") == 42


def test_current_plugin_and_user_data() -> None:
    seen: list[str] = []

    @host_fn(name="shout", user_data="ctx", signature=(["current", "i64"], ["i64"]))
    def echo_twice(current: CurrentPlugin, handle: int, extra: str) -> int:
        seen.append(extra)
        data = current.read(handle)
        return current.write(data + data)

    # with a CurrentPlugin parameter, `handle` is a raw int
    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    assert Plugin(plugin, functions=[echo_twice]).call("run", "ab") == b"abab"
    assert seen == ["ctx"]


def test_exception_fails_the_call_with_type_and_message() -> None:
    @host_fn(name="shout")
    def broken(data: str) -> str:
        raise ValueError(f"cannot handle {data!r}")

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    p = Plugin(plugin, functions=[broken])
    with pytest.raises(HostFunctionError, match=r"extism:host/user::shout raised ValueError: cannot handle 'x'") as ei:
        p.call("run", "x")
    assert isinstance(ei.value.exception, ValueError)
    assert isinstance(ei.value.__cause__, ValueError)
    # the failure is also of the exception's own type, so callers can catch what the host function raised
    assert isinstance(ei.value, ValueError)
    with pytest.raises(ValueError, match="cannot handle"):
        p.call("run", "y")


def test_exception_types_python_cannot_combine_still_fail_the_call() -> None:
    @host_fn(name="shout")
    def broken(data: str) -> str:
        raise FileNotFoundError(2, "no such file", "/x")

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    with pytest.raises(HostFunctionError, match="raised FileNotFoundError") as ei:
        Plugin(plugin, functions=[broken]).call("run", "x")
    assert isinstance(ei.value.exception, FileNotFoundError)


def test_an_interrupted_call_does_not_keep_its_instance() -> None:
    calls = []

    @host_fn(name="shout")
    def once(data: str) -> str:
        calls.append(data)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return data.upper()

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    p = Plugin(plugin, functions=[once])
    with pytest.raises(KeyboardInterrupt):
        p.call("run", "x")
    assert p._inst is None
    assert p.call("run", "y") == b"Y"


def test_keyboard_interrupt_propagates_as_itself() -> None:
    @host_fn(name="shout")
    def interrupted(data: str) -> str:
        raise KeyboardInterrupt

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    with pytest.raises(KeyboardInterrupt):
        Plugin(plugin, functions=[interrupted]).call("run", "x")


def test_missing_host_function_fails_at_load_naming_it() -> None:
    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    with pytest.raises(PluginLoadError, match="unknown function extism:host/user::shout"):
        Plugin(plugin, functions=[])  # without functions=, every @host_fn function (a "shout" among them) links


def test_host_function_type_mismatch_fails_at_load() -> None:
    @host_fn(name="shout")
    def takes_two(a: int, b: int) -> int:
        return a

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    with pytest.raises(
        PluginLoadError, match=r"as \(i64\) -> \(i64\) but the host function is \(i64, i64\) -> \(i64\)"
    ):
        Plugin(plugin, functions=[takes_two])


def test_annotations_are_required() -> None:
    with pytest.raises(TypeError, match="needs a type annotation"):

        @host_fn
        def untyped(x):  # type: ignore[no-untyped-def]
            return x


def test_exceptions_with_their_own_constructor_keep_their_type() -> None:
    import json as _json

    @host_fn(name="shout")
    def broken(data: str) -> str:
        return _json.loads("{not json")

    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', RUN_HANDLE)
    with pytest.raises(ValueError, match="raised JSONDecodeError") as ei:  # JSONDecodeError is a ValueError
        Plugin(plugin, functions=[broken]).call("run", "x")
    assert isinstance(ei.value, HostFunctionError) and isinstance(ei.value, _json.JSONDecodeError)
    assert isinstance(ei.value.exception, _json.JSONDecodeError)


def test_an_interrupted_initialisation_does_not_keep_its_instance() -> None:
    calls = []

    @host_fn(name="shout")
    def hook(data: str) -> str:
        calls.append(data)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return data

    body = r"""
  (func (export "_initialize") (drop (call $hf (i64.const 0))))
  (func (export "run") (result i32) (i32.const 0))"""
    plugin = _with_import('(import "extism:host/user" "shout" (func $hf (param i64) (result i64)))', body)
    p = Plugin(plugin, functions=[hook])
    with pytest.raises(KeyboardInterrupt):
        p.call("run")
    assert p._inst is None
    assert p.call("run") == b""
    assert len(calls) == 2  # initialisation ran again on the fresh instance


def test_compilation_options_are_not_silently_ignored_with_a_compiled_plugin() -> None:
    from edged.runtime import CompiledPlugin

    compiled = CompiledPlugin(_with_import("", '(func (export "run") (result i32) (i32.const 0))'))
    for kwargs in ({"wasi": True}, {"allow_urls": True}, {"functions": [host_fn(name="x")(lambda: None)]}):
        with pytest.raises(ValueError, match="belong to the CompiledPlugin"):
            Plugin(compiled, **kwargs)
