"""Call semantics of edged.runtime.Plugin, through WAT plugins written against the raw Extism ABI."""

from __future__ import annotations

import logging

import pytest

from edged.runtime import (
    CompiledPlugin,
    FunctionNotFound,
    Plugin,
    PluginError,
    PluginTrap,
)
from tests.conftest import wat
from tests.runtime.wats import ENV, KITCHEN


def test_echo_and_str_input() -> None:
    with Plugin(KITCHEN) as p:
        assert p.call("echo", b"bytes in") == b"bytes in"
        assert p.call("echo", "str in ☃") == "str in ☃".encode()
        assert p.call("echo") == b""
        assert p.call("hello", parse=bytes.decode) == "hello"


def test_void_export_is_callable() -> None:
    assert Plugin(KITCHEN).call("void_export") == b""


def test_instance_is_lazy_and_persists_across_calls() -> None:
    p = Plugin(KITCHEN)
    assert p._inst is None
    assert [p.call("counter") for _ in range(3)] == [b"1", b"2", b"3"]


def test_init_runs_once_per_instance() -> None:
    p = Plugin(KITCHEN)
    assert p.call("inits") == b"1"
    assert p.call("inits") == b"1"


def test_error_set_fails_the_call_with_its_message() -> None:
    p = Plugin(KITCHEN)
    with pytest.raises(PluginError, match="^boom$"):
        p.call("fail")
    # an error with rc 0 still fails
    with pytest.raises(PluginError, match="^soft error$"):
        p.call("fail_rc0")
    # and a clean error keeps the instance
    assert p.call("counter") == b"1"
    assert p.call("counter") == b"2"


def test_nonzero_rc_without_message() -> None:
    with pytest.raises(PluginError, match=r"^Error code: 7$"):
        Plugin(KITCHEN).call("rc7")


def test_missing_and_wrongly_typed_exports() -> None:
    p = Plugin(KITCHEN)
    with pytest.raises(FunctionNotFound, match="^Function not found: nope$"):
        p.call("nope")
    with pytest.raises(FunctionNotFound, match=r"wrong_sig has signature \(i32\) -> \(i32\)"):
        p.call("wrong_sig")
    assert p.function_exists("echo") and not p.function_exists("nope") and not p.function_exists("wrong_sig")


def test_trap_reports_its_cause_and_the_next_call_gets_a_fresh_instance() -> None:
    p = Plugin(KITCHEN)
    assert p.call("counter") == b"1"
    with pytest.raises(PluginTrap, match="unreachable"):
        p.call("trap")
    assert p.call("counter") == b"1"  # fresh instance after the trap


def test_vars_persist_across_calls_and_instances() -> None:
    p = Plugin(KITCHEN)
    assert p.call("var_count") == b"1"
    assert p.call("var_count") == b"2"
    with pytest.raises(PluginTrap):
        p.call("trap")
    assert p.call("var_count") == b"3"  # vars outlive the instance
    p.call("var_set_input", b"abc")
    assert p.call("var_get_input", b"abc") == b"abc"
    p.call("var_del_input", b"abc")
    assert p.call("var_get_input", b"abc") == b""
    assert p.vars[b"count"] == b"3"


@pytest.mark.parametrize("max_var_bytes", [1024, 64 * 1024 * 1024], ids=["kernel", "host"])
def test_reset_starts_over_without_vars(max_var_bytes: int) -> None:
    """reset() is a fresh start (new instance, init runs again, no vars), where close() keeps the vars."""
    p = Plugin({"wasm": [{"data": KITCHEN}], "memory": {"max_var_bytes": max_var_bytes}})
    assert p._kernel_vars == (max_var_bytes == 1024)
    assert [p.call("var_count"), p.call("var_count"), p.call("inits")] == [b"1", b"2", b"1"]
    p.call("var_set_input", b"abc")
    p.close()
    assert p.call("var_count") == b"3"  # close keeps the vars
    p.reset()
    assert not p.ready and p.vars == {}
    assert p.call("var_get_input", b"abc") == b""
    assert [p.call("var_count"), p.call("inits")] == [b"1", b"1"]
    p.call("var_set_input", b"k" * 200)  # what the reset freed counts as free: the budget starts from zero
    p.reset()
    p.reset()  # twice in a row, with no instance in between
    assert p.vars == {} and p.call("var_count") == b"1"


def test_vars_disabled_and_full() -> None:
    manifest = {"wasm": [{"data": KITCHEN}], "memory": {"max_var_bytes": 0}}
    with pytest.raises(PluginError, match="^Vars are disabled by this host$"):
        Plugin(manifest).call("var_set_input", b"x")
    p = Plugin({"wasm": [{"data": KITCHEN}], "memory": {"max_var_bytes": 200}})
    p.call("var_set_input", b"k" * 40)  # 40 + 40 + overhead fits
    with pytest.raises(PluginError, match="^Variable store is full$"):
        p.call("var_set_input", b"z" * 100)
    assert p.call("var_get_input", b"k" * 40) == b"k" * 40  # the failed set changed nothing
    p.call("var_del_input", b"k" * 40)
    p.call("var_set_input", b"z" * 70)  # room again after the delete


def test_config_from_manifest_and_argument() -> None:
    src = (
        "(module"
        + ENV
        + r"""
      (func (export "get") (result i32) (local $v i64)
        (local.set $v (call $config_get (call $block (i32.const 1024) (i32.wrap_i64 (call $input_length)))))
        (if (i64.eqz (local.get $v)) (then (return (i32.const 3))))
        (call $output_block (local.get $v)) (i32.const 0))
      (func (export "load_input") (result i32) (local $i i32)
        (block $d (loop $n
          (br_if $d (i64.ge_u (i64.extend_i32_u (local.get $i)) (call $input_length)))
          (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (call $input_load_u8 (i64.extend_i32_u (local.get $i))))
          (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $n)))
        (i32.const 0))
    )"""
    )
    # `get` reads its key from plugin memory at 1024, which load_input fills from the input first
    p = Plugin({"wasm": [{"data": wat(src)}], "config": {"a": "from manifest", "b": "x"}}, config={"b": "override"})
    for key, value in {"a": b"from manifest", "b": b"override"}.items():
        p.call("load_input", key)
        assert p.call("get", key) == value
    p.call("load_input", "zz")
    with pytest.raises(PluginError, match="Error code: 3"):
        p.call("get", "zz")


def test_logging_goes_to_a_per_plugin_logger(caplog: pytest.LogCaptureFixture) -> None:
    p = Plugin(KITCHEN, logger=logging.getLogger("edged.plugin.kitchen"))
    with caplog.at_level(logging.INFO, logger="edged.plugin.kitchen"):
        p.close()  # the log level is read when the instance is made
        level = p.call("log")
    assert level == b"2"  # info
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert ("edged.plugin.kitchen", "INFO", "logged at info") in records
    assert ("edged.plugin.kitchen", "ERROR", "boom") in records


def test_log_level_off_when_the_logger_is_silent() -> None:
    logger = logging.getLogger("edged.plugin.silent")
    logger.setLevel(logging.CRITICAL + 10)
    assert Plugin(KITCHEN, logger=logger).call("log") == bytes([48 + 0x7FFFFFFF & 0xFF])


def test_compiled_plugin_is_shared_by_independent_instances() -> None:
    compiled = CompiledPlugin(KITCHEN)
    a, b = compiled.instantiate(), Plugin(compiled)
    assert a.call("counter") == b"1"
    assert a.call("counter") == b"2"
    assert b.call("counter") == b"1"


def test_close_is_safe_twice_and_the_plugin_can_be_used_again() -> None:
    p = Plugin(KITCHEN)
    p.call("counter")
    p.close()
    p.close()
    assert p.call("counter") == b"1"


def test_legacy_env_imports_run() -> None:
    legacy = wat(r"""(module
      (import "env" "extism_input_offset" (func $ioff (result i64)))
      (import "env" "extism_input_length" (func $ilen (result i64)))
      (import "env" "extism_output_set" (func $oset (param i64 i64)))
      (import "env" "extism_log_info" (func $log (param i64)))
      (import "env" "extism_alloc" (func $alloc (param i64) (result i64)))
      (memory (export "memory") 1)
      (func (export "echo") (result i32)
        (call $log (call $alloc (i64.const 0)))
        (call $oset (call $ioff) (call $ilen)) (i32.const 0)))""")
    assert Plugin(legacy).call("echo", "old plugin") == b"old plugin"


def test_fresh_output_blocks_read_as_zero() -> None:
    import struct

    p = Plugin(KITCHEN)
    p.call("counter")  # leaves bytes behind in kernel memory
    assert p.call("output_n", struct.pack("<I", 16)) == b"\0" * 16


def test_discarded_plugins_are_freed_with_their_host_callbacks() -> None:
    """Host callbacks must not keep their Plugin (and its store and memory) alive once the caller drops it."""
    import gc
    import weakref

    from edged.runtime import _rawcall, host_fn

    @host_fn(name="reflect")
    def reflect(data: bytes) -> bytes:
        return data

    module = wat(
        '(module (import "extism:host/user" "reflect" (func (param i64) (result i64)))'
        ' (func (export "f") (result i32) i32.const 0))'
    )
    before = set(_rawcall._RAW_FUNCS)
    p = Plugin(module, functions=[reflect])
    p.call("f")
    ref = weakref.ref(p)
    assert set(_rawcall._RAW_FUNCS) - before
    del p
    gc.collect()
    assert ref() is None
    assert not set(_rawcall._RAW_FUNCS) - before


def test_fuel_needs_a_metered_compilation() -> None:
    fast = CompiledPlugin(KITCHEN)
    assert not fast.metered and Plugin(fast).fuel is None
    with pytest.raises(ValueError, match=r"CompiledPlugin\(\.\.\., metered=True\)"):
        Plugin(fast, fuel=1000)
    metered = CompiledPlugin(KITCHEN, metered=True)
    p = Plugin(metered, fuel=10_000_000)
    assert p.call("echo", "x") == b"x" and p.last_fuel_used
    assert Plugin(KITCHEN, fuel=10_000_000).compiled.metered  # a fuel limit picks the metered engine itself
    with pytest.raises(ValueError, match="fuel must be positive"):
        Plugin(metered, fuel=0)


# --- found by a hostile review of the containment fixes -------------------------------------------------------


def test_a_plugins_error_message_is_one_safe_line() -> None:
    from edged.runtime import PluginError
    from tests.conftest import wat

    text = "boom\\n2026-12-06 01:00:00,000 ERROR edged.daemon: forged\\1b[31m\\0d"
    wasm = wat(
        f"""(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{text}")
  (func (export "fail") (result i32) (local $h i64) (local $i i32)
    (local.set $h (call $alloc (i64.const 64)))
    (block $d (loop $l (br_if $d (i32.ge_u (local.get $i) (i32.const 64)))
      (call $store_u8 (i64.add (local.get $h) (i64.extend_i32_u (local.get $i))) (i32.load8_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
    (call $error_set (local.get $h)) (i32.const 1)))"""
    )
    with pytest.raises(PluginError) as info:
        Plugin(wasm).call("fail")
    message = str(info.value)
    assert message.startswith("boom\\n2026-12-06 01:00:00,000 ERROR edged.daemon: forged\\x1b[31m\\r")
    assert "\n" not in message and "\x1b" not in message and "\r" not in message


def test_hs_init_of_the_wrong_shape_is_a_load_error_and_the_right_one_runs() -> None:
    from edged.runtime import PluginLoadError
    from tests.conftest import wat

    with pytest.raises(PluginLoadError, match="hs_init must be a function"):
        Plugin(wat('(module (memory (export "memory") 1) (global (export "hs_init") i32 (i32.const 0)))'))
    with pytest.raises(PluginLoadError, match="hs_init must be a function"):
        Plugin(wat('(module (memory (export "memory") 1) (func (export "hs_init") (param i64)))'))
    ok = wat(
        """(module (memory (export "memory") 1) (global $ran (mut i32) (i32.const 0))
  (func (export "hs_init") (param i32 i32) (global.set $ran (i32.const 1)))
  (func (export "ran") (result i32) (global.get $ran)))"""
    )
    p = Plugin(ok)
    with pytest.raises(PluginError, match="Error code: 1"):  # returns 1 once hs_init has run
        p.call("ran")
