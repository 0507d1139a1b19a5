"""edged's Extism-compatible WebAssembly plugin host, built directly on wasmtime.

It knows nothing of LEDs: plugins are bytes in, bytes out, with a kernel for memory handles, a manifest and host
functions. The API mirrors the official ``extism`` Python SDK::

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
    PluginError,
    PluginLoadError,
    PluginTimeout,
    PluginTrap,
)
from ._cache import ModuleCache, default_cache, default_cache_dir
from ._env import DEFAULT_MAX_HTTP_RESPONSE_BYTES, DEFAULT_MAX_VAR_BYTES, LogLimiter, log_text
from ._host_fn import CurrentPlugin, HostFunction, Json, host_fn
from ._layout import PAGE
from ._manifest import EdgedBlock, Manifest, MemoryOptions, WasmData, WasmPath, WasmUrl, parse_manifest
from ._plugin import CompiledPlugin, Plugin

__all__ = [
    "DEFAULT_MAX_HTTP_RESPONSE_BYTES",
    "DEFAULT_MAX_VAR_BYTES",
    "PAGE",
    "CompiledPlugin",
    "CurrentPlugin",
    "EdgedBlock",
    "FunctionNotFound",
    "HostFunction",
    "HostFunctionError",
    "Json",
    "LogLimiter",
    "Manifest",
    "ManifestError",
    "MemoryOptions",
    "ModuleCache",
    "OutOfFuel",
    "OutOfMemory",
    "OutputTooLarge",
    "Plugin",
    "PluginError",
    "PluginLoadError",
    "PluginTimeout",
    "PluginTrap",
    "WasmData",
    "WasmPath",
    "WasmUrl",
    "default_cache",
    "default_cache_dir",
    "host_fn",
    "log_text",
    "parse_manifest",
]
