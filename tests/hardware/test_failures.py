"""Issue 16.3: hardware that cannot start gives one clear message naming the fix, exit 2, no traceback and no
segfault at exit (rpi_ws281x's PixelStrip registers an exit handler that crashed the interpreter with rc 139 after
a failed ``begin()``).

Each case runs `edged run` in a subprocess with the REAL rpi_ws281x, spidev and lgpio modules (the [pi] extra builds
on x86 too). The process believes it is on a Pi 4: ``/proc/device-tree/model`` is read through edged's
``read_pi_model`` (patched, as there is no device tree here), and for the not-root cases ``/proc/cpuinfo`` carries a
Pi 4 revision in a private mount namespace, so the libraries get as far as on a Pi and fail the same way: the
mailbox (/dev/mem) needs root, /dev/spidev0.0 and /dev/gpiochip0 are owned by a group the user is not in. Those
device nodes are plain files on a tmpfs over /dev, inside the namespace only, and the run drops to ``nobody``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# find_spec, not importorskip: importing rpi_ws281x in the test process would defeat the tests that check it is
# never imported
if importlib.util.find_spec("rpi_ws281x") is None:
    pytest.skip("the [pi] extra is not installed (tests/run installs it)", allow_module_level=True)

PI4_MODEL = "Raspberry Pi 4 Model B Rev 1.4"
PI4_CPUINFO = (
    "processor\t: 0\nHardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000abcdef01\nModel\t\t: " + PI4_MODEL
)

WRAPPER = """
import sys
for blocked in sys.argv[2].split(",") if sys.argv[2] else []:
    sys.modules[blocked] = None  # as if the [pi] extra were not installed
import edged.hardware.backends.ws281x as ws
ws.read_pi_model = lambda path=None: sys.argv[1]
from edged.cli import main
sys.exit(main(sys.argv[3:]))
"""

NAMESPACE = r"""
set -e
mount --bind "$FAKE_CPUINFO" /proc/cpuinfo
d=$(mktemp -d)
mount -t tmpfs -o mode=755 tmpfs "$d"
for n in null zero full random urandom; do cp -a /dev/$n "$d/"; done
ln -s /proc/self/fd "$d/fd"
for f in $FAKE_DEVICES; do touch "$d/$f"; chown root:"$FAKE_GROUP" "$d/$f"; chmod 660 "$d/$f"; done
mount --move "$d" /dev
exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
"""

INFO_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO edged\.")


def _private_namespace_works() -> bool:
    """Can this process make a private mount namespace? (Not in a chroot, whose / is no mount point.)"""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


needs_root = pytest.mark.skipif(
    not _private_namespace_works(),
    reason="a private mount namespace and a switch to nobody need root outside a chroot (in a chroot / is no mount "
    "point, so the namespace's mounts could not be made private); tests/run runs these on the host as root",
)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder ``nobody`` may write (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="edged-hw-"))
    d.chmod(0o777)
    (d / "cpuinfo").write_text(PI4_CPUINFO + "\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def edged_run(
    state: Path, profile: str, *, block: str = "", as_nobody: bool = False, devices: str = ""
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", WRAPPER, PI4_MODEL, block, "run", "--profile", profile, "--frames", "3"]
    cmd += ["--no-control", "--no-http"]
    env = {**os.environ, "EDGED_STATE_DIR": str(state / "state"), "EDGED_CACHE_DIR": str(state / "cache")}
    env["HOME"] = str(state)
    if as_nobody:
        env |= {"FAKE_CPUINFO": str(state / "cpuinfo"), "FAKE_DEVICES": devices, "FAKE_GROUP": "dialout"}
        cmd = ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE, "ns", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=state)


def assert_clean_failure(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode != 139 and r.returncode != -11, f"segfault at exit: {r.stderr}"
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    # the daemon's own INFO log records (calibration, "edged stopped") may surround it: nothing else
    lines = [line for line in r.stderr.strip().splitlines() if not INFO_RECORD.match(line)]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_missing_pi_extra_names_the_install_command(shared_dir: Path) -> None:
    # a Pi 4 profile without the [pi] extra: it was ModuleNotFoundError: rpi_ws281x with a traceback (exit 1)
    r = edged_run(shared_dir, "pi4-ws2812b-16x16", block="rpi_ws281x")
    assert_clean_failure(r, "pip install 'edged[pi]'", "gcc python3-dev")


def test_missing_spidev_names_the_install_command(shared_dir: Path) -> None:
    r = edged_run(shared_dir, "pi5-spi-strip-60", block="spidev")
    assert_clean_failure(r, "spidev", "pip install 'edged[pi]'")


def test_failed_begin_on_an_unsupported_board_exits_2_without_a_segfault(shared_dir: Path) -> None:
    # the real rpi_ws281x finds no Pi revision it knows here, as on a board it does not support: begin() raised a
    # RuntimeError edged did not catch, then the strip's exit handler segfaulted (rc 139)
    r = edged_run(shared_dir, "pi4-ws2812b-16x16")
    line = assert_clean_failure(r, "Hardware revision is not supported", "spi backend")
    assert "GPIO 18" in line


@needs_root
@pytest.mark.skipif(
    platform.machine() == "aarch64" and not Path("/proc/device-tree").exists(),
    reason="rpi_ws281x built for aarch64 reads the board revision from /proc/device-tree, which a mount namespace "
    "cannot add to /proc (x86 builds read /proc/cpuinfo, faked here; tests/run runs this on x86)",
)
def test_not_root_for_pwm_names_the_root_drop_in_or_spi(shared_dir: Path) -> None:
    # a Pi 4 revision in /proc/cpuinfo: rpi_ws281x gets to the VideoCore mailbox and /dev/mem, which need root
    r = edged_run(shared_dir, "pi4-ws2812b-16x16", as_nobody=True)
    assert_clean_failure(r, "Failed to create mailbox device", "needs root", "--ws281x-root", "GPIO 10")


@needs_root
def test_no_permission_on_spidev_names_the_group(shared_dir: Path) -> None:
    r = edged_run(shared_dir, "pi5-spi-strip-60", as_nobody=True, devices="spidev0.0")
    assert_clean_failure(r, "no permission to open /dev/spidev0.0 as nobody", "sudo usermod -aG dialout nobody")


@needs_root
def test_missing_spidev_node_says_how_to_enable_spi(shared_dir: Path) -> None:
    r = edged_run(shared_dir, "pi5-spi-strip-60", as_nobody=True, devices="")
    assert_clean_failure(r, "/dev/spidev0.0 does not exist", "raspi-config nonint do_spi 0")


@needs_root
def test_no_permission_on_gpiochip_names_the_group(shared_dir: Path) -> None:
    if importlib.util.find_spec("lgpio") is None:
        pytest.skip("lgpio (the [pi] extra) is not installed")
    r = edged_run(shared_dir, "pi4-sensor-kit", as_nobody=True, devices="gpiochip0")
    assert_clean_failure(r, "no permission to open /dev/gpiochip0 as nobody", "sudo usermod -aG dialout nobody")
