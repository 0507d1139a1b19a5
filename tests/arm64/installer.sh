#!/usr/bin/env bash
# The installer's checks, run by tests/arm64/inside.sh in the arm64 root (as root, no booted systemd, as in an image
# build): deploy/pi/install with the wheel, again (idempotent), a failed upgrade, the root drop-in following the
# configured hardware, a profile of your own given as a relative path, a build from a checkout, --uninstall --purge.
# Needs /root/check (tests, deploy, systemd, hardware, docs from the checkout) and /root/src (the committed files of
# the checkout, as a maker copies them to the Pi).
#
#   bash tests/arm64/installer.sh WHEEL
set -euo pipefail
wheel=${1:?the wheel to install}
step() { printf '\n== arm64 (installer, %s): %s\n' "$(date +%T)" "$*" >&2; }
fail() { printf 'arm64 check FAILED: %s\n' "$*" >&2; exit 1; }

step "deploy/pi/install --profile pi5-spi-strip-60 --wheel"
# the checkout layout the installer expects, with the wheel instead of building from source
mkdir -p /root/repo/deploy /root/repo/docs
cp -a /root/check/deploy/pi /root/repo/deploy/
cp -a /root/check/systemd /root/repo/
cp /root/check/docs/install-pi.md /root/repo/docs/ 2>/dev/null || true
inst=/root/repo/deploy/pi/install
dropin=/etc/systemd/system/edged.service.d/ws281x-root.conf
$inst --profile pi5-spi-strip-60 --wheel "$wheel"
id edged | grep -q '(gpio)' && id edged | grep -q '(spi)' || fail "the edged user is not in gpio and spi"
[ -f /etc/edged/edged.toml ] && [ -L /etc/systemd/system/multi-user.target.wants/edged.service ] || fail "not installed"
[ -L /opt/edged/venv ] && [ -f /opt/edged/venv/.edged-complete ] || fail "no finished versioned venv behind /opt/edged/venv"
edged_venv=$(readlink /opt/edged/venv)
/usr/local/bin/edged --version >/dev/null || fail "/usr/local/bin/edged does not run edged"
systemd-analyze verify /etc/systemd/system/edged.service
exposure=$(systemd-analyze security --offline=yes /etc/systemd/system/edged.service 2>/dev/null | sed -n 's/.*exposure level for edged.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure" >&2
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 4.5) }' || fail "exposure $exposure above 4.5"
# idempotent: a second run changes nothing, keeps the config and reuses the venv
sum=$(sha256sum /etc/edged/edged.toml)
$inst --profile pi5-spi-strip-60 --wheel "$wheel"
[ "$sum" = "$(sha256sum /etc/edged/edged.toml)" ] || fail "a second install rewrote the config"
[ "$(readlink /opt/edged/venv)" = "$edged_venv" ] || fail "a second install of the same wheel made a new venv"
# the service's own command line, as its user from its working directory (systemd would start it so), emulated:
# the installed config works
(cd /var/lib/edged && runuser -u edged -- env EDGED_STATE_DIR=/var/lib/edged EDGED_CACHE_DIR=/var/cache/edged/modules \
  /opt/edged/venv/bin/edged run --config /etc/edged/edged.toml --emulate --frames 10 --render headless --no-control --no-http)

step "installer: a failed upgrade leaves the installed edged running"
# a wheel pip cannot install (a dependency that does not exist): the new venv is dropped, the symlink stays
mkdir -p /root/bad
python3 /root/check/tests/arm64/bad_wheel.py /root/bad/edged-9.9.9-py3-none-any.whl
if $inst --wheel /root/bad/edged-9.9.9-py3-none-any.whl --no-apt; then fail "an uninstallable wheel installed"; fi
[ "$(readlink /opt/edged/venv)" = "$edged_venv" ] || fail "a failed upgrade moved /opt/edged/venv"
/opt/edged/venv/bin/edged --version >/dev/null || fail "a failed upgrade broke the installed edged"
! ls -d /opt/edged/venv-9.9.9* /opt/edged/.work.* 2>/dev/null || fail "a failed upgrade left its venv or work folder"

step "installer: the root drop-in follows the configured hardware, not the last --profile"
rm /etc/edged/edged.toml
$inst --profile pi4-ws2812b-16x16 --wheel "$wheel" --no-apt
[ -f "$dropin" ] || fail "no root drop-in for a PWM profile"
systemd-analyze verify /etc/systemd/system/edged.service
touch /var/lib/edged/plugins/written-by-root /var/cache/edged/modules/written-by-root
# an upgrade without --profile keeps it: the config still names PWM hardware
$inst --wheel "$wheel" --no-apt
[ -f "$dropin" ] || fail "a re-run without --profile removed the root drop-in the configured PWM hardware needs"
# so does a re-run with another --profile while the config is kept
$inst --profile pi5-spi-strip-60 --wheel "$wheel" --no-apt 2>"/root/inst.err"
[ -f "$dropin" ] || fail "--profile of a kept config's other hardware removed the root drop-in"
grep -q 'changes nothing while it exists' /root/inst.err || fail "no word that --profile was ignored for the kept config"
# back to the edged user: what the root service wrote becomes edged's
$inst --no-ws281x-root --wheel "$wheel" --no-apt
[ ! -e "$dropin" ] || fail "--no-ws281x-root kept the drop-in"
[ "$(stat -c %U /var/lib/edged/plugins/written-by-root)" = edged ] && [ "$(stat -c %U /var/cache/edged/modules/written-by-root)" = edged ] \
  || fail "files the root service wrote stayed root's after switching back to the edged user"

step "installer: your own profile, given as a relative path"
rm /etc/edged/edged.toml
mkdir -p /root/mine
sed 's/^name = .*/name = "my-strip"/' /root/check/hardware/pi5-leds0-strip-60.toml >/root/mine/my-strip.toml
(cd /root/mine && $inst --profile ./my-strip.toml --wheel "$wheel" --no-apt)
[ "$(stat -c '%U:%G %a' /etc/edged/hardware/my-strip.toml)" = "root:edged 640" ] || fail "the profile is not in /etc/edged/hardware, root:edged 0640"
grep -q '^hardware = "my-strip"$' /etc/edged/edged.toml || fail "the config does not name the profile my-strip"
[ -f /etc/udev/rules.d/60-edged-leds.rules ] || fail "no /dev/leds0 rule for a leds0 profile"
(cd /var/lib/edged && runuser -u edged -- env EDGED_STATE_DIR=/var/lib/edged EDGED_CACHE_DIR=/var/cache/edged/modules \
  /opt/edged/venv/bin/edged run --config /etc/edged/edged.toml --emulate --frames 5 --render headless --no-control --no-http) \
  || fail "the service cannot run the copied profile from its working directory"

step "installer: from a checkout (builds the wheel from a copy; the checkout stays as it was)"
before=$(cd /root/src && find . | sort | sha256sum)
/root/src/deploy/pi/install --no-apt
[ "$(cd /root/src && find . | sort | sha256sum)" = "$before" ] || fail "building from the checkout left files in it: $(cd /root/src && find . -maxdepth 1 -newer /root/src/pyproject.toml)"
/opt/edged/venv/bin/edged --version >/dev/null || fail "the edged built from the checkout does not run"

$inst --uninstall --purge
[ ! -e /opt/edged ] && [ ! -e /etc/edged ] && ! id edged >/dev/null 2>&1 || fail "uninstall left something behind"
[ ! -e /usr/local/bin/edged ] && [ ! -e /etc/udev/rules.d/60-edged-leds.rules ] || fail "uninstall left the command link or the udev rule"
