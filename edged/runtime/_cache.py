"""On-disk AOT cache of compiled modules, so that a second load skips compilation.

Entries are keyed by the wasm's sha256, the engine configuration and the wasmtime version (a serialized module only
loads into an identically configured engine). A corrupt or stale entry is discarded and rebuilt, never fatal.
The cache directory must be trusted: deserializing a file runs native code compiled into it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path

import wasmtime

from ..errors import PluginLoadError
from ..fsutil import atomic_write
from ._engine import ENGINE, fingerprint
from ._sections import largest_function_body

log = logging.getLogger("edged.runtime.cache")

try:
    from importlib.metadata import version as _pkg_version

    _WASMTIME_VERSION = _pkg_version("wasmtime")
except Exception:  # pragma: no cover - metadata missing in odd installs
    _WASMTIME_VERSION = "unknown"


def default_cache_dir() -> Path:
    """``$EDGED_CACHE_DIR``, else ``$XDG_CACHE_HOME/edged/modules``, else ``~/.cache/edged/modules``."""
    env = os.environ.get("EDGED_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "edged" / "modules"


#: The largest function body compiled (a 256 KiB body of straight-line code takes the compiler about 200 MB; real
#: plugins' largest functions are a few KB to some tens of KB).
MAX_FUNCTION_BYTES = 256 * 1024


def compile_module(wasm: bytes, engine: wasmtime.Engine = ENGINE) -> wasmtime.Module:
    """Compile without the cache; invalid bytes raise :class:`PluginLoadError` with wasmtime's reason."""
    if wasm[:4] != b"\0asm":
        raise PluginLoadError("not a WebAssembly module (missing the \\0asm magic header)")
    largest = largest_function_body(wasm)
    if largest > MAX_FUNCTION_BYTES:
        raise PluginLoadError(
            f"a function of the module is {largest:,} bytes of code; at most {MAX_FUNCTION_BYTES:,} are compiled "
            "(the compiler's memory grows with a function's size: one of a few MB would take hundreds of MB)"
        )
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        reason = str(exc).strip().splitlines()
        raise PluginLoadError(
            "invalid WebAssembly module: " + "; ".join(r.strip() for r in reason if r.strip())
        ) from None


class ModuleCache:
    """A directory of serialized modules. ``ModuleCache(None)`` disables caching."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.hits = 0
        self.misses = 0
        # compiled modules already loaded in this process, by key: a module can serve any number of stores
        self._memo: dict[str, wasmtime.Module] = {}

    def key(self, wasm: bytes, engine: wasmtime.Engine = ENGINE) -> str:
        salt = f"{fingerprint(engine)};wasmtime={_WASMTIME_VERSION};{platform.machine()}"
        return hashlib.sha256(hashlib.sha256(wasm).digest() + salt.encode()).hexdigest()

    def load(self, wasm: bytes, engine: wasmtime.Engine = ENGINE) -> wasmtime.Module:
        """Return the module compiled for ``engine`` (the metered one by default), from the cache when possible."""
        if self.directory is None:
            return compile_module(wasm, engine)
        key = self.key(wasm, engine)
        memo = self._memo.get(key)
        if memo is not None:
            self.hits += 1
            return memo
        path = self.directory / (key + ".cwasm")
        if path.exists():
            try:
                # read, not mapped: a mapped entry that someone truncates or rewrites in place would crash the
                # process (SIGBUS) the next time wasmtime touches it
                module = wasmtime.Module.deserialize(engine, path.read_bytes())
                self.hits += 1
                self._memo[key] = module
                return module
            except (wasmtime.WasmtimeError, OSError) as exc:
                log.warning("discarding corrupt module cache entry", extra={"path": str(path), "error": str(exc)})
                path.unlink(missing_ok=True)
        self.misses += 1
        module = compile_module(wasm, engine)
        self._store(path, module)
        self._memo[key] = module
        return module

    def _store(self, path: Path, module: wasmtime.Module) -> None:
        try:
            atomic_write(path, module.serialize())
        except OSError as exc:  # a read-only or full disk only costs speed
            log.warning("cannot write module cache entry", extra={"path": str(path), "error": str(exc)})


_default: ModuleCache | None = None


def default_cache() -> ModuleCache:
    """The process-wide cache in :func:`default_cache_dir` (``EDGED_CACHE_DIR=off`` disables it)."""
    global _default
    if _default is None:
        d = os.environ.get("EDGED_CACHE_DIR")
        _default = ModuleCache(None if d == "off" else default_cache_dir())
    return _default
