#!/usr/bin/env python3
"""Runtime benchmark: edged vs the official Extism Python SDK vs raw wasmtime-py, side by side in one process.

Workloads are Extism's own: an empty call, count_vowels over 4096 x 'a' (which uses config and vars), consume,
echo and reflect (a host function returning its input) at 64 KiB, 640 KiB and 6.25 MiB, and plugin creation
(cold: compiled from scratch, with the SDK's wasmtime cache turned off through EXTISM_CACHE_CONFIG; cached:
edged's AOT cache against the SDK's default wasmtime cache; and an instance from a CompiledPlugin). The same wasm
runs on both hosts: count_vowels is the bundled AssemblyScript example (official @extism/as-pdk), the rest a C
plugin built by plugins/build (tests/plugins/c/workloads.c). Rounds interleave the hosts, so machine noise hits all
of them alike; the table shows per-call medians and the ratios against the SDK (the anchor) and the raw floor.

The "fuel-metered" rows run edged as the frame engine does, with fuel metering on (the SDK runs without it). The raw
floor is a no-argument export called through wasmtime-py's public API; a second empty-call row uses a stricter floor,
the same export through wasmtime's C call entry point (how edged itself calls wasm), so "edged / raw" there is the
Extism protocol's own cost: reset, input, output and error.

A second table measures how late a ``timeout_ms`` deadline fires (the overshoot: time to the error minus the
timeout) on an infinite loop, idle and while two busy Python threads keep the interpreter's lock (GIL) taken, for
edged, for edged with its old Python ticker thread (``EDGED_EPOCH_TICKER=thread``), and for the SDK.

Usage: python bench/runtime.py [--quick] [--json FILE] [--timeouts-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import extism
import wasmtime

from edged.runtime import CompiledPlugin, ModuleCache, Plugin, host_fn
from edged.runtime._rawcall import no_arg_caller

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tests" / "plugins" / "build"
#: noop/consume/echo/reflect in freestanding C (tests/plugins/c/workloads.c), as Extism's own benchmark plugins
WORKLOADS = BUILD / "workloads.wasm"
#: the bundled AssemblyScript example (official as-pdk): config, vars and a JSON output on every call
COUNT_VOWELS = ROOT / "plugins" / "examples" / "count_vowels" / "count_vowels.wasm"
SIZES = {"64 KiB": 64 * 1024, "640 KiB": 640 * 1024, "6.25 MiB": 6400 * 1024}


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call over one batch."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(contenders: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict[str, float]:
    """Median seconds per call for each contender, with the contenders interleaved round by round."""
    for fn in contenders.values():  # warm up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(per_call(fn, calls))
    return {name: statistics.median(s) for name, s in samples.items()}


LOOP = '(module (func (export "spin") (result i32) (loop $l (br $l)) (i32.const 0)))'
TIMEOUT_MS = 100


def _hog(stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        for _ in range(10_000):
            n += 1


def _overshoots(call: Callable[[], object], samples: int) -> list[float]:
    """Seconds past TIMEOUT_MS at which each of ``samples`` calls of an infinite loop failed."""
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        try:
            call()
        except Exception:  # the timeout, as each host reports it
            pass
        else:
            raise SystemExit("the infinite loop returned")
        out.append(time.perf_counter() - start - TIMEOUT_MS / 1000)
    return out


def timeout_table(quick: bool) -> list[dict[str, object]]:
    """Deadline overshoot, idle and with two GIL-hogging threads, for edged, its old ticker and the SDK."""
    import edged.runtime._plugin as plugin_module
    from edged.runtime._engine import ENGINE, UNMETERED_ENGINE, EpochTicker

    os.environ["EDGED_EPOCH_TICKER"] = "thread"
    try:
        thread_ticker = EpochTicker([ENGINE, UNMETERED_ENGINE])
    finally:
        del os.environ["EDGED_EPOCH_TICKER"]
    native_ticker = plugin_module.TICKER
    manifest = {"wasm": [{"data": bytes(wasmtime.wat2wasm(LOOP))}], "timeout_ms": TIMEOUT_MS}
    ours = Plugin(manifest, functions=[])
    sdk = extism.Plugin(manifest, functions=[])

    def old_ticker() -> object:
        plugin_module.TICKER = thread_ticker  # type: ignore[attr-defined]
        try:
            return ours.call("spin")
        finally:
            plugin_module.TICKER = native_ticker  # type: ignore[attr-defined]

    hosts: dict[str, tuple[Callable[[], object], int]] = {
        f"edged ({native_ticker.kind} ticker)": (lambda: ours.call("spin"), 10 if quick else 40),
        "edged (old Python ticker thread)": (old_ticker, 3 if quick else 10),
        "extism SDK": (lambda: sdk.call("spin", b""), 10 if quick else 40),
    }
    rows: list[dict[str, object]] = []
    for load in ("idle", "2 busy Python threads"):
        stop = threading.Event()
        hogs = [threading.Thread(target=_hog, args=(stop,), daemon=True) for _ in range(2 if load != "idle" else 0)]
        for t in hogs:
            t.start()
        try:
            for name, (call, samples) in hosts.items():
                over = sorted(_overshoots(call, samples))
                p99 = over[min(len(over) - 1, round(0.99 * (len(over) - 1)))]
                rows.append({"load": load, "host": name, "median": statistics.median(over), "p99": p99, "n": samples})
                print(f"  timeout overshoot, {load}, {name}: done", file=sys.stderr)
        finally:
            stop.set()
            for t in hogs:
                t.join()
    return rows


def print_timeout_table(rows: list[dict[str, object]]) -> None:
    print()
    print(f"Deadline overshoot: timeout_ms={TIMEOUT_MS} on an infinite loop (time to the error minus the timeout)")
    print()
    print("| load | host | median overshoot | p99 overshoot | calls |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']} | {r['host']} | {fmt(r['median'])} | {fmt(r['p99'])} | {r['n']} |")  # type: ignore[arg-type]


def fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (for a smoke run)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--timeouts-only", action="store_true", help="only the deadline overshoot table")
    args = ap.parse_args()
    if args.timeouts_only:
        print_timeout_table(timeout_table(args.quick))
        return 0
    for f in (WORKLOADS, COUNT_VOWELS):
        if not f.exists():
            print(f"missing {f}: run plugins/build first", file=sys.stderr)
            return 2
    rounds = 5 if args.quick else 15
    workloads = WORKLOADS.read_bytes()
    vowels = COUNT_VOWELS.read_bytes()
    config = {"thing": "a config value"}

    @host_fn(name="reflect")
    def reflect(data: bytes) -> bytes:
        return data

    @extism.host_fn(name="reflect", namespace="extism:host/user")
    def sdk_reflect(data: bytes) -> bytes:
        return data

    # the workloads module imports reflect, so both hosts get it
    ours = Plugin(workloads, functions=[reflect])
    sdk = extism.Plugin(workloads, functions=[sdk_reflect])
    ours_v = Plugin(vowels, config=config)
    sdk_v = extism.Plugin(vowels, config=config, functions=[])

    # the floor: a no-argument export called through wasmtime-py's public API on a default engine
    raw_store = wasmtime.Store()
    raw_inst = wasmtime.Instance(
        raw_store, wasmtime.Module(raw_store.engine, '(module (func (export "noop") (result i32) i32.const 0))'), []
    )
    raw_noop = raw_inst.exports(raw_store)["noop"]

    rows: list[dict[str, object]] = []

    def row(workload: str, res: dict[str, float]) -> None:
        entry: dict[str, object] = {"workload": workload, **{k: v for k, v in res.items()}}
        entry["speedup_vs_sdk"] = res["extism SDK"] / res["edged"]
        if "raw wasmtime-py" in res:
            entry["edged_vs_raw"] = res["edged"] / res["raw wasmtime-py"]
        rows.append(entry)
        print(f"  {workload:<22} done", file=sys.stderr)

    row(
        "empty call",
        measure(
            {
                "edged": lambda: ours.call("noop", b""),
                "extism SDK": lambda: sdk.call("noop", b""),
                "raw wasmtime-py": lambda: raw_noop(raw_store),
            },
            2000,
            rounds,
        ),
    )
    # a stricter floor: the same bare export through wasmtime's C call entry point, as edged itself calls wasm
    raw_fast = no_arg_caller(raw_store, raw_noop, True)
    row(
        "empty call (floor: C entry point)",
        measure(
            {
                "edged": lambda: ours.call("noop", b""),
                "extism SDK": lambda: sdk.call("noop", b""),
                "raw wasmtime-py": raw_fast,
            },
            2000,
            rounds,
        ),
    )
    a4096 = b"a" * 4096
    row(
        "count_vowels(4096)",
        measure(
            {
                "edged": lambda: ours_v.call("count_vowels", a4096),
                "extism SDK": lambda: sdk_v.call("count_vowels", a4096),
            },
            500,
            rounds,
        ),
    )
    # the frame engine always meters fuel: the same two calls with a (never reached) fuel limit
    metered = Plugin(workloads, functions=[reflect], fuel=10**12)
    metered_v = Plugin(vowels, config=config, fuel=10**12)
    row(
        "empty call, fuel-metered",
        measure(
            {"edged": lambda: metered.call("noop", b""), "extism SDK": lambda: sdk.call("noop", b"")}, 2000, rounds
        ),
    )
    row(
        "count_vowels(4096), fuel-metered",
        measure(
            {
                "edged": lambda: metered_v.call("count_vowels", a4096),
                "extism SDK": lambda: sdk_v.call("count_vowels", a4096),
            },
            500,
            rounds,
        ),
    )
    for label, size in SIZES.items():
        data = b"x" * size
        calls = max(3, 300 * 64 * 1024 // size)
        for export in ("consume", "echo", "reflect"):
            row(
                f"{export} {label}",
                measure(
                    {
                        "edged": lambda e=export, d=data: ours.call(e, d),
                        "extism SDK": lambda e=export, d=data: sdk.call(e, d),
                    },
                    calls,
                    max(5, rounds // 2) if size > 1 << 20 else rounds,
                ),
            )

    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**9))

        def edged_cold() -> None:
            # a fresh cache directory each time: nothing cached, a real compile
            Plugin(workloads, functions=[reflect], cache=ModuleCache(Path(tmp) / str(next(counter)))).call("noop")

        def sdk_cold() -> None:
            # the SDK's engine loads wasmtime's on-disk cache unless EXTISM_CACHE_CONFIG is set; empty turns it off
            os.environ["EXTISM_CACHE_CONFIG"] = ""
            try:
                extism.Plugin(workloads, functions=[sdk_reflect]).call("noop", b"")
            finally:
                del os.environ["EXTISM_CACHE_CONFIG"]

        warm_cache = ModuleCache(Path(tmp) / "warm")
        CompiledPlugin(workloads, functions=[reflect], cache=warm_cache)
        compiled = CompiledPlugin(workloads, functions=[reflect], cache=warm_cache)
        sdk_compiled = extism.extism.CompiledPlugin(workloads, functions=[sdk_reflect])
        row(
            "create plugin (cold)",
            measure(
                {
                    "edged": edged_cold,
                    "extism SDK": sdk_cold,
                },
                5,
                max(5, rounds // 2),
            ),
        )
        row(
            "create plugin (cached)",
            measure(
                {
                    "edged": lambda: Plugin(workloads, functions=[reflect], cache=warm_cache).call("noop"),
                    "extism SDK": lambda: extism.Plugin(workloads, functions=[sdk_reflect]).call("noop", b""),
                },
                20,
                rounds,
            ),
        )
        row(
            "instance from compiled",
            measure(
                {
                    "edged": lambda: Plugin(compiled).call("noop"),
                    "extism SDK": lambda: extism.Plugin(sdk_compiled).call("noop", b""),
                },
                50,
                rounds,
            ),
        )

    print()
    print("| workload | edged | extism SDK | raw wasmtime-py | edged speed-up vs SDK | edged / raw |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        raw = fmt(r["raw wasmtime-py"]) if "raw wasmtime-py" in r else "–"  # type: ignore[arg-type]
        vs_raw = f"{r['edged_vs_raw']:.2f}×" if "edged_vs_raw" in r else "–"
        print(
            f"| {r['workload']} | {fmt(r['edged'])} | {fmt(r['extism SDK'])} | {raw} "  # type: ignore[arg-type]
            f"| {r['speedup_vs_sdk']:.2f}× | {vs_raw} |"
        )
    timeouts = timeout_table(args.quick)
    print_timeout_table(timeouts)
    if args.json:
        Path(args.json).write_text(json.dumps({"calls": rows, "timeouts": timeouts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
