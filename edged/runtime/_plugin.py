"""Loading, linking and calling Extism plugins: :class:`CompiledPlugin` and :class:`Plugin`."""

from __future__ import annotations

import json
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wasmtime

from ..errors import (
    FunctionNotFound,
    ManifestError,
    OutOfFuel,
    OutOfMemory,
    PluginCancelled,
    PluginError,
    PluginLoadError,
    PluginTimeout,
    PluginTrap,
)
from . import _layout as L
from ._cache import ModuleCache, default_cache
from ._engine import DEADLINE_SWITCH, ENGINE, TICK_MS, TICKER, UNLIMITED_FUEL, UNLIMITED_TICKS, UNMETERED_ENGINE
from ._env import ENV_HOST_FUNCTIONS, HostEnv, extism_log_level, log_text
from ._host_fn import HOST_CONTEXT, HOST_FN_REGISTRY, HostFunction
from ._kernel import HOST_EXPORTS, KERNEL_EXPORTS, Kernel
from ._manifest import WasmPath, read_module, resolve_source
from ._rawcall import define_func, define_raw_func, export_indices, exports_at, no_arg_caller, value_kinds
from ._sections import defined_memories_and_tables, memory_minimums
from ._wasi import WasiOutput
from ._wasi_guard import guard_wasi

if TYPE_CHECKING:
    from ._compat import Cancellation

ENV_MODULE = "extism:host/env"
USER_MODULE = "extism:host/user"
LEGACY_MODULE = "env"
LEGACY_PREFIX = "extism_"
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

#: The largest max_var_bytes served from kernel memory (the table reserves that much); above it Python serves vars.
KERNEL_VARS_MAX_BYTES = 16 * 1024 * 1024
_KERNEL_VAR_EXPORTS = {"var_get": "edged_var_get", "var_set": "edged_var_set"}

#: Kernel memory set aside before a max_pages limit is applied (see Plugin._instantiate).
KERNEL_RESERVE_UNDER_LIMIT = 64 * 1024 * 1024
#: The least a kernel's block heap may hold beyond the input when max_pages sets its limit.
KERNEL_HEAP_MIN = 4 * 1024 * 1024

#: Default cap on a call's output, so a runaway plugin cannot exhaust host memory through its output.
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024

#: Tables a plugin's modules may define in all, and elements each table may hold (a function table of a real
#: plugin has hundreds): with memories, everything a plugin can grow is bounded.
MAX_TABLES = 8
MAX_TABLE_ELEMENTS = 1 << 16

_KINDS = {str(wasmtime.ValType.i32()): "i32", str(wasmtime.ValType.i64()): "i64"}
_KINDS |= {str(wasmtime.ValType.f32()): "f32", str(wasmtime.ValType.f64()): "f64"}
_ENV_SIGS = {**KERNEL_EXPORTS, **ENV_HOST_FUNCTIONS}

_kernel_modules: dict[int, wasmtime.Module] = {}
#: tables the kernel module defines (counted in every store's limits)
_KERNEL_TABLES = defined_memories_and_tables(
    resources.files("edged.runtime").joinpath("kernel/kernel.wasm").read_bytes()
)[1]
_kernel_indices: dict[str, int] = {}


def kernel_module(engine: wasmtime.Engine = ENGINE) -> wasmtime.Module:
    """The compiled kernel for ``engine``, shared by every plugin in the process."""
    module = _kernel_modules.get(id(engine))
    if module is None:
        wasm = resources.files("edged.runtime").joinpath("kernel/kernel.wasm").read_bytes()
        module = default_cache().load(wasm, engine)
        _kernel_indices.update(export_indices(module, [*HOST_EXPORTS, *KERNEL_EXPORTS]))
        _kernel_modules[id(engine)] = module
    return module


def _sig(ft: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    params = tuple(_KINDS.get(str(p), str(p)) for p in ft.params)
    return params, tuple(_KINDS.get(str(r), str(r)) for r in ft.results)


def _fmt_sig(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return f"({', '.join(sig[0])}) -> ({', '.join(sig[1])})"


def trap_message(text: str) -> str:
    """wasmtime's multi-line trap text as one line: the cause first, then the wasm backtrace."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if "Caused by:" not in lines:
        return " ".join(lines)
    i = lines.index("Caused by:")
    cause = " ".join(ln.removeprefix("wasm trap: ") for ln in lines[i + 1 :])
    frames = [ln for ln in lines[:i] if ln[:1].isdigit()]
    return f"{cause} (wasm backtrace: {'; '.join(frames)})" if frames else cause


class _Registered:
    """The default of ``functions=``: every function made with ``@host_fn`` (as in the Extism SDK)."""

    def __repr__(self) -> str:
        return "<every @host_fn function>"


#: ``functions=`` not given: link every registered ``@host_fn`` function that a module imports
REGISTERED: Any = _Registered()


def _functions(functions: Iterable[HostFunction] | None) -> list[HostFunction]:
    if functions is REGISTERED:  # a name defined again replaces the earlier function of that name
        return list({(f.namespace, f.name): f for f in HOST_FN_REGISTRY}.values())
    return list(functions or ())


def _as_wasm(data: bytes) -> bytes:
    """Module bytes as wasm: WebAssembly text (WAT) is accepted too, as Extism's runtime accepts it."""
    if data[:4] == b"\0asm":
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # not text: let the compiler report what is wrong with it
    if not text.lstrip().startswith("("):
        return data
    try:
        return bytes(wasmtime.wat2wasm(text))  # a bytearray; callers hash and slice module bytes
    except wasmtime.WasmtimeError as exc:
        raise PluginLoadError(f"invalid WebAssembly text: {str(exc).strip()}") from None


def _config(config: Any) -> dict[str, str]:
    """Config values: strings; ``None`` means the key is absent (as in Extism). Anything else is an error here,
    where the Extism runtime silently drops the whole config."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ManifestError(f"config must be a mapping of strings to strings, not {type(config).__name__}")
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ManifestError(f"config keys must be strings, got {key!r}")
        if value is None:
            continue
        if not isinstance(value, str):
            raise ManifestError(
                f"config value of {key!r} must be a string, got {type(value).__name__} (use str() or json.dumps())"
            )
        out[key] = value
    return out


def _init_steps(all_exports: set[str], callable_exports: dict[str, bool]) -> list[tuple[str, tuple[int, ...]]]:
    """Run-time initialisation in Extism's order: Haskell's ``hs_init`` (after ``_initialize``), else C++
    constructors, else a WASI reactor's ``_initialize``."""
    if "hs_init" in all_exports:
        steps: list[tuple[str, tuple[int, ...]]] = [("_initialize", ())] if "_initialize" in callable_exports else []
        return [*steps, ("hs_init", (0, 0))]
    if "__wasm_call_ctors" in callable_exports:
        return [("__wasm_call_ctors", ())]
    if "_initialize" in callable_exports:
        return [("_initialize", ())]
    return []


class CompiledPlugin:
    """A validated, compiled plugin that many :class:`Plugin` instances can share.

    ``plugin`` is a path to a ``.wasm`` or manifest ``.json``, wasm bytes, an Extism manifest (dict or JSON text) or
    a :class:`Manifest`. Loading fails with :class:`~edged.errors.PluginLoadError` for bad bytes, a hash mismatch,
    imports nothing provides or a manifest error. ``metered=True`` compiles for fuel metering, which instances
    need to take a ``fuel`` limit; without it code runs about a third faster in tight loops.
    """

    def __init__(
        self,
        plugin: Any,
        wasi: bool = False,
        functions: Iterable[HostFunction] | None = REGISTERED,
        *,
        allow_urls: bool = False,
        cache: ModuleCache | None = None,
        metered: bool = False,
    ) -> None:
        self.metered = metered
        self.engine = ENGINE if metered else UNMETERED_ENGINE
        self.manifest, base_dir = resolve_source(plugin)
        self.wasi = wasi
        self.functions = _functions(functions)
        cache = cache if cache is not None else default_cache()
        self.modules: dict[str, wasmtime.Module] = {}
        #: memories and tables the plugin's modules define, all of which the store's limits must cover
        self.memories = self.tables = 0
        #: the initial size (pages) of the largest memory the plugin's modules define
        self.largest_initial_pages = 0
        for name, src in self.manifest.modules():
            wasm = _as_wasm(read_module(src, base_dir, allow_urls))
            self.modules[name] = cache.load(wasm, self.engine)
            memories, tables = defined_memories_and_tables(wasm)
            self.largest_initial_pages = max([self.largest_initial_pages, *memory_minimums(wasm)])
            self.memories += memories
            self.tables += tables
        if self.tables > MAX_TABLES:
            raise PluginLoadError(f"the plugin's modules define {self.tables} tables; at most {MAX_TABLES} are allowed")
        self.main = self.modules["main"]
        if self.manifest.edged:
            self.name = self.manifest.edged.name
        else:
            src = self.manifest.wasm[-1]
            self.name = (
                src.name
                if src.name and src.name != "main"
                else (Path(src.path).stem if isinstance(src, WasmPath) else "plugin")
            )
        self._user = {(f.namespace, f.name): f for f in self.functions}
        for name, module in self.modules.items():
            self._check_imports(name, module)
        #: every (module, name) any module imports: only these are linked into each new instance
        self.imports: set[tuple[str, str]] = {
            (imp.module, imp.name or "") for module in self.modules.values() for imp in module.imports
        }
        self._user_kinds = {(f.namespace, f.name): value_kinds(f.functype()) for f in self.functions}
        self.exports: dict[str, bool] = {}  # callable export name -> returns i32
        self.bad_exports: dict[str, str] = {}
        for exp in self.main.exports:
            if isinstance(exp.type, wasmtime.FuncType):
                sig = _sig(exp.type)
                if sig[0] == () and sig[1] in ((), ("i32",)):
                    self.exports[exp.name] = sig[1] == ("i32",)
                else:
                    self.bad_exports[exp.name] = _fmt_sig(sig)
        hs_init = next((e for e in self.main.exports if e.name == "hs_init"), None)
        if hs_init is not None and (
            not isinstance(hs_init.type, wasmtime.FuncType) or _sig(hs_init.type) != (("i32", "i32"), ())
        ):
            raise PluginLoadError("the export hs_init must be a function (i32, i32) -> (), as Haskell's runtime has it")
        self.init_steps = _init_steps({e.name for e in self.main.exports}, self.exports)
        #: where each export an instance needs sits, so instances skip wasmtime-py's map of every export
        self.export_indices = export_indices(self.main, ["memory", *self.exports, *(["hs_init"] if hs_init else [])])
        kernel_module(self.engine)  # fills _kernel_indices
        #: does any module import the kernel under its own name? Then the kernel instance is linked as a whole.
        self.links_kernel = any((ENV_MODULE, n) in self.imports for n in KERNEL_EXPORTS)
        #: (import name, kernel export) for each legacy ``env::extism_*`` import, linked one by one
        self.legacy_links = [
            (LEGACY_MODULE.encode(), (LEGACY_PREFIX + n).encode(), n)
            for n in KERNEL_EXPORTS
            if (LEGACY_MODULE, LEGACY_PREFIX + n) in self.imports
        ]
        self.kernel_indices = dict(_kernel_indices)
        self._user_types = {(f.namespace, f.name): f.functype() for f in self.functions}

    def _check_imports(self, module_name: str, module: wasmtime.Module) -> None:
        where = f"module '{module_name}'"
        for imp in module.imports:
            mod, name, ty = imp.module, imp.name or "", imp.type
            qualified = f"{mod}::{name}"
            if mod in WASI_MODULES:
                if not self.wasi:
                    raise PluginLoadError(f"{where} imports WASI ({qualified}) but WASI is not enabled for it")
                continue
            if mod in self.modules and mod != module_name:
                continue  # linked from another module in the manifest; wasmtime checks the types
            if not isinstance(ty, wasmtime.FuncType):
                raise PluginLoadError(f"{where} imports a non-function {qualified}; only functions can be imported")
            sig = _sig(ty)
            user = self._user.get((mod, name))
            if user is not None:
                want = _sig(user.functype())
                if sig != want:
                    raise PluginLoadError(
                        f"{where} imports {qualified} as {_fmt_sig(sig)} but the host function is {_fmt_sig(want)}"
                    )
                continue
            env_name = name
            if mod == LEGACY_MODULE and name.startswith(LEGACY_PREFIX):
                env_name = name[len(LEGACY_PREFIX) :]
            elif mod != ENV_MODULE:
                raise PluginLoadError(f"{where} imports unknown function {qualified}: no host function provides it")
            expected = _ENV_SIGS.get(env_name)
            if expected is None:
                raise PluginLoadError(f"Invalid function import from {mod}: {name}")
            if sig != expected:
                raise PluginLoadError(
                    f"Invalid function import from {mod}: {name} has type {_fmt_sig(sig)}, "
                    f"expected {_fmt_sig(expected)}"
                )

    def function_exists(self, name: str) -> bool:
        """True if ``name`` is a callable export (``() -> i32`` or ``() -> ()``)."""
        return name in self.exports

    def instantiate(self, **kwargs: Any) -> Plugin:
        """A new :class:`Plugin` sharing this compilation."""
        return Plugin(self, **kwargs)


class _Instance:
    """One store with its kernel and plugin instances. Discarded after a trap; the next call makes a new one."""

    __slots__ = ("callers", "kernel", "memory", "store", "wasi_output")

    def __init__(
        self,
        store: wasmtime.Store,
        kernel: Kernel,
        memory: wasmtime.Memory | None,
        wasi_output: WasiOutput | None = None,
    ) -> None:
        self.store = store
        self.kernel = kernel
        self.memory = memory
        self.wasi_output = wasi_output
        self.callers: dict[str, Callable[[], int]] = {}


def _weak_kernel_getter(plugin: Plugin) -> Callable[[], Kernel]:
    ref = weakref.ref(plugin)

    def current_kernel() -> Kernel:
        p = ref()
        if p is None:
            raise PluginError("host function called after its plugin was closed")
        return p._current_kernel()

    return current_kernel


class Plugin:
    """An Extism plugin, mirroring the official SDK's ``extism.Plugin``.

    The instance is created on the first call and persists across calls, with its memory, globals and vars.
    ``fuel`` limits each call's instructions, ``timeout_ms`` its wall-clock time (overriding the manifest's), and
    ``max_output_bytes`` its output. Creating the instance (start functions and initialisation exports) runs under
    ``init_fuel`` and ``init_timeout_ms``, which default to the call's limits: no plugin code runs unlimited when a
    limit is set. Failures raise :class:`~edged.errors.PluginError` subclasses with Extism's
    messages. After a trap (including fuel, timeout and oom) the instance is discarded and the next call gets a
    fresh one; vars survive.
    """

    def __init__(
        self,
        plugin: Any,
        wasi: bool = False,
        config: Mapping[str, str | None] | None = None,
        functions: Iterable[HostFunction] | None = REGISTERED,
        *,
        fuel: int | None = None,
        timeout_ms: int | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        allow_urls: bool = False,
        logger: logging.Logger | None = None,
        cache: ModuleCache | None = None,
        init_fuel: int | None = None,
        init_timeout_ms: int | None = None,
        kernel_memory_limit: int | None = None,
        http_response_headers: bool = False,
        max_pages_caps_total: bool = False,
    ) -> None:
        if isinstance(plugin, CompiledPlugin):
            given = [n for n, v in (("wasi", wasi), ("allow_urls", allow_urls)) if v]
            if functions is not REGISTERED and functions:
                given.append("functions")
            if cache is not None:
                given.append("cache")
            if given:  # these shape the compilation: silently ignoring them would surprise
                raise ValueError(
                    f"these options belong to the CompiledPlugin, pass them when compiling: {', '.join(given)}"
                )
            self.compiled = plugin
        else:
            self.compiled = CompiledPlugin(
                plugin, wasi=wasi, functions=functions, allow_urls=allow_urls, cache=cache, metered=fuel is not None
            )
        m = self.compiled.manifest
        self.name = self.compiled.name
        self.config: dict[str, str] = {**m.config, **_config(config)}
        #: a unique id, as the SDK's ``Plugin.id``
        self.id = uuid.uuid4()
        self._cancel: Cancellation | None = None
        self._fuel: int | None = None
        self.fuel = fuel
        self.timeout_ms = timeout_ms if timeout_ms is not None else m.timeout_ms
        if self.timeout_ms is not None and self.timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        #: limits for creating an instance (start functions and run-time initialisation); None: the call's
        self.init_fuel = init_fuel
        self.init_timeout_ms = init_timeout_ms
        if init_fuel is not None and init_fuel <= 0:
            raise ValueError("init_fuel must be positive")
        if init_timeout_ms is not None and init_timeout_ms <= 0:
            raise ValueError("init_timeout_ms must be positive")
        self.max_output_bytes = max_output_bytes
        self.memory_limit = self._memory_limit(m.memory.max_pages, max_pages_caps_total)
        #: bytes the kernel's block heap may use beyond a call's input (what the plugin allocates there, and the
        #: results host functions give it); by default as much as max_pages allows the plugin itself, else None
        self.kernel_memory_limit = (
            kernel_memory_limit
            if kernel_memory_limit is not None
            else max(m.memory.max_pages * L.PAGE, KERNEL_HEAP_MIN)
            if m.memory.max_pages
            else None
        )
        self.logger = logger or logging.getLogger(f"edged.plugin.{self.name}")
        self._inst: _Instance | None = None
        # Host callbacks live in a global table until wasmtime drops them with the store, and the store lives as
        # long as this object: a strong reference back from the callbacks would keep every Plugin alive forever.
        self._kernel_ref = _weak_kernel_getter(self)
        self.env = HostEnv(
            self.logger,
            m.memory.max_var_bytes,
            m.allowed_hosts,
            m.memory.max_http_response_bytes,
            self._kernel_ref,
        )
        #: give plugins the last HTTP response's headers (``http_headers``); off by default, as in Extism
        self.env.http_response_headers = http_response_headers
        self.last_fuel_used: int | None = None
        #: fuel the last instance creation burnt (start functions and initialisation), when fuel was limited
        self.last_init_fuel_used: int | None = None
        #: vars served by the kernel (in wasm) unless the budget is too big to reserve in kernel memory
        self._kernel_vars = self.env.max_var_bytes <= KERNEL_VARS_MAX_BYTES

    def _memory_limit(self, max_pages: int | None, caps_total: bool) -> int | None:
        """The store's per-memory byte limit for ``memory.max_pages``.

        As in Extism, ``max_pages`` limits the pages a plugin *grows* after instantiation: a memory starts at its
        declared size (which may not exceed ``max_pages``) and may grow by ``max_pages`` more. With several
        memories the growth is split between them. ``caps_total`` (the device's budget) makes ``max_pages`` a
        hard cap on the total instead, split between the memories.
        """
        if not max_pages:
            return None
        share = max_pages // max(self.compiled.memories, 1)
        if caps_total:
            return share * L.PAGE
        initial = self.compiled.largest_initial_pages
        if initial > max_pages:  # refused when the instance is created, as "oom"
            return max_pages * L.PAGE
        return min(initial + share, 65536) * L.PAGE

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> Plugin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the instance; safe to call twice. A later call instantiates again (vars survive)."""
        self._drop_instance()

    def reset(self) -> None:
        """Start over as a newly created plugin would: drop the instance and forget every var and the last HTTP
        response. The compiled module, config and limits stay; the next call instantiates (and initialises) again.
        Use it where state a plugin kept must not outlive a restart; :meth:`close` keeps the vars."""
        self._drop_instance()
        # after the drop the host's copy of the vars is the only one (kernel-served vars went with the instance)
        self.env.forget_state()

    def _drop_instance(self) -> None:
        """Discard the instance (after a trap, or on close); kernel-served vars move back to the host first, so
        they survive into the next instance."""
        inst = self._inst
        self._inst = None
        if inst is not None and inst.wasi_output is not None:
            inst.wasi_output.drain()
            inst.wasi_output.close()
        if inst is not None and self._kernel_vars:
            values = inst.kernel.read_vars()
            self.env.vars = values
            self.env.var_bytes = sum(len(k) + len(v) + L.VAR_ENTRY_OVERHEAD for k, v in values.items())

    @property
    def fuel(self) -> int | None:
        """The fuel limit of each call (None: unlimited). Needs a metered compilation (see :class:`CompiledPlugin`)."""
        return self._fuel

    @fuel.setter
    def fuel(self, fuel: int | None) -> None:
        if fuel is not None:
            if fuel <= 0:
                raise ValueError("fuel must be positive")
            if not self.compiled.metered:
                raise ValueError(
                    "a fuel limit needs a plugin compiled with fuel metering: CompiledPlugin(..., metered=True)"
                )
        self._fuel = fuel

    def _current_kernel(self) -> Kernel:
        inst = self._inst
        if inst is None:
            raise PluginError("host function called outside a plugin call")
        return inst.kernel

    def function_exists(self, name: str) -> bool:
        """True if ``name`` is a callable export."""
        return self.compiled.function_exists(name)

    @property
    def ready(self) -> bool:
        """True while an instance exists, so the next call runs no initialisation."""
        return self._inst is not None

    def prepare(self) -> None:
        """Create the instance now, under the init limits, if there is none (the first call would otherwise).

        Raises what the first call would raise for a start function or initialisation that fails.
        """
        if self._inst is None:
            if self.init_timeout_ms is None and self.timeout_ms is None:
                self._inst = self._instantiate()
            else:
                with DEADLINE_SWITCH:
                    self._inst = self._instantiate()

    @property
    def vars(self) -> dict[bytes, bytes]:
        """The plugin's persistent vars (a snapshot)."""
        inst = self._inst
        if inst is not None and self._kernel_vars:
            return inst.kernel.read_vars()
        return dict(self.env.vars)

    def _wasi_config(self) -> tuple[wasmtime.WasiConfig, WasiOutput]:
        cfg = wasmtime.WasiConfig()
        for host, guest in (self.compiled.manifest.allowed_paths or {}).items():
            writable = not host.startswith("ro:")
            path = host[3:] if not writable else host
            if not Path(path).is_dir():
                raise PluginLoadError(f"allowed_paths: {path} is not a directory")
            cfg.preopen_dir(path, guest, writable)
        return cfg, WasiOutput(cfg, self.env.log_limiter)

    def _instantiate(self) -> _Instance:
        compiled = self.compiled
        engine = compiled.engine
        store = wasmtime.Store(engine)
        if compiled.metered:
            store.set_fuel(UNLIMITED_FUEL)
        store.set_epoch_deadline(UNLIMITED_TICKS)
        kinst = wasmtime.Instance(store, kernel_module(engine), [])
        kernel = Kernel(
            store,
            kinst,
            self.config,
            extism_log_level(self.logger),
            compiled.kernel_indices,
            (self.env.vars, self.env.max_var_bytes) if self._kernel_vars else None,
            self.kernel_memory_limit,
        )
        if self.memory_limit is not None:
            # wasmtime's store limit applies to every memory, but max_pages is meant for the plugin's alone:
            # give the kernel its room first (untouched pages cost address space only), then set the limit.
            reserve = KERNEL_RESERVE_UNDER_LIMIT
            if kernel.kernel_limit is not None:
                reserve = min(reserve, kernel.kernel_limit)
            kernel.reserve(reserve)
        # one memory per module that defines one (plus the kernel's), the tables they declare, each bounded
        kernel.store_limits = {
            "memory_size": self.memory_limit if self.memory_limit is not None else -1,
            "table_elements": MAX_TABLE_ELEMENTS,
            "tables": _KERNEL_TABLES + compiled.tables,
            "memories": 1 + compiled.memories,
            "instances": 1 + len(compiled.modules),
        }
        store.set_limits(**kernel.store_limits)
        linker = wasmtime.Linker(engine)
        wanted = compiled.imports  # link only what the modules import: defining costs more than calling
        if compiled.links_kernel:  # one call links every kernel function (its other exports are never imported)
            linker.define_instance(store, ENV_MODULE, kinst)
        for module_b, name_b, kernel_name in compiled.legacy_links:
            define_func(linker, store, module_b, name_b, kernel.func(kernel_name))
        env_functions = None
        for name, kinds in ENV_HOST_FUNCTIONS.items():
            for module, qualified in ((ENV_MODULE, name), (LEGACY_MODULE, LEGACY_PREFIX + name)):
                if (module, qualified) in wanted:
                    if self._kernel_vars and name in _KERNEL_VAR_EXPORTS:  # served in wasm: no crossing
                        define_func(
                            linker, store, module.encode(), qualified.encode(), kernel.func(_KERNEL_VAR_EXPORTS[name])
                        )
                        continue
                    env_functions = env_functions or self.env.functions()
                    ft, fn = env_functions[name]
                    define_raw_func(linker, module, qualified, ft, fn, kinds)
        for hf in compiled.functions:
            if (hf.namespace, hf.name) in wanted:
                fn = hf.bind(self._kernel_ref, self.name)
                define_raw_func(
                    linker,
                    hf.namespace,
                    hf.name,
                    compiled._user_types[(hf.namespace, hf.name)],
                    fn,
                    compiled._user_kinds[(hf.namespace, hf.name)],
                )
        wasi_output = None
        if compiled.wasi:
            linker.define_wasi()
            host_env = self.env
            guard_wasi(linker, store, compiled.imports, lambda: host_env.deadline)
            cfg, wasi_output = self._wasi_config()
            store.set_wasi(cfg)
        inst = _Instance(store, kernel, None, wasi_output)
        self._inst = inst  # host functions called during init need it
        fuel = self.init_fuel if self.init_fuel is not None else self.fuel
        timeout = self.init_timeout_ms if self.init_timeout_ms is not None else self.timeout_ms
        if fuel is not None and compiled.metered:
            store.set_fuel(fuel)
        if timeout is not None:
            store.set_epoch_deadline(int(timeout / TICK_MS) + 1)
            self.env.deadline = time.monotonic() + timeout / 1000.0
            TICKER.arm(self.compiled.engine)
        try:
            return self._start(inst, linker)
        finally:
            if timeout is not None:
                TICKER.disarm(self.compiled.engine)
                self.env.deadline = None
            if wasi_output is not None and self._inst is inst:
                wasi_output.drain()
            if fuel is not None and compiled.metered:
                self.last_init_fuel_used = fuel - store.get_fuel()
            if self._inst is inst:  # calls arm their own limits
                store.set_epoch_deadline(UNLIMITED_TICKS)
                if compiled.metered:
                    store.set_fuel(UNLIMITED_FUEL)

    def _start(self, inst: _Instance, linker: wasmtime.Linker) -> _Instance:
        """Instantiate the modules (running their start functions) and run the plugin's initialisation."""
        compiled, store = self.compiled, inst.store
        try:
            for name, module in compiled.modules.items():
                if name == "main":
                    continue
                linker.define_instance(store, name, linker.instantiate(store, module))
            main = linker.instantiate(store, compiled.main)
        except wasmtime.WasmtimeError as exc:
            self._drop_instance()
            if self.memory_limit is not None and "memory" in str(exc) and "limit" in str(exc):
                raise OutOfMemory("oom") from exc
            raise PluginLoadError(f"cannot instantiate plugin: {str(exc).strip()}") from None
        except (wasmtime.Trap, PluginError) as exc:
            self._drop_instance()
            raise self._classify(exc, inst, "plugin start function failed: ") from exc
        except BaseException:  # interrupted while starting (KeyboardInterrupt in a start function's host call)
            self._drop_instance()
            raise
        exports = exports_at(store, main, compiled.export_indices)
        mem = exports.get("memory")
        inst.memory = mem if isinstance(mem, wasmtime.Memory) else None
        for name, returns_i32 in compiled.exports.items():
            inst.callers[name] = no_arg_caller(store, exports[name], returns_i32)
        self._run_init(inst, exports)
        return inst

    def _run_init(self, inst: _Instance, exports: Any) -> None:
        """Run-time initialisation, once per instance, in Extism's order."""
        for name, args in self.compiled.init_steps:
            try:
                exports[name](inst.store, *args)
            except (wasmtime.Trap, wasmtime.WasmtimeError, PluginError) as exc:
                self._drop_instance()
                raise self._classify(exc, inst, f"plugin initialisation ({name}) failed: ") from exc
            except BaseException:  # interrupted half-way through initialisation: never reuse that instance
                self._drop_instance()
                raise

    # --- calls -------------------------------------------------------------------------------------------------

    def cancel_handle(self) -> Any:
        """A handle whose ``cancel()`` stops this plugin's running call from another thread (see
        :class:`~edged.runtime.CancelHandle`; the call fails with :class:`~edged.errors.PluginCancelled`)."""
        from ._compat import CancelHandle

        return CancelHandle(self)

    def _cancellation(self) -> Cancellation:
        if self._cancel is None:
            from ._compat import Cancellation

            self._cancel = Cancellation(self.compiled.engine)
        return self._cancel

    def call(
        self,
        name: str,
        data: bytes | str = b"",
        parse: Callable[[bytes], Any] | None = None,
        host_context: Any = None,
    ) -> Any:
        """Call export ``name`` with ``data`` as input and return its output bytes (or ``parse(output)``).

        ``host_context`` is what host functions get from ``CurrentPlugin.host_context()`` during this call.
        """
        if host_context is not None:
            token = HOST_CONTEXT.set(host_context)
            try:
                return self.call(name, data, parse)
            finally:
                HOST_CONTEXT.reset(token)
        if self.timeout_ms is None and self.init_timeout_ms is None:
            return self._call(name, data, parse)
        with DEADLINE_SWITCH:  # every GIL hand-back of the call, from instantiating to the error, comes back soon
            return self._call(name, data, parse)

    def _call(self, name: str, data: bytes | str, parse: Callable[[bytes], Any] | None) -> Any:
        if isinstance(data, str):
            data = data.encode()
        inst = self._inst or self._instantiate()
        self._inst = inst
        caller = inst.callers.get(name)
        if caller is None:
            if name in self.compiled.bad_exports:
                raise FunctionNotFound(
                    f"Function {name} has signature {self.compiled.bad_exports[name]}; "
                    "Extism exports must be () -> i32 or () -> ()"
                )
            raise FunctionNotFound(f"Function not found: {name}")
        store, kernel = inst.store, inst.kernel
        fuel = self.fuel
        if fuel is not None:
            store.set_fuel(fuel)
        kernel.begin(data)
        timeout = self.timeout_ms
        if timeout is not None:
            store.set_epoch_deadline(int(timeout / TICK_MS) + 1)
            self.env.deadline = time.monotonic() + timeout / 1000.0
            TICKER.arm(self.compiled.engine)
        cancel = self._cancel
        if cancel is not None:
            cancel.begin(store, self.env.deadline)
        try:
            rc = caller()
        except wasmtime.ExitTrap as exc:  # WASI proc_exit: 0 with no error is a success
            rc = exc.code
        except PluginError:  # raised by a host function: already the right error, with its own cause
            self._drop_instance()
            raise
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            reason = cancel.reason if cancel is not None else None
            if reason == "cancelled":
                error: PluginError = PluginCancelled("cancelled")
            elif reason == "timeout":
                error = PluginTimeout("timeout")
            else:
                error = self._classify(exc, inst)
            self._drop_instance()
            raise error from exc
        except BaseException:  # KeyboardInterrupt and the like, mid-call: the instance is in an unknown state
            self._drop_instance()
            raise
        finally:
            if cancel is not None:
                cancel.end()
            self.env.deadline = None
            if timeout is not None:
                TICKER.disarm(self.compiled.engine)
                store.set_epoch_deadline(UNLIMITED_TICKS)
            if fuel is not None:  # also after a failure: a budget report needs what the failed call burnt
                self.last_fuel_used = fuel - store.get_fuel()
            if inst.wasi_output is not None and self._inst is inst:
                inst.wasi_output.drain()
        out_off, out_len, err = kernel.result()
        if err:
            msg = log_text(kernel.read(err))  # the plugin's text goes to logs and terminals: one safe line
            raise PluginError(msg or f"Error code: {rc}")
        if rc != 0:
            raise PluginError(f"Error code: {rc}")
        out = kernel.output(out_off, out_len, self.max_output_bytes)
        return parse(out) if parse is not None else out

    def call_json(self, name: str, data: Any = None) -> Any:
        """Call with a JSON-encoded input and decode the JSON output."""
        return self.call(name, b"" if data is None else json.dumps(data).encode(), parse=json.loads)

    def _classify(self, exc: BaseException, inst: _Instance, prefix: str = "") -> PluginError:
        """Turn what wasmtime raised into the Extism-style error."""
        if isinstance(exc, PluginError):
            return exc
        message = inst.kernel.host_error()
        if message is not None:  # the kernel trapped on purpose (vars), with Extism's message
            return PluginError(prefix + message)
        if isinstance(exc, wasmtime.Trap):
            code = exc.trap_code
            if code == wasmtime.TrapCode.OUT_OF_FUEL:
                return OutOfFuel(prefix + "plugin ran out of fuel")
            if code == wasmtime.TrapCode.INTERRUPT:
                return PluginTimeout(prefix + "timeout")
            if self._memory_exhausted(inst):
                return OutOfMemory(prefix + "oom")
            return PluginTrap(prefix + log_text(trap_message(str(exc)).encode()))
        return PluginTrap(prefix + log_text(trap_message(str(exc)).encode()))

    def _memory_exhausted(self, inst: _Instance) -> bool:
        """After a trap: was it most likely a failed ``memory.grow`` against the max_pages budget?

        wasmtime-py has no resource-limiter callback, so a failed grow is invisible (it returns -1 and the guest's
        allocator then traps). Allocators grow by at least what they need and usually double (AssemblyScript,
        dlmalloc), so a trap with the memory over half its budget is reported as "oom"; the trap stays the cause.
        """
        if self.memory_limit is None or inst.memory is None:
            return False
        try:
            size = inst.memory.data_len(inst.store)
            return size + max(L.PAGE, size) > self.memory_limit
        except wasmtime.WasmtimeError:
            return False
