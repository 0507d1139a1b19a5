"""Issue 16.4 (the unit): systemd/edged.service runs as the unprivileged user edged, Type=notify with a watchdog,
lgpio's FIFOs in the state directory, and is hardened to an exposure of at most 4.5 in `systemd-analyze security`
(the old unit rated 8.9 EXPOSED); the rpi_ws281x root case is a separate drop-in. systemd-analyze runs offline on
the unit file, as it would on the Pi."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edged.service"
DROPIN = ROOT / "systemd" / "edged-ws281x-root.conf"


def settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def exposure(folder: Path) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (tests/run installs Debian's systemd package)")
    r = subprocess.run(
        [analyze, "security", "--offline=yes", str(folder / "edged.service")], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for edged\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def test_user_unit_exposure_is_at_most_4_5(tmp_path: Path) -> None:
    shutil.copy(UNIT, tmp_path / "edged.service")
    score = exposure(tmp_path)
    assert score <= 4.5
    # the number the unit and docs/install-pi.md print is the one systemd-analyze gives
    assert f"rates this unit {score} OK" in UNIT.read_text()
    assert f"rates **{score} OK**" in (ROOT / "docs" / "install-pi.md").read_text()


def test_root_drop_in_stays_below_4_5_too(tmp_path: Path) -> None:
    shutil.copy(UNIT, tmp_path / "edged.service")
    (tmp_path / "edged.service.d").mkdir()
    shutil.copy(DROPIN, tmp_path / "edged.service.d" / "ws281x-root.conf")
    score = exposure(tmp_path)
    assert score <= 4.5
    assert f"{score} with the root drop-in" in (ROOT / "docs" / "install-pi.md").read_text()


def test_unit_runs_as_edged_with_notify_watchdog_and_lgpio_in_the_state_dir() -> None:
    s = settings(UNIT)
    assert s["User"] == ["edged"] and s["SupplementaryGroups"] == ["gpio spi"]
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"] and float(s["WatchdogSec"][0]) > 0
    assert s["WorkingDirectory"] == ["/var/lib/edged"]
    assert any("LG_WD=/var/lib/edged" in e for e in s["Environment"])
    assert s["StateDirectory"] == ["edged"] and s["CacheDirectory"] == ["edged"]
    assert "MemoryDenyWriteExecute" not in s, "wasmtime's JIT needs writable-then-executable memory"
    assert "MemoryDenyWriteExecute= is deliberately NOT set" in UNIT.read_text()
    d = settings(DROPIN)
    assert d["User"] == ["root"] and "/dev/mem rw" in d["DeviceAllow"]


def test_an_unattended_device_never_stops_retrying() -> None:
    """Review finding 8: StartLimitBurst=5 in 120 s with RestartSec=2 gave up after ten seconds of a boot race
    (spidev appearing late) and left the device dead until someone logged in."""
    s = settings(UNIT)
    assert s["Restart"] == ["on-failure"]
    restart_s = float(s["RestartSec"][0])
    interval = s.get("StartLimitIntervalSec", ["10"])[0]
    burst = int(s.get("StartLimitBurst", ["5"])[0])
    # either no start limit at all, or restarts spaced so widely that the burst never fits in the interval
    assert interval == "0" or restart_s * burst > float(interval)
    assert restart_s >= 10, "a crash loop every 2 s floods the journal and the SD card"


def test_state_and_cache_are_the_services_alone() -> None:
    """Review finding 5: StateDirectoryMode/CacheDirectoryMode say what the installer creates (0750), so systemd
    does not open them up to 0755 at the next start."""
    s = settings(UNIT)
    assert s["StateDirectoryMode"] == ["0750"] and s["CacheDirectoryMode"] == ["0750"]
    install = (ROOT / "deploy" / "pi" / "install").read_text()
    assert 'for d in "$state" "$cache"; do' in install
    assert '[ -d "$d" ] || install -d -m 0750 -o "$user" -g "$user" "$d"' in install
    assert 'mkdir -p -m 0750 "$d"' in install  # the folders inside them


def test_the_leds0_rule_gives_the_device_to_a_group_the_service_is_in() -> None:
    """Review finding 9: the ws2812-pio driver's /dev/leds0 is root's alone; the rule the installer ships matches the
    driver's device class (ws2812-pio-rp1) and hands it to a group of the unit's SupplementaryGroups."""
    lines = (ROOT / "systemd" / "60-edged-leds.rules").read_text().splitlines()
    rule = next(line for line in lines if line.startswith("KERNEL"))
    fields = dict(re.findall(r'(\w+)=?="?([^",]*)"?', rule))
    assert fields["KERNEL"] == "leds[0-9]*" and fields["SUBSYSTEM"] == "ws2812-pio-rp1"
    assert fields["GROUP"] in settings(UNIT)["SupplementaryGroups"][0].split()
    assert fields["MODE"] == "0660"
    assert "/dev/leds0 rw" in settings(UNIT)["DeviceAllow"]
