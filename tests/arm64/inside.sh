# Runs inside the arm64 Debian 12 root (tests/arm64/run copies the checkout's tests, deploy/ and systemd/ to
# /root/check and the wheel to /root/dist). As root, like the installer on a fresh Pi; Python 3.11 like bookworm.
set -euo pipefail
cd /root/check
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
[ -f /root/host-ca.crt ] && export PIP_CERT=/root/host-ca.crt
wheel=$(ls /root/dist/edged-*.whl)
step() { printf '\n== arm64 (inside, %s): %s\n' "$(date +%T)" "$*" >&2; }
fail() { printf 'arm64 check FAILED: %s\n' "$*" >&2; exit 1; }

step "platform: $(uname -m), $(python3 --version), $(. /etc/os-release && echo "$PRETTY_NAME")"
[ "$(uname -m)" = aarch64 ] || fail "not running aarch64 code"

step "the wheel plus [pi] in a fresh venv (rpi-ws281x and spidev build from source here, as on a Pi)"
python3 -m venv /root/venv
/root/venv/bin/python -m pip install -q --upgrade pip >/dev/null
/root/venv/bin/python -m pip install -q "$wheel[pi]" pytest hypothesis
/root/venv/bin/python -m pip list 2>/dev/null | grep -iE '^(edged|rpi.ws281x|spidev|lgpio|wasmtime) ' >&2
export PATH=/root/venv/bin:$PATH
work=$(mktemp -d)
export EDGED_STATE_DIR=$work/state

step "edged run --emulate (the embedded default from the wheel)"
edged run --emulate --frames 30 --render headless --no-control --no-http --stats "$work/stats.json"
grep -q '"frames": 30' "$work/stats.json" || fail "edged run did not draw 30 frames"

step "edged call and edged preview (shipped demo plugins)"
plugins=$(python -c 'from edged.bundled import bundled_dir; print(bundled_dir("plugins"))')
edged call "$plugins/fire/fire.wasm" frame --loop 3 >/dev/null
edged preview fire --frames 10 --png "$work/fire.png"
[ -s "$work/fire.png" ] || fail "edged preview wrote no PNG"

step "the platform and hardware-failure checks, and the tests that need no npm/zig toolchain"
# tests run against the installed wheel: /root/check has no edged/ package of its own
if [ "${1:-}" = --no-tests ]; then  # tests/arm64/run --no-tests: skip pytest (check the installer alone)
  :
elif [ $# -gt 0 ]; then  # tests/arm64/run PYTEST-ARGS...: only those (to look into one failure)
  python -m pytest -p no:cacheprovider "$@"
  exit
else
# one pytest process per folder: under qemu-user memory that wasmtime gives back is not returned to the system, so
# a single process for everything grows by gigabytes; separate processes start afresh
t() { python -m pytest -q -p no:cacheprovider "$@"; }
t tests/packaging/test_platform.py tests/hardware tests/cli/test_preview.py --ignore tests/hardware/test_display.py
t tests/engine tests/host/test_frames.py
t tests/daemon tests/cli/test_run.py --deselect tests/cli/test_run.py::test_frames_and_stats_file
t tests/runtime tests/cli/test_call.py tests/cli/test_call_flags.py --ignore tests/runtime/test_differential.py --ignore tests/runtime/test_pdk_plugins.py \
  --deselect tests/runtime/test_limits.py::test_timeout_from_argument_and_manifest_then_recovers \
  --deselect tests/runtime/test_plugin.py::test_vars_disabled_and_full
fi
# Two tests assume a fast CPU, which emulated aarch64 is not (timing assumptions, not platform differences):
# test_frames_and_stats_file: the first frame's instance is created on the background thread and its quick try counts
# one call more than frames (31 calls for 30 frames); test_timeout_from_argument_and_manifest_then_recovers: the
# plugin's initialisation alone passes the 30 ms deadline under qemu. test_vars_disabled_and_full fills the kernel's
# vars until they are full: under qemu-user the memory it frees is not given back and the process grew past 3 GiB
# (23 GiB without the cgroup cap in tests/arm64/run).

step "the installer (deploy/pi/install) as far as it runs without a booted systemd"
# the checkout layout the installer expects, with the wheel instead of building from source
mkdir -p /root/repo/deploy /root/repo/docs
cp -a /root/check/deploy/pi /root/repo/deploy/
cp -a /root/check/systemd /root/repo/
cp /root/check/docs/install-pi.md /root/repo/docs/ 2>/dev/null || true
/root/repo/deploy/pi/install --profile pi5-spi-strip-60 --wheel "$wheel"
id edged | grep -q '(gpio)' && id edged | grep -q '(spi)' || fail "the edged user is not in gpio and spi"
[ -f /etc/edged/edged.toml ] && [ -L /etc/systemd/system/multi-user.target.wants/edged.service ] || fail "not installed"
systemd-analyze verify /etc/systemd/system/edged.service
exposure=$(systemd-analyze security --offline=yes /etc/systemd/system/edged.service 2>/dev/null | sed -n 's/.*exposure level for edged.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure" >&2
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 4.5) }' || fail "exposure $exposure above 4.5"
# idempotent: a second run changes nothing and keeps the config
sum=$(sha256sum /etc/edged/edged.toml)
/root/repo/deploy/pi/install --profile pi5-spi-strip-60 --wheel "$wheel"
[ "$sum" = "$(sha256sum /etc/edged/edged.toml)" ] || fail "a second install rewrote the config"
# the service's own command line, as its user (systemd would start it so), emulated: the installed config works
runuser -u edged -- env EDGED_STATE_DIR=/var/lib/edged EDGED_CACHE_DIR=/var/cache/edged/modules \
  /opt/edged/venv/bin/edged run --config /etc/edged/edged.toml --emulate --frames 10 --render headless --no-control --no-http
# a PWM profile gets the root drop-in, and it verifies
rm /etc/edged/edged.toml
/root/repo/deploy/pi/install --profile pi4-ws2812b-16x16 --wheel "$wheel" --no-apt
[ -f /etc/systemd/system/edged.service.d/ws281x-root.conf ] || fail "no root drop-in for a PWM profile"
systemd-analyze verify /etc/systemd/system/edged.service
/root/repo/deploy/pi/install --uninstall --purge
[ ! -e /opt/edged ] && [ ! -e /etc/edged ] && ! id edged >/dev/null 2>&1 || fail "uninstall left something behind"

step "arm64 check passed"
