"""Issue 16.1: a real (non-editable) install ships the hardware profiles, the scenarios and the demo plugins, so
the quickstart works with no source tree. Before, `edged run --emulate` from a wheel exited 2 with
"no hardware profile 'emulated-16x16' (available: none)"."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT, clean_env

pytestmark = pytest.mark.slow


def test_wheel_carries_profiles_scenarios_and_demo_plugins(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for profile in (ROOT / "hardware").glob("*.toml"):
        assert f"edged/_bundled/hardware/{profile.name}" in names
    for scenario in (ROOT / "hardware" / "scenarios").glob("*.toml"):
        assert f"edged/_bundled/scenarios/{scenario.name}" in names
    for manifest in (ROOT / "plugins" / "gallery").glob("*/manifest.json"):
        plugin = manifest.parent.name
        assert f"edged/_bundled/plugins/{plugin}/manifest.json" in names
        assert f"edged/_bundled/plugins/{plugin}/{plugin}.wasm" in names
    assert not any(n.endswith((".c", ".ts", ".zig")) for n in names if "_bundled" in n), "sources stay in the repo"


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(EDGED_STATE_DIR=str(cwd / "state"), HOME=str(cwd))
    return subprocess.run(
        [str(bin_dir / "edged"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_installed_edged_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import edged.bundled as b; print(b.__file__); print(b.bundled_dir('plugins'))",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert str(ROOT) not in out[0] and "site-packages" in out[0]
    assert out[1].endswith("site-packages/edged/_bundled/plugins")


def test_run_emulate_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    r = _run(
        installed, tmp_path, "run", "--emulate", "--frames", "10", "--no-control", "--no-http", "--stats", str(stats)
    )
    assert r.returncode == 0, r.stderr
    assert "no hardware profile" not in r.stderr
    assert '"frames"' in stats.read_text()


def test_run_a_pi_profile_with_a_shipped_scenario_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    r = _run(
        installed,
        tmp_path,
        "run",
        "--emulate",
        "--profile",
        "pi4-sensor-kit",
        "--scenario",
        "sensor-kit-demo",
        "--frames",
        "5",
        "--no-control",
        "--no-http",
    )
    assert r.returncode == 0, r.stderr


def test_preview_a_shipped_demo_plugin_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    gif = tmp_path / "fire.gif"
    r = _run(installed, tmp_path, "preview", "fire", "--frames", "8", "--gif", str(gif))
    assert r.returncode == 0, r.stderr
    assert gif.read_bytes()[:6] == b"GIF89a"
