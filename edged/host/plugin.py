"""A plugin loaded for this device: capabilities granted, host functions bound, frames decoded.

:class:`DevicePlugin` is what the preview command, the frame engine and the deploy agent run. It reads the
manifest's ``edged`` block, asks the device policy for a grant (refusing the plugin if it asks for more), refuses
imports of host functions it was not granted, and drives the plugin through the frame protocol (``frame``, or
Matricks' ``setup``/``update``), sensor ticks (``tick``) and GPIO events (``on_gpio``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import CapabilityDenied, OutOfFuel, PluginError, PluginLoadError, PluginTimeout
from ..runtime import (
    DEFAULT_MAX_HTTP_RESPONSE_BYTES,
    DEFAULT_MAX_VAR_BYTES,
    PAGE,
    CompiledPlugin,
    EdgedBlock,
    Manifest,
    MemoryOptions,
    ModuleCache,
    Plugin,
    WasmPath,
    default_cache,
    read_module,
    resolve_source,
)
from .capabilities import Capabilities, DevicePolicy
from .frames import Tick, decode_frame, decode_matricks, max_output_bytes
from .functions import (
    EVENTS_PER_DELIVERY,
    DeviceIO,
    DisplayInfo,
    HostContext,
    SharedValues,
    check_imports,
    host_functions,
)

Kind = Literal["animation", "sensor", "matricks", "service"]
#: kinds that draw on a display, and so need the ``led`` capability
DRAWING_KINDS: frozenset[str] = frozenset({"animation", "matricks"})

log = logging.getLogger("edged.host")

#: Wall-clock limit on creating an instance (start functions, initialisation, Matricks ``setup``) when the caller
#: gives none: no plugin code on a device ever runs without a limit.
DEFAULT_INIT_TIMEOUT_MS = 1000
#: Output cap for calls whose output the host does not draw (a sensor's tick, on_gpio, a service's calls).
OTHER_OUTPUT_CAP = 1 << 20
#: Memory one plugin may hold in all (MiB) when the device says nothing else: the daemon's ``plugin_memory_mb``
#: default, and what ``edged preview`` and ``edged plugin check`` give a plugin. 16 lets ten plugins fit a Pi Zero 2 W
#: (512 MB) beside edged and the OS (docs/daemon.md, Sizing).
DEFAULT_PLUGIN_MEMORY_MB = 16
#: :data:`DEFAULT_PLUGIN_MEMORY_MB` in bytes
DEFAULT_MEMORY_BUDGET = DEFAULT_PLUGIN_MEMORY_MB << 20
_MIB = 1 << 20


def memory_plan(budget: int, memory: MemoryOptions, frame_cap: int, name: str) -> tuple[MemoryOptions, int, int]:
    """Split one plugin's memory ``budget`` (bytes) between the kernel and the plugin's own memories.

    Everything a plugin can make the host hold counts: its linear memories (the manifest's ``max_pages`` is only a
    wish, never above the device's budget), the kernel's memory (its blocks, input, output, config and vars) and
    HTTP responses. Returns the manifest's ``memory`` block as the device enforces it, the kernel's share in all,
    and the part of it the kernel's block heap may use beyond a call's input (the runtime's
    ``kernel_memory_limit``). Tables are bounded by the runtime itself (a few MiB at most).
    """
    var_bytes = min(memory.max_var_bytes if memory.max_var_bytes is not None else DEFAULT_MAX_VAR_BYTES, budget // 8)
    heap = max(2 * _MIB, 4 * frame_cap)
    kernel = _MIB + var_bytes + heap  # the kernel's own MiB (data, stack, config), vars, room for blocks
    http = min(memory.max_http_response_bytes or DEFAULT_MAX_HTTP_RESPONSE_BYTES, kernel - _MIB - var_bytes)
    pages = (budget - kernel) // PAGE
    if pages < 1:
        raise PluginLoadError(
            f"{name}: the device's memory budget of {budget / _MIB:g} MiB is too small for this plugin "
            f"(the kernel alone needs {kernel / _MIB:.1f} MiB); raise plugin_memory_mb"
        )
    if memory.max_pages is not None:
        pages = min(pages, memory.max_pages)
    limited = memory.model_copy(
        update={"max_pages": pages, "max_var_bytes": var_bytes, "max_http_response_bytes": http}
    )
    return limited, kernel, heap


def detect_kind(exports: set[str], declared: Kind | None) -> Kind:
    """The declared kind, or the one the exports imply: ``frame`` → animation, ``update`` → matricks,
    ``tick`` → sensor."""
    if declared:
        return declared
    if "frame" in exports:
        return "animation"
    if "update" in exports:
        return "matricks"
    if "tick" in exports:
        return "sensor"
    return "service"


def drawing_kind(edged: EdgedBlock | None, exports: set[str]) -> Kind | None:
    """The kind that makes a plugin with an ``edged`` block draw (``animation`` or ``matricks``, as its manifest
    declares it or, when the manifest does not say, as its exports imply), or ``None``. Such a plugin needs the
    ``led`` capability. Plugins without an ``edged`` block get the policy's legacy grant, which includes drawing."""
    if edged is None:
        return None
    kind = detect_kind(exports, edged.kind)
    return kind if kind in DRAWING_KINDS else None


class DevicePlugin:
    """A plugin bound to this device's hardware, values and display.

    ``source`` is anything :class:`edged.runtime.Plugin` accepts. ``policy`` decides what may be granted; a plugin
    without an ``edged`` block (a released Matricks plugin, say) gets ``policy.legacy``. ``display`` sets the
    Matricks config keys (``width``, ``height``, ``target_fps``, ``serpentine``, ``brightness``); ``config`` is
    merged over the manifest's and those. ``legacy_grant`` overrides the policy's grant for plugins without an
    ``edged`` block. ``memory_budget`` (bytes) caps everything the plugin can make the host hold (see
    :func:`memory_plan`), whatever its manifest says.
    """

    def __init__(
        self,
        source: Any,
        *,
        policy: DevicePolicy | None = None,
        io: DeviceIO | None = None,
        values: SharedValues | None = None,
        display: DisplayInfo | None = None,
        config: Mapping[str, str] | None = None,
        fuel: int | None = None,
        timeout_ms: int | None = None,
        legacy_grant: Capabilities | None = None,
        cache: ModuleCache | None = None,
        name: str | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        init_fuel: int | None = None,
        init_timeout_ms: int = DEFAULT_INIT_TIMEOUT_MS,
    ) -> None:
        manifest, base_dir = resolve_source(source)
        policy = policy or DevicePolicy()
        edged = manifest.edged
        self.name = name or (edged.name if edged else _default_name(manifest))
        self.version = edged.version if edged else "0.0.0"
        if edged is not None:
            requested = Capabilities.from_manifest_block(edged.capabilities)
            self.grant = policy.grant(requested, self.name)
        else:
            self.grant = legacy_grant if legacy_grant is not None else policy.legacy
        if not self.grant.http:
            manifest = manifest.model_copy(update={"allowed_hosts": None})
        # file access is the device's to give: the manifest's allowed_paths only ask for what the policy offers
        paths = policy.paths(manifest.allowed_paths, self.name) if self.grant.wasi else None
        manifest = manifest.model_copy(update={"allowed_paths": paths})
        if base_dir is not None:  # make relative wasm paths absolute before the manifest leaves its directory
            manifest = manifest.model_copy(update={"wasm": [_absolute(w, base_dir) for w in manifest.wasm]})
        cache = cache if cache is not None else default_cache()
        main_src = dict(manifest.modules())["main"]
        module = cache.load(read_module(main_src, None, allow_urls=False))
        imports = [(i.module, i.name or "") for i in module.imports]
        exports = {e.name for e in module.exports}
        self.kind: Kind = detect_kind(exports, edged.kind if edged else None)
        drawing = drawing_kind(edged, exports)
        if drawing is not None and not self.grant.led:
            raise CapabilityDenied(
                f"{self.name}: {drawing} plugins draw on the display, which needs the 'led' capability; the "
                'manifest does not ask for it (add "led": true to edged.capabilities)'
            )
        check_imports(imports, self.grant, self.name)

        self._frame_cap = max_output_bytes(self.kind, display.width, display.height) if display else OTHER_OUTPUT_CAP
        memory, _, kernel_heap = memory_plan(memory_budget, manifest.memory, self._frame_cap, self.name)
        manifest = manifest.model_copy(update={"memory": memory})

        self.logger = logging.getLogger(f"edged.plugin.{self.name}")
        self.display = display
        self.ctx = HostContext(self.name, self.grant, io, values or SharedValues(), display, self.logger)
        merged: dict[str, str] = {**(display.config() if display else {}), **manifest.config, **(config or {})}
        self.compiled = CompiledPlugin(
            manifest, wasi=self.grant.wasi, functions=host_functions(self.ctx, imports), cache=cache, metered=True
        )
        self.plugin = Plugin(
            self.compiled,
            config=merged,
            fuel=fuel,
            timeout_ms=timeout_ms,
            logger=self.logger,
            init_fuel=init_fuel,
            init_timeout_ms=init_timeout_ms,
            max_output_bytes=OTHER_OUTPUT_CAP,
            kernel_memory_limit=kernel_heap,
            max_pages_caps_total=True,  # the device's budget bounds what the plugin holds, not only what it grows
        )
        self._setup_done = False
        self._budget: int | None = None
        self._spent = 0
        self._drops_logged = 0

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the instance; safe to call twice."""
        self.plugin.close()

    def __enter__(self) -> DevicePlugin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def restart(self) -> None:
        """Start over with a fresh instance, no Extism vars and no queued GPIO events (the next frame runs ``setup``
        again for Matricks plugins): each playlist play and each restart after quarantine starts clean, so bad state
        a plugin kept in a var cannot outlive it."""
        self.plugin.reset()
        self._setup_done = False
        # edges queued for the old instance are stale for the new one (its pin subscriptions stay: the board has
        # no way to drop a callback, and a plugin re-subscribing is a no-op)
        with self.ctx._events_lock:
            self.ctx.events.clear()

    @property
    def ready(self) -> bool:
        """True when the next frame or tick runs no initialisation (an instance exists and Matricks' ``setup`` ran)."""
        return self.plugin.ready and (self._setup_done or self.kind != "matricks")

    def prepare(self, quick: tuple[int | None, int] | None = None) -> None:
        """Create the instance and run Matricks' ``setup`` now, under the init limits, so the frame path does not
        have to. Raises :class:`~edged.errors.PluginError` when the start functions or initialisation fail.

        ``quick`` is ``(fuel, timeout_ms)``: try within these tighter limits instead, and raise
        :class:`~edged.errors.OutOfFuel` or :class:`~edged.errors.PluginTimeout` (for ``setup`` too) when they are
        not enough, so that the caller can finish the work elsewhere under the full init limits.
        """
        p = self.plugin
        saved = p.init_fuel, p.init_timeout_ms
        if quick is not None:
            p.init_fuel, p.init_timeout_ms = quick
        try:
            p.prepare()
            if not self._setup_done:
                self.setup(strict=quick is not None)
        finally:
            p.init_fuel, p.init_timeout_ms = saved

    # --- driving -----------------------------------------------------------------------------------------------

    def setup(self, strict: bool = False) -> None:
        """Matricks' ``setup``: called once per instance before the first ``update``, under the init limits rather
        than a frame's budget (Matricks runs it unlimited; a frame's budget would cut a heavy setup off). A failure
        is only logged, as in Matricks, unless it trapped: then the instance is gone and the error is raised."""
        self._setup_done = True
        if self.kind == "matricks" and self.plugin.function_exists("setup"):
            p = self.plugin
            fuel, timeout = p.fuel, p.timeout_ms
            p.fuel = p.init_fuel  # None: no fuel cap, the init deadline still holds
            if p.init_timeout_ms is not None:
                p.timeout_ms = p.init_timeout_ms
            try:
                p.call("setup", b"")
            except PluginError as exc:
                # raised when it is to be run again under the full init limits, or when a trap (running out of
                # fuel or time included) took the instance with it: nothing is left for update to run on
                if not p.ready or (strict and isinstance(exc, OutOfFuel | PluginTimeout)):
                    self._setup_done = False
                    raise
                self.logger.warning("setup failed: %s", exc, extra={"plugin": self.name})
            finally:
                p.fuel, p.timeout_ms = fuel, timeout

    def frame(self, tick: Tick) -> np.ndarray | None:
        """Render one frame: H×W×3 RGB or H×W×4 RGBA, or ``None`` when the plugin says it is done.

        Raises :class:`~edged.errors.PluginError` (a :class:`~edged.host.frames.FrameError` for a bad frame).
        """
        if self.display is None:
            raise PluginError(f"{self.name}: no display to draw on")
        if self.kind not in ("matricks", "animation"):
            raise PluginError(f"{self.name} is a {self.kind} plugin; it does not draw frames")
        w, h = self.display.width, self.display.height
        with self._one_budget():
            self.deliver_events()
            if self.kind == "matricks":
                if not self._setup_done:
                    self.setup()
                return decode_matricks(self._call("update", b"", self._frame_cap), w, h)
            return decode_frame(self._call("frame", tick.pack(), self._frame_cap), w, h)

    def tick(self, tick: Tick) -> bytes:
        """A sensor plugin's periodic ``tick`` (after delivering pending GPIO events)."""
        with self._one_budget():
            self.deliver_events()
            return self._call("tick", tick.pack())

    @contextlib.contextmanager
    def _one_budget(self) -> Iterator[None]:
        """One fuel budget for a whole frame or tick: the ``on_gpio`` deliveries before it and the call itself
        share the plugin's per-call fuel, so an edge flood cannot buy a frame more than one budget."""
        self._budget = self.plugin.fuel
        self._spent = 0
        try:
            yield
        finally:
            self.plugin.fuel = self._budget
            self._budget = None

    def _call(self, name: str, data: bytes, output_cap: int = OTHER_OUTPUT_CAP) -> bytes:
        self.plugin.max_output_bytes = output_cap
        budget = self._budget
        if budget is not None:
            left = budget - self._spent
            if left <= 0:
                raise OutOfFuel("plugin ran out of fuel")
            self.plugin.fuel = left
        try:
            return bytes(self.plugin.call(name, data))
        finally:
            if budget is not None and self.plugin.last_fuel_used is not None:
                self._spent += self.plugin.last_fuel_used

    def deliver_events(self, limit: int | None = EVENTS_PER_DELIVERY) -> int:
        """Deliver queued GPIO edge events, oldest first, to the plugin's ``on_gpio`` export: at most ``limit``
        (``None``: all); the rest stay queued, in order, for the next call. Returns how many were delivered.

        Events are collected on gpiozero's threads and delivered here, on the caller's thread, because an
        instance must only ever be used from one thread at a time. The bound keeps an edge flood from stalling the
        frame path; a queue that overflows meanwhile drops its oldest events (``events_dropped`` counts them, and
        each new batch of drops is logged once).
        """
        ctx = self.ctx
        if ctx.events_dropped != self._drops_logged:
            self.logger.warning(
                "%d GPIO events dropped: the queue of %d was full",
                ctx.events_dropped - self._drops_logged,
                ctx.events.maxlen,
                extra={"plugin": self.name, "dropped": ctx.events_dropped},
            )
            self._drops_logged = ctx.events_dropped
        events = ctx.events
        if not events:
            return 0
        if not self.plugin.function_exists("on_gpio"):
            events.clear()
            return 0
        n = 0
        while events and (limit is None or n < limit):
            ev = events.popleft()
            self._call("on_gpio", json.dumps({"pin": ev.pin, "edge": ev.edge, "t": ev.t}).encode())
            n += 1
        return n

    @property
    def events_dropped(self) -> int:
        """GPIO events dropped since load because the queue was full."""
        return self.ctx.events_dropped

    @property
    def last_fuel_used(self) -> int | None:
        """Fuel the last frame or tick burnt, its ``on_gpio`` deliveries included."""
        if self.plugin.fuel is None:
            return self.plugin.last_fuel_used
        return self._spent if self._spent else self.plugin.last_fuel_used


def _default_name(manifest: Manifest) -> str:
    src = manifest.wasm[-1]
    if src.name and src.name != "main":
        return src.name
    return Path(src.path).stem if isinstance(src, WasmPath) else "plugin"


def _absolute(w: Any, base: Path) -> Any:
    if isinstance(w, WasmPath) and not Path(w.path).is_absolute():
        return w.model_copy(update={"path": str(base / w.path)})
    return w
