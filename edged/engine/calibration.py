"""Fuel calibration: how much fuel a plugin burns per millisecond on this host, so a budget in ms becomes fuel.

Two loops run out of a known amount of fuel several times each; each mix's best run counts (as ``timeit`` advises:
disturbances only ever make a run slower) and the lower of the two mixes' rates is used, so a budget in ms converted
to fuel holds for any instruction mix. The engine still keeps an epoch deadline as a backstop.

The time measured is the calling thread's CPU time (``time.thread_time``), not wall time: other threads, other
processes and a busy machine do not slow a loop down in CPU time, only in wall time, so the rate (and every budget
derived from it) means the same thing on the same machine under load. A measurement is kept in a small JSON file
in edged's cache folder (``fuel-calibration.json`` beside the module cache), keyed by the machine (architecture and
CPU model), the wasmtime and Python versions, and reused by every later process on that machine: ``edged plugin
check`` and the daemon agree, run after run. ``recalibrate=True`` (``edged plugin check --recalibrate``) measures
again and replaces the entry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import wasmtime
from pydantic import BaseModel, ConfigDict, Field

from ..errors import OutOfFuel
from ..fsutil import atomic_write
from ..runtime import Plugin, default_cache_dir

log = logging.getLogger("edged.engine")

#: Two instruction mixes: memory and arithmetic (many instructions per loop iteration), and a bare branch loop
#: (one). wasmtime meters fuel per instruction, so dense code burns more fuel per millisecond than a tight loop.
_BURN = """(module
  (memory (export "memory") 1)
  (func (export "dense") (local $i i32) (local $acc i32)
    (loop $l
      (local.set $acc (i32.add (local.get $acc) (i32.load (i32.and (local.get $i) (i32.const 0xfffc)))))
      (i32.store (i32.and (i32.mul (local.get $i) (i32.const 7)) (i32.const 0xfffc)) (local.get $acc))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
  (func (export "sparse") (loop $l (br $l))))"""

FUEL_PER_RUN = 20_000_000
#: bump when the method changes, so older cached measurements are not reused
METHOD = 2
CACHE_FILE = "fuel-calibration.json"


@dataclass(frozen=True)
class Calibration:
    """A host's fuel rate: ``fuel_per_ms`` of CPU time, where it came from and when it was measured."""

    fuel_per_ms: float
    #: "measured" (by this process) or "cached" (read from ``path``)
    source: str
    measured_at: float
    #: the machine key it is stored under
    machine: str
    #: the cache file (None when caching is off)
    path: str | None
    #: each instruction mix's rate
    rates: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.measured_at))
        where = f"cached in {self.path}" if self.source == "cached" else "measured now"
        return f"{self.fuel_per_ms:,.0f} fuel per ms of CPU time ({where}, {when})"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or "unknown cpu"


def machine_key() -> str:
    """What a measurement is valid for: architecture, CPU model, wasmtime and Python versions, and the method."""
    try:
        from importlib.metadata import version

        wasmtime_version = version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        wasmtime_version = "unknown"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"{platform.machine()}|{_cpu_model()}|wasmtime {wasmtime_version}|python {py}|method {METHOD}"


def cache_path() -> Path | None:
    """``fuel-calibration.json`` in edged's cache folder (``EDGED_CACHE_DIR=off``: no file)."""
    if os.environ.get("EDGED_CACHE_DIR") == "off":
        return None
    return default_cache_dir() / CACHE_FILE


def measure(runs: int = 7) -> dict[str, float]:
    """Each instruction mix's rate in its best of ``runs`` runs, in fuel per ms of this thread's CPU time."""
    plugin = Plugin(wasmtime.wat2wasm(_BURN), fuel=FUEL_PER_RUN)
    medians = {}
    try:
        for export in ("dense", "sparse"):
            rates = []
            for _ in range(runs):
                start = time.thread_time()
                with contextlib.suppress(OutOfFuel):  # running out is the point
                    plugin.call(export)
                cpu_ms = max((time.thread_time() - start) * 1e3, 1e-3)
                rates.append(FUEL_PER_RUN / cpu_ms)
            medians[export] = max(rates)
    finally:
        plugin.close()
    return medians


class _Entry(BaseModel):
    """One machine's measurement in the cache file, which is outside input: an entry that does not fit this is
    measured again."""

    model_config = ConfigDict(strict=True)
    fuel_per_ms: float = Field(gt=0, allow_inf_nan=False)
    measured_at: float = 0.0
    rates: dict[str, float] = Field(default_factory=dict)


def _read(path: Path, key: str) -> _Entry | None:
    try:
        doc = json.loads(path.read_text())
        return _Entry.model_validate(doc["entries"][key])
    except (OSError, ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
        return None


def _write(path: Path, key: str, entry: dict[str, object]) -> None:
    try:
        try:
            doc = json.loads(path.read_text())
            entries = doc["entries"] if isinstance(doc.get("entries"), dict) else {}
        except (OSError, ValueError, AttributeError):
            entries = {}
        entries[key] = entry
        atomic_write(path, json.dumps({"entries": entries}, indent=2))
    except OSError as exc:  # a read-only disk only costs a measurement per process
        log.warning("cannot save the fuel calibration", extra={"path": str(path), "error": str(exc)})


_lock = threading.Lock()
_current: Calibration | None = None


def calibration(recalibrate: bool = False) -> Calibration:
    """This machine's calibration: from this process, else from the cache file, else measured now (and saved)."""
    global _current
    with _lock:
        if _current is not None and not recalibrate:
            return _current
        key = machine_key()
        path = cache_path()
        entry = _read(path, key) if path is not None and not recalibrate else None
        if entry is not None:
            _current = Calibration(entry.fuel_per_ms, "cached", entry.measured_at, key, str(path), entry.rates)
        else:
            rates = measure()
            rate = min(rates.values())
            _current = Calibration(rate, "measured", time.time(), key, str(path) if path else None, rates)
            if path is not None:
                _write(path, key, {"fuel_per_ms": rate, "measured_at": _current.measured_at, "rates": rates})
        log.info(
            "fuel calibration: %.0f fuel/ms of CPU time (%s)",
            _current.fuel_per_ms,
            _current.source,
            extra={"rates": _current.rates, "path": _current.path},
        )
        return _current


def fuel_per_ms() -> float:
    """Fuel units this host burns per millisecond of CPU time (see :func:`calibration`).

    The lower of the two mixes' rates: a budget of N ms in fuel then runs out within about N ms of CPU time
    whatever the plugin executes, so the wall-clock deadline stays a backstop rather than the usual limit.
    """
    return calibration().fuel_per_ms
