"""Issue 15 point 8: a budget must mean the same thing on the same machine under load. The fuel rate is measured
on CPU time (so other threads and processes do not change it), kept per machine and reused, and shown.

These are correctness tests of the method, never speed tests: they compare measurements with each other (a ratio),
never with a clock, so a slow machine cannot fail them."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.engine import calibration as cal
from tests.conftest import ROOT

FIRE = ROOT / "plugins" / "gallery" / "fire"


@pytest.fixture
def load() -> Iterator[callable]:
    """``with load():`` keeps every core busy: two spinning processes and a spinning thread in this process."""
    import contextlib

    @contextlib.contextmanager
    def busy() -> Iterator[None]:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        stop = threading.Event()

        def spin() -> None:
            n = 0
            while not stop.is_set():
                n += 1

        t = threading.Thread(target=spin, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            for p in procs:
                p.kill()
                p.wait()

    yield busy


def test_the_rate_measured_under_cpu_load_agrees_with_an_idle_one(load) -> None:
    idle: list[float] = []
    loaded: list[float] = []
    for _ in range(3):  # interleaved, so that whatever else the machine does falls on both sides
        idle.append(min(cal.measure().values()))
        with load():
            loaded.append(min(cal.measure().values()))
    a, b = statistics.median(idle), statistics.median(loaded)
    assert max(a, b) / min(a, b) < 1.5, (idle, loaded)


def test_a_machines_calibration_is_kept_and_reused_by_the_next_process(tmp_path: Path) -> None:
    env = {**os.environ, "EDGED_CACHE_DIR": str(tmp_path / "cache")}
    code = "from edged.engine.calibration import calibration as c; x = c(); print(x.source, repr(x.fuel_per_ms))"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    source1, rate1 = first.stdout.split()
    source2, rate2 = second.stdout.split()
    assert (source1, source2) == ("measured", "cached") and rate1 == rate2
    assert (tmp_path / "cache" / cal.CACHE_FILE).is_file()


def test_a_cache_for_another_machine_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGED_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cal, "_current", None)
    cal._write(tmp_path / cal.CACHE_FILE, "riscv64|some other cpu", {"fuel_per_ms": 1.0, "measured_at": 0.0})
    got = cal.calibration()
    assert got.source == "measured" and got.fuel_per_ms > 1.0
    monkeypatch.setattr(cal, "_current", None)
    assert cal.calibration().source == "cached"  # its own entry, beside the other machine's


def test_plugin_check_budgets_are_the_same_run_after_run(tmp_path: Path) -> None:
    """The complaint: the unedited template's budget ranged 2.45 M-16.3 M over four identical runs."""
    env = {**os.environ, "EDGED_CACHE_DIR": str(tmp_path / "cache")}
    bare = tmp_path / "fire"  # no manifest, so no budget.fuel: the budget is the frame period in fuel
    bare.mkdir()
    (bare / "fire.wasm").write_bytes((FIRE / "fire.wasm").read_bytes())
    budgets = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-m", "edged", "plugin", "check", str(bare)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
        budgets.append(re.search(r"\(budget ([\d,]+)\)", out.stdout).group(1))  # type: ignore[union-attr]
        assert re.search(r"^fuel:     [\d,]+ fuel per ms of CPU time \((measured now|cached in .+)", out.stdout, re.M)
    assert len(set(budgets)) == 1, budgets


def test_the_daemon_shows_its_calibration_in_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edged.daemon import Daemon, load_config
    from edged.daemon.hardware import DeviceHardware
    from tests.daemon.test_daemon import CONFIG, write_plugin
    from tests.engine.anims import solid

    for name in ("red", "blue"):
        write_plugin(tmp_path, name, solid(1, 2, 3))
    (tmp_path / "edged.toml").write_text(CONFIG.format(side="blue", calibrate="true"))
    d = Daemon(load_config(tmp_path / "edged.toml"), DeviceHardware("emulated-16x16", emulate=True), frames=2)
    d.start()
    d.wait()
    d.stop()
    stats = d.stats()
    shown = stats["calibration"]
    assert shown["fuel_per_ms"] == stats["fuel_per_ms"] and shown["source"] in ("measured", "cached")
    assert shown["machine"] == cal.machine_key()
    budget = stats["plugins"]["main/bg/red"]["budget_fuel"]
    assert budget == int(stats["plugins"]["main/bg/red"]["budget_ms"] * stats["fuel_per_ms"])


@pytest.mark.parametrize(
    "entry",
    [
        {"fuel_per_ms": 1000.0, "measured_at": "yesterday"},  # crashed calibration() with a ValueError
        {"fuel_per_ms": 1000.0, "measured_at": None},  # a TypeError
        {"fuel_per_ms": 0.0, "measured_at": 0.0},  # every budget became 0 fuel
        {"fuel_per_ms": -5.0, "measured_at": 0.0},
        {"fuel_per_ms": 1000.0, "measured_at": 0.0, "rates": {"dense": "fast"}},
    ],
)
def test_a_corrupt_cache_entry_is_measured_again(
    entry: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache file is outside input: a bad entry for this machine is not used, and a fresh measurement replaces
    it (found by mypy: the cached values went to ``float()`` unchecked)."""
    monkeypatch.setenv("EDGED_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cal, "_current", None)
    cal._write(tmp_path / cal.CACHE_FILE, cal.machine_key(), entry)
    got = cal.calibration()
    assert got.source == "measured" and got.fuel_per_ms > 1.0
    monkeypatch.setattr(cal, "_current", None)
    again = cal.calibration()
    assert again.source == "cached" and again.fuel_per_ms == got.fuel_per_ms
