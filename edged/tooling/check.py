"""Check a plugin before it ships: manifest, imports against capabilities, exports, and a dry run in emulation.

:func:`check_plugin` never raises for a bad plugin: every problem goes into the :class:`CheckReport` (``ok`` is
False when there is one). It raises only when the plugin or manifest file does not exist (a usage error).

The dry run renders N frames (or sensor ticks) at the requested size and frame rate with edged's own host
functions, an emulated device (inputs read 0, sensors read a fixed value, nothing is touched) and fuel metering.
Fuel is the budget that decides pass or fail, because it is the same on every machine: the manifest's
``budget.fuel`` if declared, else ``budget.frame_ms`` (or the frame period) converted with this host's
calibration (:func:`edged.engine.calibration.calibration`: CPU time, measured once per machine and cached, so the
budget is the same run after run). Wall time per frame is reported, never judged.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wasmtime
from pydantic import BaseModel, ConfigDict, Field

from ..errors import CapabilityDenied, ManifestError, PluginError
from ..host.capabilities import Capabilities, DevicePolicy
from ..host.frames import Tick
from ..host.functions import LEGACY, SPECS_BY_NAME, USER, DisplayInfo, GpioEvent, SharedValues, has_capability
from ..host.plugin import DevicePlugin, detect_kind, drawing_kind
from ..runtime import Manifest, WasmPath, default_cache, load_manifest_file, read_module

log = logging.getLogger("edged.tooling")

KERNEL = "extism:host/env"
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")
#: the export each kind is driven through
REQUIRED_EXPORT = {"animation": "frame", "matricks": "update", "sensor": "tick"}
#: a dry run's per-call fuel ceiling is this many times the budget, so a runaway loop ends as a clear failure
_FUEL_CEILING = 20


class CheckOptions(BaseModel):
    """How to dry-run the plugin."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    frames: int = Field(default=60, ge=1, le=100_000)
    fps: float = Field(default=60.0, gt=0, le=1000)
    width: int = Field(default=16, ge=1, le=1024)
    height: int = Field(default=16, ge=1, le=1024)
    #: config keys merged over the manifest's
    config: dict[str, str] = Field(default_factory=dict)
    #: measure this host's fuel rate again instead of reusing the cached calibration
    recalibrate: bool = False


@dataclass
class FrameStats:
    """Per-call fuel and wall time of a dry run."""

    calls: int
    fuel_p50: int
    fuel_max: int
    ms_p50: float
    ms_max: float
    #: the call that returned "done" (0 bytes / null), if any
    done_at: int | None = None


@dataclass
class CheckReport:
    """What ``edged plugin check`` found. ``problems`` fail the check; ``warnings`` do not."""

    plugin: str
    manifest: str | None = None
    name: str | None = None
    kind: str | None = None
    imports: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: FrameStats | None = None
    #: shared values the plugin published during the dry run
    published: dict[str, bytes] = field(default_factory=dict)
    #: GPIO edge events delivered to ``on_gpio`` during the dry run
    events_delivered: int = 0
    fuel_budget: int | None = None
    ms_budget: float | None = None
    fps: float = 60.0
    #: what creating an instance cost (start functions, initialisation, Matricks setup), and its budget
    init_fuel: int | None = None
    init_ms: float | None = None
    init_fuel_budget: int | None = None
    #: how the ms budget became fuel on this host (see :mod:`edged.engine.calibration`)
    calibration: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """The report as text lines, for the CLI."""
        out = [f"plugin:   {self.name or '?'} ({self.plugin})"]
        if self.manifest:
            out.append(f"manifest: {self.manifest}")
        if self.kind:
            out.append(f"kind:     {self.kind}")
        if self.exports:
            out.append(f"exports:  {', '.join(self.exports)}")
        edged_imports = [i for i in self.imports if not i.startswith(KERNEL + "::")]
        if edged_imports:
            out.append(f"imports:  {', '.join(edged_imports)}")
        if self.init_fuel is not None and self.init_ms is not None:
            out.append(
                f"init:     fuel {self.init_fuel:,}"
                + (f" (budget {self.init_fuel_budget:,})" if self.init_fuel_budget else "")
                + f"; ms {self.init_ms:.3f}"
            )
        if self.stats is not None:
            s = self.stats
            what = "frames" if self.kind in ("animation", "matricks") else "calls"
            out.append(
                f"dry run:  {s.calls} {what}"
                + (f", done after {s.done_at}" if s.done_at is not None else "")
                + f"; fuel p50 {s.fuel_p50:,} max {s.fuel_max:,}"
                + (f" (budget {self.fuel_budget:,})" if self.fuel_budget else "")
                + f"; ms p50 {s.ms_p50:.3f} max {s.ms_max:.3f}"
                + (f" (budget {self.ms_budget:.2f} at {self.fps:g} fps)" if self.ms_budget else "")
            )
        if self.calibration:
            out.append(f"fuel:     {self.calibration}")
        for key, value in sorted(self.published.items()):
            text = value[:40].decode("utf-8", errors="replace") + ("…" if len(value) > 40 else "")
            out.append(f"published: {key} = {text!r}")
        if self.events_delivered:
            out.append(f"on_gpio:  {self.events_delivered} edge events delivered")
        out += [f"warning:  {w}" for w in self.warnings]
        out += [f"problem:  {p}" for p in self.problems]
        out.append("PASS" if self.ok else f"FAIL ({len(self.problems)} problem{'s' * (len(self.problems) != 1)})")
        return out


class DryRunIO:
    """The emulated device of a dry run: inputs read 0, sensors read ``sensor_value``, outputs are recorded and
    edge watches are accepted (no edges ever fire)."""

    def __init__(self, sensor_value: float = 0.5) -> None:
        self.sensor_value = sensor_value
        self.writes: list[tuple[int, int]] = []
        self.pwm: list[tuple[int, float]] = []
        self.watched: list[int] = []

    def gpio_read(self, pin: int) -> int:
        return 0

    def gpio_write(self, pin: int, value: int) -> None:
        self.writes.append((pin, value))

    def gpio_pwm(self, pin: int, duty: float) -> None:
        self.pwm.append((pin, duty))

    def gpio_watch(self, pin: int, callback: Callable[[int, str, float], None]) -> None:
        self.watched.append(pin)

    def sensor_read(self, name: str) -> tuple[float, str]:
        return self.sensor_value, ""


def find_manifest(plugin: Path) -> Path | None:
    """The manifest that goes with a plugin path: the path itself (.json), ``manifest.json`` or
    ``NAME.manifest.json`` in a plugin folder or beside a .wasm."""
    if plugin.suffix == ".json":
        return plugin
    folder, stem = (plugin, plugin.name) if plugin.is_dir() else (plugin.parent, plugin.stem)
    for candidate in (folder / "manifest.json", folder / f"{stem}.manifest.json"):
        if candidate.is_file():
            return candidate
    return None


def check_plugin(
    plugin: str | Path, *, manifest: str | Path | None = None, options: CheckOptions | None = None
) -> CheckReport:
    """Check a plugin (a .wasm, a manifest .json or a plugin folder); see the module docstring."""
    opts = options or CheckOptions()
    path = Path(plugin)
    if not path.exists():
        raise FileNotFoundError(f"no such plugin: {path}")
    if manifest is not None and not Path(manifest).is_file():
        raise FileNotFoundError(f"no such manifest: {manifest}")
    manifest_path = Path(manifest) if manifest is not None else find_manifest(path)
    if manifest_path is None and path.is_dir() and (path / f"{path.name}.wasm").is_file():
        path = path / f"{path.name}.wasm"  # a folder holding only NAME.wasm: as the daemon and preview take it
    report = CheckReport(plugin=str(path), manifest=str(manifest_path) if manifest_path else None, fps=opts.fps)

    # 1. the manifest
    parsed = _load_manifest(path, manifest_path, report)
    if parsed is None:
        return report
    edged = parsed.edged
    report.name = edged.name if edged else (path.stem if path.suffix == ".wasm" else None)
    try:
        caps = Capabilities.from_manifest_block(edged.capabilities) if edged else None
    except ManifestError as exc:
        report.problems.append(str(exc))
        return report
    if edged is None:
        report.warnings.append(
            "the manifest has no 'edged' block: the plugin runs with the device's legacy grant (drawing and WASI)"
        )

    # 2. the module: imports and exports
    try:
        main_src = dict(parsed.modules())["main"]
        module = default_cache().load(read_module(main_src, None, allow_urls=False))
    except (PluginError, OSError, wasmtime.WasmtimeError) as exc:
        report.problems.append(f"the module does not load: {exc}")
        return report
    report.imports = [f"{i.module}::{i.name}" for i in module.imports]
    exports = {e.name: e.type for e in module.exports}
    report.exports = sorted(n for n, t in exports.items() if isinstance(t, wasmtime.FuncType))
    grant = caps if caps is not None else DevicePolicy().legacy
    linked = {m.name for m in parsed.wasm if m.name and m.name != "main"}
    _check_imports([(i.module, i.name or "") for i in module.imports], grant, linked, report)
    kind = detect_kind(set(exports), edged.kind if edged else None)
    report.kind = kind
    _check_exports(kind, exports, grant, report)
    drawing = drawing_kind(edged, set(exports))
    if drawing is not None and not grant.led:  # a device refuses to load it, so this is a problem, not a warning
        report.problems.append(
            f"{drawing} plugins draw on the display, which needs the 'led' capability; the manifest does not ask "
            'for it (add "led": true to edged.capabilities)'
        )
    _check_budget_decl(edged.budget if edged else {}, opts, report)
    if report.problems:
        return report

    # 3. the dry run
    if kind == "service":
        report.warnings.append("a service plugin has no frame or tick to dry-run")
        return report
    _dry_run(parsed, manifest_path or path, grant, kind, opts, report)
    return report


def _load_manifest(path: Path, manifest_path: Path | None, report: CheckReport) -> Manifest | None:
    try:
        if manifest_path is None:
            if path.suffix != ".wasm":
                name = path.name if path.is_dir() else path.stem
                report.problems.append(
                    f"{path}: no plugin here: expected {name}.manifest.json, manifest.json or {name}.wasm"
                    if path.is_dir()
                    else f"{path}: not a .wasm file, and no manifest.json beside it"
                )
                return None
            return Manifest(wasm=[WasmPath(path=str(path.resolve()))])
        parsed, base = load_manifest_file(manifest_path)
    except ManifestError as exc:
        report.problems.append(str(exc))
        return None
    wasm = []
    for w in parsed.wasm:
        if isinstance(w, WasmPath) and not Path(w.path).is_absolute():
            w = w.model_copy(update={"path": str(base / w.path)})
        wasm.append(w)
    if path.suffix == ".wasm" and len(wasm) == 1:  # check this build against the manifest
        wasm = [WasmPath(path=str(path.resolve()))]
    for w in wasm:
        if isinstance(w, WasmPath) and not Path(w.path).is_file():
            report.problems.append(f"the manifest's module {w.path} does not exist (build the plugin first)")
            return None
    return parsed.model_copy(update={"wasm": wasm})


def _check_imports(imports: list[tuple[str, str]], grant: Capabilities, linked: set[str], report: CheckReport) -> None:
    for module, name in imports:
        if module == KERNEL or module in linked:
            continue
        if module in WASI_MODULES:
            if not grant.wasi:
                report.problems.append(f"imports {module}::{name}, which needs the 'wasi' capability")
            continue
        spec = SPECS_BY_NAME.get(name)
        if module in (USER, LEGACY) and spec is not None:
            if not has_capability(grant, spec.capability):
                report.problems.append(
                    f"imports {module}::{name}, which needs the '{spec.capability}' capability; "
                    "the manifest does not ask for it"
                )
            continue
        if module == USER:
            report.problems.append(f"imports {module}::{name}, which is not an edged host function")
        else:
            report.problems.append(f"imports {module}::{name}, which nothing provides")


def _check_exports(kind: str, exports: Mapping[str, object], grant: Capabilities, report: CheckReport) -> None:
    required = REQUIRED_EXPORT.get(kind)
    for name in [n for n in (required, "setup" if kind == "matricks" else None, "on_gpio") if n]:
        ty = exports.get(name)
        if ty is None:
            if name == required:
                report.problems.append(f"kind '{kind}' needs the export '{name}'")
            continue
        if (
            not isinstance(ty, wasmtime.FuncType)
            or [str(p) for p in ty.params]
            or [str(r) for r in ty.results] != ["i32"]
        ):
            report.problems.append(f"export '{name}' must be a function () -> i32, as Extism calls it")
    if grant.gpio.events and "on_gpio" not in exports:
        report.warnings.append("asks for gpio.events but exports no 'on_gpio': its edge events are dropped")
    if "on_gpio" in exports and not grant.gpio.events:
        report.warnings.append("exports 'on_gpio' but asks for no gpio.events pins: it will never be called")


def _check_budget_decl(budget: dict[str, float], opts: CheckOptions, report: CheckReport) -> None:
    unknown = sorted(set(budget) - {"frame_ms", "fuel"})
    if unknown:
        report.warnings.append(f"budget keys not understood: {', '.join(unknown)} (known: frame_ms, fuel)")
    period_ms = 1000.0 / opts.fps
    frame_ms = budget.get("frame_ms")
    if frame_ms is not None and not 0 < frame_ms <= period_ms:
        report.problems.append(f"budget.frame_ms {frame_ms:g} does not fit the frame period at {opts.fps:g} fps")
    fuel = budget.get("fuel")
    if fuel is not None and fuel <= 0:
        report.problems.append("budget.fuel must be positive")


def _policy_for(grant: Capabilities) -> DevicePolicy:
    """A device that allows exactly what the plugin asks for (reserved pins stay reserved)."""
    g = grant.gpio
    return DevicePolicy(
        gpio_read=g.read,
        gpio_write=g.write,
        gpio_pwm=g.pwm,
        gpio_events=g.events,
        sensors=grant.sensors,
        values=[*grant.publish, *grant.subscribe],
        wasi=grant.wasi,
        http=grant.http,
        led=True,
    )


def _dry_run(
    manifest: Manifest, source: Path, grant: Capabilities, kind: str, opts: CheckOptions, report: CheckReport
) -> None:
    from ..engine.calibration import calibration  # measured once per machine (cached), only when a dry run needs it

    budget = manifest.edged.budget if manifest.edged else {}
    period_ms = 1000.0 / opts.fps
    report.ms_budget = float(budget.get("frame_ms", period_ms))
    cal = calibration(recalibrate=opts.recalibrate)
    rate = cal.fuel_per_ms
    report.calibration = cal.describe() + ("" if "fuel" not in budget else "; the manifest's budget.fuel applies")
    report.fuel_budget = int(budget["fuel"]) if "fuel" in budget else int(rate * report.ms_budget)
    if "fuel" in budget and budget["fuel"] > rate * period_ms:
        report.warnings.append(
            f"budget.fuel {int(budget['fuel']):,} is more than this host burns in a frame period at {opts.fps:g} fps "
            f"(about {int(rate * period_ms):,})"
        )
    display = DisplayInfo(opts.width, opts.height, opts.fps)
    io, values = DryRunIO(), SharedValues()
    try:
        plugin = DevicePlugin(
            manifest,
            policy=_policy_for(grant),
            io=io,
            values=values,
            display=display,
            config=opts.config,
            fuel=report.fuel_budget * _FUEL_CEILING,
            timeout_ms=10_000,
            name=report.name,
        )
    except (PluginError, CapabilityDenied) as exc:
        report.problems.append(f"does not load on a device: {exc}")
        return
    fuels: list[int] = []
    times: list[float] = []
    done_at: int | None = None
    first: np.ndarray | None = None
    changed = lit = False
    with plugin:
        if not _initialise(plugin, rate, report):
            return
        for i in range(opts.frames):
            tick = Tick(
                i,
                round(i * period_ms * 1000),
                round(period_ms * 1000) if i else 0,
                opts.width if kind != "sensor" else 0,
                opts.height if kind != "sensor" else 0,
                i == 0,
            )
            start = time.perf_counter()
            try:
                frame = plugin.tick(tick) if kind == "sensor" else plugin.frame(tick)
            except PluginError as exc:
                report.problems.append(f"{'tick' if kind == 'sensor' else 'frame'} {i} failed: {exc}")
                break
            finally:
                times.append((time.perf_counter() - start) * 1e3)
                fuels.append(plugin.last_fuel_used or 0)
            if kind == "sensor":
                continue
            if frame is None:
                done_at = i
                break
            assert isinstance(frame, np.ndarray)
            rgb = frame[..., :3]
            lit = lit or bool(rgb.any())
            if first is None:
                first = rgb.copy()
            elif not changed and not np.array_equal(first, rgb):
                changed = True
        if not report.problems and done_at is None:
            _gpio_events(plugin, io, kind, len(times), opts, report, fuels, times)
    report.published = values.snapshot()
    if times:
        report.stats = FrameStats(
            calls=len(times),
            fuel_p50=int(statistics.median(fuels)),
            fuel_max=max(fuels),
            ms_p50=statistics.median(times),
            ms_max=max(times),
            done_at=done_at,
        )
        if max(fuels) > report.fuel_budget:
            report.problems.append(
                f"uses up to {max(fuels):,} fuel per call; the budget is {report.fuel_budget:,}"
                + ("" if "fuel" in budget else f" ({report.ms_budget:.2f} ms on this host)")
            )
        if report.stats.ms_p50 > report.ms_budget:
            report.warnings.append(
                f"median wall time {report.stats.ms_p50:.2f} ms per call is over {report.ms_budget:.2f} ms "
                "on this host (wall time is noisy; fuel decides)"
            )
    if done_at == 0:
        report.problems.append(
            "said done on its first frame without drawing: in a looping playlist it would be replayed (at most once "
            "a second) and never show anything"
        )
    if kind != "sensor" and first is not None:
        if not lit:
            report.warnings.append("every frame was black")
        elif not changed and len(times) > 1:
            report.warnings.append("the frames did not change (fine for a static picture)")
    log.info("plugin checked", extra={"plugin": report.name, "ok": report.ok, "source": str(source)})


def _initialise(plugin: DevicePlugin, rate: float, report: CheckReport) -> bool:
    """Create the instance under a device's init budget, as the daemon does, and report what it cost."""
    from ..engine.supervisor import INIT_MS

    report.init_fuel_budget = int(INIT_MS * rate)
    plugin.plugin.init_fuel = report.init_fuel_budget
    start = time.perf_counter()
    try:
        plugin.prepare()
    except PluginError as exc:
        report.problems.append(f"initialisation failed: {exc}")
        return False
    report.init_ms = (time.perf_counter() - start) * 1e3
    report.init_fuel = plugin.plugin.last_init_fuel_used
    if report.init_fuel is not None and report.fuel_budget and report.init_fuel > report.fuel_budget:
        report.warnings.append(
            f"initialisation takes {report.init_fuel:,} fuel, more than a frame's budget ({report.fuel_budget:,}): "
            "a device creates the instance off the frame path, and each play and restart waits for it"
        )
    return True


def _gpio_events(
    plugin: DevicePlugin,
    io: DryRunIO,
    kind: str,
    n: int,
    opts: CheckOptions,
    report: CheckReport,
    fuels: list[int],
    times: list[float],
) -> None:
    """Deliver a falling and a rising edge on every pin the plugin watched, then run one more frame or tick."""
    if not plugin.grant.gpio.events:
        return
    if not io.watched:
        report.warnings.append("asks for gpio.events but never called edged_gpio_watch during the dry run")
        return
    if not plugin.plugin.function_exists("on_gpio"):
        return
    t = round(n / opts.fps, 6)
    for pin in sorted(set(io.watched)):
        plugin.ctx.events.extend([GpioEvent(pin, "falling", t), GpioEvent(pin, "rising", t)])
    period_us = round(1e6 / opts.fps)
    w, h = (0, 0) if kind == "sensor" else (opts.width, opts.height)
    tick = Tick(n, n * period_us, period_us, w, h, False)
    try:
        report.events_delivered = plugin.deliver_events(limit=None)
        start = time.perf_counter()
        result = plugin.tick(tick) if kind == "sensor" else plugin.frame(tick)
        times.append((time.perf_counter() - start) * 1e3)
        fuels.append(plugin.last_fuel_used or 0)
    except PluginError as exc:
        report.problems.append(f"after GPIO edge events: {exc}")
        return
    if kind != "sensor" and result is None:
        report.warnings.append("returned done right after GPIO edge events")
