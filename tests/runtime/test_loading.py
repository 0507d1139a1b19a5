"""Loading plugins: sources, manifests, hashes, the AOT cache, and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edged.runtime import (
    CompiledPlugin,
    ManifestError,
    ModuleCache,
    Plugin,
    PluginError,
    PluginLoadError,
    PluginTrap,
    WasmData,
    WasmPath,
    compile_module,
    parse_manifest,
    read_module,
    resolve_source,
)
from tests.conftest import wat
from tests.runtime.wats import KITCHEN


def test_resolve_source_gives_the_manifest_and_its_base_directory(tmp_path: Path) -> None:
    """The public resolver the device layer loads through (``DevicePlugin`` reads the manifest before compiling)."""
    wasm = tmp_path / "kitchen.wasm"
    wasm.write_bytes(KITCHEN)
    (tmp_path / "m.json").write_text(json.dumps({"wasm": [{"path": "kitchen.wasm"}]}))
    manifest, base = resolve_source(tmp_path / "m.json")
    assert base == tmp_path.resolve() and manifest.wasm == [WasmPath(path="kitchen.wasm")]
    assert read_module(manifest.wasm[0], base, allow_urls=False) == KITCHEN
    manifest, base = resolve_source(str(wasm))
    assert base is None and manifest.wasm == [WasmPath(path=str(wasm.resolve()))]
    assert resolve_source(KITCHEN) == (parse_manifest({"wasm": [{"data": KITCHEN}]}), None)
    assert isinstance(resolve_source("(module)")[0].wasm[0], WasmData)
    assert resolve_source(b' {"wasm": [{"path": "a.wasm"}]}')[0].wasm == [WasmPath(path="a.wasm")]  # JSON bytes
    with pytest.raises(PluginLoadError, match="no such plugin file"):
        resolve_source(tmp_path / "missing.wasm")
    with pytest.raises(ManifestError):
        resolve_source({"wasm": [], "nope": 1})
    with pytest.raises(TypeError, match="cannot load a plugin from int"):
        resolve_source(3)
    assert {e.name for e in compile_module(KITCHEN).exports} >= {"echo"}
    with pytest.raises(PluginLoadError, match="not a WebAssembly module"):
        compile_module(b"nope")


def test_sources_path_bytes_dict_json_and_manifest_file(tmp_path: Path) -> None:
    wasm = tmp_path / "kitchen.wasm"
    wasm.write_bytes(KITCHEN)
    (tmp_path / "m.json").write_text(json.dumps({"wasm": [{"path": "kitchen.wasm"}], "config": {"k": "v"}}))
    for source in (
        wasm,
        str(wasm),
        KITCHEN,
        {"wasm": [{"path": str(wasm)}]},
        json.dumps({"wasm": [{"path": str(wasm)}]}),
        tmp_path / "m.json",
        parse_manifest({"wasm": [{"data": KITCHEN}]}),
    ):
        assert Plugin(source).call("echo", "x") == b"x", source


def test_name_comes_from_the_edged_block_or_the_file(tmp_path: Path) -> None:
    wasm = tmp_path / "rainbow.wasm"
    wasm.write_bytes(KITCHEN)
    assert Plugin(wasm).name == "rainbow"
    p = Plugin(
        {"wasm": [{"data": KITCHEN}], "edged": {"name": "fire", "version": "1.2.0", "capabilities": {"led": True}}}
    )
    assert p.name == "fire" and p.logger.name == "edged.plugin.fire"
    assert p.compiled.manifest.edged is not None and p.compiled.manifest.edged.capabilities == {"led": True}


def test_hash_is_verified() -> None:
    good = hashlib.sha256(KITCHEN).hexdigest()
    assert Plugin({"wasm": [{"data": KITCHEN, "hash": good}]}).call("echo", "ok") == b"ok"
    bad = "0" * 64
    with pytest.raises(PluginLoadError, match=f"^Hash mismatch, found {good} but expected {bad}$"):
        Plugin({"wasm": [{"data": KITCHEN, "hash": bad}]})


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"wasm": [{"data": "AA=="}], "timeout": 5}, "unknown field 'timeout'"),
        ({"wasm": [{"data": "AA==", "sha": "x"}]}, "unknown field 'wasm.0.sha'"),
        ({"wasm": [{"data": "AA=="}], "memory": {"max_page": 3}}, "unknown field 'memory.max_page'"),
        ({"wasm": [{"data": "AA=="}], "edged": {"name": "x", "caps": {}}}, "unknown field 'edged.caps'"),
        ({"wasm": []}, "wasm: List should have at least 1 item"),
        ({"wasm": [{"data": "AA==", "name": "lib"}]}, "one wasm module must be named 'main'"),
        ({"wasm": [{"data": "AA==", "hash": "abc"}]}, "wasm.0.hash"),
        ({"wasm": [{"data": "AA=="}], "edged": {"name": "x", "version": "one"}}, "edged.version"),
        ({"config": {}}, "wasm: Field required"),
    ],
)
def test_bad_manifests_name_the_field(manifest: dict, message: str) -> None:
    with pytest.raises(ManifestError, match="^invalid manifest: ") as ei:
        Plugin(manifest)
    assert message in str(ei.value)


def test_manifest_json_syntax_error() -> None:
    with pytest.raises(ManifestError, match="not JSON"):
        Plugin('{"wasm": [')


def test_urls_are_refused_unless_allowed() -> None:
    with pytest.raises(PluginLoadError, match="fetching wasm from a URL is not allowed"):
        Plugin({"wasm": [{"url": "http://127.0.0.1:9/x.wasm"}]})


def test_garbage_and_truncated_modules() -> None:
    with pytest.raises(PluginLoadError, match="not a WebAssembly module"):
        Plugin(b"this is not wasm at all")
    with pytest.raises(PluginLoadError, match="^invalid WebAssembly module: "):
        Plugin(KITCHEN[: len(KITCHEN) // 2])
    with pytest.raises(PluginLoadError, match="no such plugin file"):
        Plugin("/nonexistent/plugin.wasm")


def test_unknown_env_import() -> None:
    bad = wat('(module (import "extism:host/env" "frobnicate" (func (param i64))) (func (export "f")))')
    with pytest.raises(PluginLoadError, match="^Invalid function import from extism:host/env: frobnicate$"):
        Plugin(bad)
    legacy = wat('(module (import "env" "extism_frobnicate" (func)) (func (export "f")))')
    with pytest.raises(PluginLoadError, match="Invalid function import from env: extism_frobnicate"):
        Plugin(legacy)


def test_env_import_with_the_wrong_type() -> None:
    bad = wat('(module (import "extism:host/env" "alloc" (func (param i32) (result i32))) (func (export "f")))')
    with pytest.raises(PluginLoadError, match=r"alloc has type \(i32\) -> \(i32\), expected \(i64\) -> \(i64\)"):
        Plugin(bad)


def test_memory_or_global_imports_are_refused() -> None:
    bad = wat('(module (import "extism:host/env" "memory" (memory 1)) (func (export "f")))')
    with pytest.raises(PluginLoadError, match="imports a non-function extism:host/env::memory"):
        Plugin(bad)


def test_wasi_import_needs_wasi() -> None:
    m = wat(
        '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
        ' (memory (export "memory") 1) (func (export "f")))'
    )
    with pytest.raises(PluginLoadError, match="imports WASI .* but WASI is not enabled"):
        Plugin(m)
    assert Plugin(m, wasi=True).call("f") == b""


def test_trap_during_initialisation_is_reported() -> None:
    m = wat('(module (func (export "_initialize") unreachable) (func (export "f") (result i32) i32.const 0))')
    p = Plugin(m)
    with pytest.raises(
        PluginTrap,
        match=r"^plugin initialisation \(_initialize\) failed: "
        r"wasm `unreachable` instruction executed \(wasm backtrace: 0: ",
    ):
        p.call("f")


def test_init_order_prefers_ctors_over_initialize() -> None:
    m = wat("""(module
      (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
      (import "extism:host/env" "store_u8" (func $st (param i64 i32)))
      (import "extism:host/env" "output_set" (func $os (param i64 i64)))
      (global $g (mut i32) (i32.const 0)) (memory (export "memory") 1)
      (func (export "__wasm_call_ctors") (global.set $g (i32.add (global.get $g) (i32.const 1))))
      (func (export "_initialize") (global.set $g (i32.add (global.get $g) (i32.const 10))))
      (func (export "g") (result i32) (local $h i64) (local.set $h (call $alloc (i64.const 1)))
        (call $st (local.get $h) (i32.add (i32.const 48) (global.get $g))) (call $os (local.get $h) (i64.const 1))
        (i32.const 0)))""")
    assert Plugin(m).call("g") == b"1"


def test_multi_module_manifest_links_by_name() -> None:
    lib = wat('(module (func (export "double") (param i64) (result i64) (i64.mul (local.get 0) (i64.const 2))))')
    main = wat("""(module
      (import "mathlib" "double" (func $double (param i64) (result i64)))
      (import "extism:host/env" "input_length" (func $il (result i64)))
      (func (export "run") (result i32) (i32.wrap_i64 (call $double (call $il)))))""")
    p = Plugin({"wasm": [{"data": lib, "name": "mathlib"}, {"data": main, "name": "main"}]})
    with pytest.raises(PluginError, match="^Error code: 6$"):
        p.call("run", "abc")


def test_aot_cache_hits_on_the_second_load_and_survives_corruption(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path / "cache")
    CompiledPlugin(KITCHEN, cache=cache)
    assert (cache.hits, cache.misses) == (0, 1)
    CompiledPlugin(KITCHEN, cache=cache)  # same process: served from memory
    assert (cache.hits, cache.misses) == (1, 1)
    # a new process (a fresh cache object on the same directory) loads the serialized module from disk
    second = ModuleCache(tmp_path / "cache")
    assert Plugin(KITCHEN, cache=second).call("echo", "from disk") == b"from disk"
    assert (second.hits, second.misses) == (1, 0)
    (entry,) = (tmp_path / "cache").glob("*.cwasm")
    entry.write_bytes(b"garbage")
    third = ModuleCache(tmp_path / "cache")
    p = Plugin(KITCHEN, cache=third)  # discarded, recompiled, still works
    assert p.call("echo", "ok") == b"ok"
    assert (third.hits, third.misses) == (0, 1)
    assert entry.read_bytes() != b"garbage"


def test_cache_key_depends_on_the_wasm(tmp_path: Path) -> None:
    cache = ModuleCache(tmp_path)
    other = wat('(module (func (export "f")))')
    assert cache.key(KITCHEN) != cache.key(other)


def test_a_function_too_large_to_compile_safely_is_refused_before_compiling() -> None:
    """Found by a hostile review: one 7 MB function of straight-line code made the compiler take 0.8 GB of the
    device's memory (and 25 s). Bodies are measured before anything is compiled."""
    from edged.runtime._cache import MAX_FUNCTION_BYTES

    body = "(local.get 0) (i32.const 1) (i32.add) (local.set 0) " * (MAX_FUNCTION_BYTES // 7 + 1000)
    big = wat(f'(module (memory (export "memory") 1) (func (export "f") (param i32) {body}))')
    with pytest.raises(PluginLoadError, match=r"bytes of code; at most 262,144 are compiled"):
        Plugin(big)
