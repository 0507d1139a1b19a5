"""edged's Extism-compatible WebAssembly plugin host, built directly on wasmtime.

It knows nothing of LEDs: plugins are bytes in, bytes out, with a kernel for memory handles, a manifest and host
functions. The package is a drop-in replacement for the official ``extism`` Python SDK (``from edged import runtime
as extism``); docs/runtime.md lists the intended differences::

    from edged.runtime import Plugin
    with Plugin("count_vowels.wasm", config={"thing": "x"}) as p:
        print(p.call("count_vowels", "Hello"))
"""

from ..errors import (
    FunctionNotFound,
    HostFunctionError,
    ManifestError,
    OutOfFuel,
    OutOfMemory,
    OutputTooLarge,
    PluginCancelled,
    PluginError,
    PluginLoadError,
    PluginTimeout,
    PluginTrap,
)
from ._cache import ModuleCache, compile_module, default_cache, default_cache_dir
from ._compat import (
    EXTISM_RUNTIME_VERSION,
    CancelHandle,
    CustomLogger,
    Error,
    extism_version,
    set_log_custom,
    set_log_file,
)
from ._env import DEFAULT_MAX_HTTP_RESPONSE_BYTES, DEFAULT_MAX_VAR_BYTES, LogLimiter, log_text
from ._host_fn import (
    HOST_FN_REGISTRY,
    Codec,
    CurrentPlugin,
    Function,
    HostFunction,
    Json,
    Memory,
    Pickle,
    Val,
    ValType,
    host_fn,
)
from ._layout import PAGE
from ._manifest import (
    EdgedBlock,
    Manifest,
    MemoryOptions,
    WasmData,
    WasmPath,
    WasmSource,
    WasmUrl,
    load_manifest_file,
    parse_manifest,
    read_module,
    resolve_source,
)
from ._plugin import CompiledPlugin, Plugin

__all__ = [
    "DEFAULT_MAX_HTTP_RESPONSE_BYTES",
    "DEFAULT_MAX_VAR_BYTES",
    "EXTISM_RUNTIME_VERSION",
    "HOST_FN_REGISTRY",
    "PAGE",
    "CancelHandle",
    "Codec",
    "CompiledPlugin",
    "CurrentPlugin",
    "CustomLogger",
    "EdgedBlock",
    "Error",
    "Function",
    "FunctionNotFound",
    "HostFunction",
    "HostFunctionError",
    "Json",
    "LogLimiter",
    "Manifest",
    "ManifestError",
    "Memory",
    "MemoryOptions",
    "ModuleCache",
    "OutOfFuel",
    "OutOfMemory",
    "OutputTooLarge",
    "Pickle",
    "Plugin",
    "PluginCancelled",
    "PluginError",
    "PluginLoadError",
    "PluginTimeout",
    "PluginTrap",
    "Val",
    "ValType",
    "WasmData",
    "WasmPath",
    "WasmSource",
    "WasmUrl",
    "compile_module",
    "default_cache",
    "default_cache_dir",
    "extism_version",
    "host_fn",
    "load_manifest_file",
    "log_text",
    "parse_manifest",
    "read_module",
    "resolve_source",
    "set_log_custom",
    "set_log_file",
]
