"""Differential tests: the same wasm and input on edged and on the official Extism SDK give the same result.

The plugins are built from tests/plugins/ with the official @extism/as-pdk (AssemblyScript) and with zig cc (C).
Where the SDK reports an error message, edged must report the same text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import extism
import pytest

from edged.runtime import Plugin, PluginError, host_fn


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except (extism.Error, PluginError) as exc:
        return "error", str(exc)


@host_fn(name="reflect")
def reflect(data: bytes) -> bytes:
    return data


@host_fn(name="hello")
def hello(name: str) -> str:
    return f"Hello, {name}!"


@host_fn(name="add")
def add(a: int, b: int) -> int:
    return a + b


@extism.host_fn(name="reflect", namespace="extism:host/user")
def sdk_reflect(data: bytes) -> bytes:
    return data


@extism.host_fn(name="hello", namespace="extism:host/user")
def sdk_hello(name: str) -> str:
    return f"Hello, {name}!"


@extism.host_fn(name="add", namespace="extism:host/user")
def sdk_add(a: int, b: int) -> int:
    return a + b


OURS = [reflect, hello, add]
THEIRS = [sdk_reflect, sdk_hello, sdk_add]


def pair(path: Path, config: dict[str, str] | None = None, **manifest: Any) -> tuple[Plugin, extism.Plugin]:
    m = {"wasm": [{"path": str(path)}], "config": config or {}, **manifest}
    return Plugin(m, functions=OURS), extism.Plugin(m, functions=THEIRS)


KITCHEN_CASES = [
    ("echo", b"hello, differential world"),
    ("echo", b""),
    ("echo", bytes(range(256)) * 64),
    ("consume", b"x" * 70_000),
    ("noop", b""),
    ("fail", b""),
    ("fail_rc0", b""),
    ("rc7", b""),
    ("get_config", b"greeting"),
    ("get_config", b"missing"),
    ("reflect", b"mirror mirror"),
    ("reflect", b"r" * 100_000),
    ("hello_host", b""),
    ("output_size", b"12345"),
    ("does_not_exist", b""),
]


@pytest.mark.parametrize(("export", "data"), KITCHEN_CASES, ids=[f"{e}-{len(d)}" for e, d in KITCHEN_CASES])
def test_kitchen_matches_the_sdk(built_plugin: Any, export: str, data: bytes) -> None:
    ours, theirs = pair(built_plugin("kitchen"), {"greeting": "hi there"})
    assert _outcome(ours.call, export, data) == _outcome(theirs.call, export, data)


def test_int_host_function_result_is_a_handle_as_in_the_sdk(built_plugin: Any) -> None:
    # The SDK returns an `int` result as a handle to its 8 bytes, and so does edged now (issue 14): the plugin's
    # i64 is an address in both (not the same one: the kernels lay memory out differently); test_compat.py reads it
    ours, theirs = pair(built_plugin("kitchen"))
    assert ours.call("add_host", b"") != b"42"
    assert theirs.call("add_host", b"") != b"42"


def test_counter_and_vars_across_calls_match(built_plugin: Any) -> None:
    ours, theirs = pair(built_plugin("kitchen"))
    for _ in range(3):
        assert _outcome(ours.call, "counter", b"") == _outcome(theirs.call, "counter", b"")
    for data in (b"colour=blue", b"colour", b"colour=", b"colour"):
        assert _outcome(ours.call, "var_set" if b"=" in data else "var_get", data) == _outcome(
            theirs.call, "var_set" if b"=" in data else "var_get", data
        )


EXAMPLE_COUNT_VOWELS = Path(__file__).resolve().parents[2] / "plugins/examples/count_vowels/count_vowels.wasm"


@pytest.mark.parametrize("name", ["count_vowels", "count_vowels_c"])
def test_count_vowels_matches(built_plugin: Any, name: str) -> None:
    path = EXAMPLE_COUNT_VOWELS if name == "count_vowels" else built_plugin(name)
    ours, theirs = pair(path, {"thing": "configured"})
    for text in ("Hello, World!", "a" * 4096, "", "ÄÖÜ äöü aeiou AEIOU", "rhythm"):
        a, b = _outcome(ours.call, "count_vowels", text), _outcome(theirs.call, "count_vowels", text)
        assert a == b, text
        assert a[0] == "ok"


def test_count_vowels_output_is_what_it_should_be() -> None:
    ours, _ = pair(EXAMPLE_COUNT_VOWELS, {"thing": "configured"})
    first = json.loads(ours.call("count_vowels", "Hello, World!"))
    second = json.loads(ours.call("count_vowels", "aaa"))
    assert first["count"] == 3 and first["thing"] == "configured" and first["a"] == "this is var a"
    assert (second["count"], second["total"]) == (3, 6)


def test_timeout_matches(built_plugin: Any) -> None:
    ours, theirs = pair(built_plugin("kitchen"), timeout_ms=100)
    assert (
        _outcome(ours.call, "loop_forever", b"") == _outcome(theirs.call, "loop_forever", b"") == ("error", "timeout")
    )
    # both keep working afterwards
    assert _outcome(ours.call, "echo", b"after") == _outcome(theirs.call, "echo", b"after") == ("ok", b"after")


def test_vars_disabled_message_matches(built_plugin: Any) -> None:
    ours, theirs = pair(built_plugin("kitchen"), memory={"max_var_bytes": 0})
    a, b = _outcome(ours.call, "var_set", b"k=v"), _outcome(theirs.call, "var_set", b"k=v")
    assert a[0] == b[0] == "error"
    assert a[1] == "Vars are disabled by this host"
    # the SDK loses the message here (a bare trap with a backtrace); edged keeps Extism's text
    assert b[1].startswith("error while executing at wasm backtrace") and "Vars are disabled" not in b[1]


def test_legacy_abi_plugin_runs_where_the_sdk_refuses_it(built_plugin: Any) -> None:
    """Released Matricks plugins import Extism 0.x names (``env::extism_*``); the 1.x SDK no longer links them."""
    path = built_plugin("legacy_echo")
    with pytest.raises(extism.Error, match="unknown import: `env::extism_input_length`"):
        extism.Plugin(path.read_bytes())
    with Plugin(path) as ours:
        assert ours.call("echo", b"from 0.x") == b"from 0.x"
