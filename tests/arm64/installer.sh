#!/usr/bin/env bash
# The installer's checks (deploy/pi/install), as root in a Debian 12 root with no booted systemd, as in an image
# build. `basic` (run by tests/arm64/inside.sh in the arm64 root under qemu): install the wheel with [pi], verify
# the unit and its exposure, a second run, the service's command line as its user, --uninstall --purge. `all` (run
# by `tests/arm64/run --installer`, in a native root: the installer's shell logic is the same on every
# architecture and runs ten times faster there): also a failed upgrade, the root drop-in following the configured
# hardware, a profile of your own given as a relative path, a symlink planted by the service user, a damaged
# venv, a fresh install from inside a checkout, and the start path with a stand-in systemctl (a booted system:
# daemon-reload, a failed start rolled back, a reboot pending).
# Needs /root/check (tests, deploy, systemd, hardware, docs from the checkout) and /root/src (the committed files of
# the checkout, as a maker copies them to the Pi).
#
#   bash tests/arm64/installer.sh WHEEL [basic|all]
set -euo pipefail
wheel=${1:?the wheel to install}
scope=${2:-all}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
[ -f /root/host-ca.crt ] && export PIP_CERT=/root/host-ca.crt
step() { printf '\n== installer check (%s): %s\n' "$(date +%T)" "$*" >&2; }
fail() { printf 'installer check FAILED: %s\n' "$*" >&2; exit 1; }
as_service() { # the service's own command line, as its user from its working directory (as systemd starts it)
  (cd /var/lib/edged && runuser -u edged -- env EDGED_STATE_DIR=/var/lib/edged EDGED_CACHE_DIR=/var/cache/edged/modules \
    /opt/edged/venv/bin/edged run --config /etc/edged/edged.toml --emulate --frames "$1" --render headless --no-control --no-http)
}

# the checkout layout the installer expects, with the wheel instead of building from source
rm -rf /root/repo
mkdir -p /root/repo/deploy /root/repo/docs
cp -a /root/check/deploy/pi /root/repo/deploy/
cp -a /root/check/systemd /root/repo/
cp /root/check/docs/install-pi.md /root/repo/docs/ 2>/dev/null || true
inst=/root/repo/deploy/pi/install
dropin=/etc/systemd/system/edged.service.d/ws281x-root.conf

step "deploy/pi/install --profile pi5-spi-strip-60 --wheel"
$inst --profile pi5-spi-strip-60 --wheel "$wheel"
id edged | grep -q '(gpio)' && id edged | grep -q '(spi)' || fail "the edged user is not in gpio and spi"
[ -f /etc/edged/edged.toml ] && [ -L /etc/systemd/system/multi-user.target.wants/edged.service ] || fail "not installed"
[ -L /opt/edged/venv ] && [ -f /opt/edged/venv/.edged-complete ] || fail "no finished versioned venv behind /opt/edged/venv"
venv_a=$(readlink /opt/edged/venv)
/usr/local/bin/edged --version >/dev/null || fail "/usr/local/bin/edged does not run edged"
[ -f /opt/edged/demo-plugins/fire/manifest.json ] || fail "/opt/edged/demo-plugins does not lead to the demo plugins"
grep -q '^plugins_dir = \["/opt/edged/demo-plugins", ' /etc/edged/edged.toml || fail "the config does not name /opt/edged/demo-plugins"
systemd-analyze verify /etc/systemd/system/edged.service
exposure=$(systemd-analyze security --offline=yes /etc/systemd/system/edged.service 2>/dev/null | sed -n 's/.*exposure level for edged.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure" >&2
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 4.5) }' || fail "exposure $exposure above 4.5"
# idempotent: a second run changes nothing, keeps the config and reuses the venv
sum=$(sha256sum /etc/edged/edged.toml)
$inst --profile pi5-spi-strip-60 --wheel "$wheel"
[ "$sum" = "$(sha256sum /etc/edged/edged.toml)" ] || fail "a second install rewrote the config"
[ "$(readlink /opt/edged/venv)" = "$venv_a" ] || fail "a second install of the same wheel made a new venv"
as_service 10

if [ "$scope" = all ]; then
  step "a failed upgrade leaves the installed edged running"
  # a wheel pip cannot install (a dependency that does not exist): the new venv is dropped, the symlink stays
  mkdir -p /root/bad
  python3 /root/check/tests/arm64/bad_wheel.py missing-dependency /root/bad/edged-9.9.9-py3-none-any.whl
  if $inst --wheel /root/bad/edged-9.9.9-py3-none-any.whl --no-apt; then fail "an uninstallable wheel installed"; fi
  [ "$(readlink /opt/edged/venv)" = "$venv_a" ] || fail "a failed upgrade moved /opt/edged/venv"
  /opt/edged/venv/bin/edged --version >/dev/null || fail "a failed upgrade broke the installed edged"
  ! ls -d /opt/edged/venv-9.9.9* /opt/edged/.work.* 2>/dev/null || fail "a failed upgrade left its venv or work folder"

  step "the root drop-in follows the configured hardware, not the last --profile"
  rm /etc/edged/edged.toml
  $inst --profile pi4-ws2812b-16x16 --wheel "$wheel" --no-apt
  [ -f "$dropin" ] || fail "no root drop-in for a PWM profile"
  systemd-analyze verify /etc/systemd/system/edged.service
  touch /var/lib/edged/plugins/written-by-root /var/cache/edged/modules/written-by-root
  # an upgrade without --profile keeps it: the config still names PWM hardware
  $inst --wheel "$wheel" --no-apt
  [ -f "$dropin" ] || fail "a re-run without --profile removed the root drop-in the configured PWM hardware needs"
  # so does a re-run with another --profile while the config is kept
  $inst --profile pi5-spi-strip-60 --wheel "$wheel" --no-apt 2>/root/inst.err
  [ -f "$dropin" ] || fail "--profile of a kept config's other hardware removed the root drop-in"
  grep -q 'changes nothing while it exists' /root/inst.err || fail "no word that --profile was ignored for the kept config"
  # back to the edged user: what the root service wrote becomes edged's
  $inst --no-ws281x-root --wheel "$wheel" --no-apt
  [ ! -e "$dropin" ] || fail "--no-ws281x-root kept the drop-in"
  [ "$(stat -c %U /var/lib/edged/plugins/written-by-root)" = edged ] \
    && [ "$(stat -c %U /var/cache/edged/modules/written-by-root)" = edged ] \
    || fail "files the root service wrote stayed root's after switching back to the edged user"

  step "a symlink the service user plants in its state folder never makes root chown or create elsewhere"
  mkdir -p /srv/victim && chown root:root /srv/victim && chmod 0755 /srv/victim
  rm -rf /var/lib/edged/plugins /var/cache/edged/modules
  runuser -u edged -- ln -s /srv/victim /var/lib/edged/plugins
  runuser -u edged -- ln -s /srv/victim /var/cache/edged/modules
  $inst --wheel "$wheel" --no-apt || true
  [ "$(stat -c '%U:%G %a' /srv/victim)" = "root:root 755" ] || fail "the installer changed /srv/victim through a planted symlink: $(stat -c '%U:%G %a' /srv/victim)"
  rm /var/lib/edged/plugins /var/cache/edged/modules
  $inst --wheel "$wheel" --no-apt
  [ -d /var/lib/edged/plugins ] && [ "$(stat -c %U /var/lib/edged/plugins)" = edged ] || fail "no state folder for plugins"

  step "your own profile, given as a relative path"
  rm /etc/edged/edged.toml
  mkdir -p /root/mine
  sed 's/^name = .*/name = "my-strip"/' /root/check/hardware/pi5-leds0-strip-60.toml >/root/mine/my-strip.toml
  (cd /root/mine && $inst --profile ./my-strip.toml --wheel "$wheel" --no-apt)
  [ "$(stat -c '%U:%G %a' /etc/edged/hardware/my-strip.toml)" = "root:edged 640" ] || fail "the profile is not in /etc/edged/hardware, root:edged 0640"
  grep -q '^hardware = "my-strip"$' /etc/edged/edged.toml || fail "the config does not name the profile my-strip"
  [ -f /etc/udev/rules.d/60-edged-leds.rules ] || fail "no /dev/leds0 rule for a leds0 profile"
  as_service 5 || fail "the service cannot run the copied profile from its working directory"
  # an edit made where the docs say, then the same command again from the shell's history: the edit is kept aside
  echo '# edited on the Pi' >>/etc/edged/hardware/my-strip.toml
  (cd /root/mine && $inst --profile ./my-strip.toml --wheel "$wheel" --no-apt)
  grep -qs '# edited on the Pi' /etc/edged/hardware/my-strip.toml.*.bak || fail "re-running --profile FILE lost the edit made in /etc/edged/hardware"

  step "a damaged venv is rebuilt beside it, never in place (the service may run from it)"
  damaged=$(readlink /opt/edged/venv)
  rm -rf /opt/edged/venv/lib/python3*/site-packages/pydantic
  $inst --wheel "$wheel" --no-apt
  [ "$(readlink /opt/edged/venv)" != "$damaged" ] || fail "the damaged venv was rebuilt in place"
  /opt/edged/venv/bin/python -I -c 'import edged.service' || fail "a re-run did not repair a damaged venv"

  step "a config from an earlier installer (demo plugins inside the venv) is pointed at /opt/edged/demo-plugins"
  sed -i 's#"/opt/edged/demo-plugins"#"/opt/edged/venv/lib/python3.11/site-packages/edged/_bundled/plugins"#' /etc/edged/edged.toml
  $inst --wheel "$wheel" --no-apt
  grep -q '^plugins_dir = \["/opt/edged/demo-plugins", ' /etc/edged/edged.toml || fail "the old plugins path was kept"
  grep -qs 'python3.11/site-packages/edged/_bundled/plugins' /etc/edged/edged.toml.*.bak || fail "no .bak of the old config"

  step "a fresh install from inside a checkout, as the docs say (cd edged && sudo deploy/pi/install ...)"
  rm /etc/edged/edged.toml
  tree() { (cd /root/src && { find . | sort; find . -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum); }
  before=$(tree)
  (cd /root/src && deploy/pi/install --profile pi5-spi-strip-60 --no-apt)
  [ "$(tree)" = "$before" ] || fail "building from the checkout changed it: $(cd /root/src && find . -newer /root/src/pyproject.toml | head)"
  /opt/edged/venv/bin/edged --version >/dev/null || fail "the edged built from the checkout does not run"
  as_service 5 || fail "the config written from inside the checkout does not run"

  step "the start path on a booted system (a stand-in systemctl)"
  mkdir -p /run/systemd/system /root/stub
  cat >/usr/local/sbin/systemctl <<'EOF'
#!/bin/sh
# stands in for systemd: restart and is-active answer what the test put in /root/stub, show gives MainPID
echo "$*" >>/root/stub/calls
case "$1" in
  restart) exit "$(cat /root/stub/restart-rc 2>/dev/null || echo 0)" ;;
  is-active) exit "$(cat /root/stub/active-rc 2>/dev/null || echo 0)" ;;
  show) case "$*" in *MainPID*) cat /root/stub/mainpid 2>/dev/null || echo 0 ;; *) echo "stand-in status" ;; esac ;;
esac
exit 0
EOF
  chmod +x /usr/local/sbin/systemctl
  calls() { cat /root/stub/calls 2>/dev/null || true; }
  demo_ok() { [ -f /opt/edged/demo-plugins/fire/manifest.json ]; }
  : >/root/stub/calls
  $inst --wheel "$wheel" --no-apt --no-start
  calls | grep -qx daemon-reload || fail "--no-start on a booted system skipped daemon-reload"
  ! calls | grep -q '^restart' || fail "--no-start started the service"
  venv_a=$(readlink /opt/edged/venv)
  previous_a=$(readlink /opt/edged/venv.previous || true)
  # a new edged that does not start: the service goes back to the venv it had, with its links intact
  mkdir -p /root/variant/b
  python3 /root/check/tests/arm64/bad_wheel.py variant-of "$wheel" /root/variant/b/edged-0.1.0-py3-none-any.whl b
  wheel_b=/root/variant/b/edged-0.1.0-py3-none-any.whl
  : >/root/stub/calls
  echo 1 >/root/stub/restart-rc
  if $inst --wheel "$wheel_b" --no-apt; then fail "a start that failed was reported as installed"; fi
  [ "$(readlink /opt/edged/venv)" = "$venv_a" ] || fail "a failed start left the service on the new venv"
  [ "$(calls | grep -c '^restart')" -eq 2 ] || fail "no restart on the old venv after the failed start: $(calls)"
  demo_ok || fail "after a failed start /opt/edged/demo-plugins leads nowhere"
  [ "$(readlink /opt/edged/venv.previous || true)" = "$previous_a" ] || fail "a failed start changed venv.previous"
  [ -z "$previous_a" ] || [ -d "/opt/edged/$previous_a" ] || fail "venv.previous points at a deleted venv"
  # restart returns but the service is not active (it stopped right away): the same
  echo 0 >/root/stub/restart-rc
  echo 3 >/root/stub/active-rc
  if $inst --wheel "$wheel_b" --no-apt 2>/root/inst.err; then fail "a service that stopped at once was reported as running"; fi
  grep -q 'going back to' /root/inst.err && [ "$(readlink /opt/edged/venv)" = "$venv_a" ] || fail "no rollback when the service is not active"
  echo 0 >/root/stub/active-rc
  # the same upgrade when it starts; then the same command again keeps the rollback venv
  $inst --wheel "$wheel_b" --no-apt
  venv_b=$(readlink /opt/edged/venv)
  [ "$venv_b" != "$venv_a" ] && [ "$(readlink /opt/edged/venv.previous)" = "$venv_a" ] || fail "no rollback venv after an upgrade"
  $inst --wheel "$wheel_b" --no-apt
  [ "$(readlink /opt/edged/venv.previous)" = "$venv_a" ] && [ -d "/opt/edged/$venv_a" ] || fail "a re-run deleted the rollback venv"
  # --rollback: back to A, with the demo plugins link; the same wheel A again afterwards leaves nothing dangling
  : >/root/stub/calls
  $inst --rollback
  [ "$(readlink /opt/edged/venv)" = "$venv_a" ] && [ "$(readlink /opt/edged/venv.previous)" = "$venv_b" ] || fail "--rollback did not swap the venvs"
  calls | grep -q '^restart' || fail "--rollback did not restart the service"
  case "$(readlink /opt/edged/demo-plugins)" in "$venv_a"/*) ;; *) fail "--rollback left the demo plugins link on $venv_b" ;; esac
  $inst --wheel "$wheel" --no-apt
  demo_ok || fail "the demo plugins link dangles after a rollback and a re-run"
  # the venv the running service started from is never pruned, even when it is neither current nor previous
  /opt/edged/"$venv_b"/bin/python -c 'import time; time.sleep(600)' &
  echo $! >/root/stub/mainpid
  mkdir -p /root/variant/c
  python3 /root/check/tests/arm64/bad_wheel.py variant-of "$wheel" /root/variant/c/edged-0.1.0-py3-none-any.whl c
  $inst --wheel /root/variant/c/edged-0.1.0-py3-none-any.whl --no-apt
  [ -d "/opt/edged/$venv_b" ] || fail "the venv of the running service was pruned"
  kill "$(cat /root/stub/mainpid)"; rm /root/stub/mainpid
  # two installers at once: the second stops at once
  flock /opt/edged/.install.lock sleep 60 &
  holder=$!
  sleep 1
  if $inst --wheel "$wheel" --no-apt 2>/root/inst.err; then fail "a second installer ran beside the first"; fi
  grep -q 'another deploy/pi/install is running' /root/inst.err || fail "no word of the other installer"
  kill $(pgrep -P "$holder") "$holder"; wait "$holder" 2>/dev/null || true   # flock and the sleep that holds the lock
  # from the root drop-in back to the edged user without a restart (the root service still running): the tops go
  # to root so that systemd chowns the whole tree at the next start, and a second run does not undo that
  rm /etc/edged/edged.toml
  $inst --profile pi4-ws2812b-16x16 --wheel "$wheel" --no-apt --no-start
  $inst --no-ws281x-root --wheel "$wheel" --no-apt --no-start
  [ "$(stat -c %U /var/lib/edged)" = root ] || fail "the state folder's top stayed edged's while a root service may still write"
  $inst --no-ws281x-root --wheel "$wheel" --no-apt --no-start
  [ "$(stat -c %U /var/lib/edged):$(stat -c %U /var/cache/edged)" = root:root ] || fail "a second run took the tops back before systemd chowned the tree"
  chown edged:edged /var/lib/edged /var/cache/edged   # what systemd does at the next start
  # leds0 without the ws2812-pio overlay: a reboot has to come first, so nothing starts, and it says why
  rm /etc/edged/edged.toml
  : >/root/stub/calls
  $inst --profile pi5-leds0-strip-60 --wheel "$wheel" --no-apt 2>/root/inst.err
  ! calls | grep -q '^restart' || fail "started the service although the ws2812-pio overlay is missing"
  grep -q 'ws2812-pio overlay is not in /boot/firmware/config.txt yet, so reboot now' /root/inst.err || fail "no word why to reboot"
  # SPI switched on just now: a reboot is pending, so nothing starts; config.txt gets a line of its own under [all]
  rm /etc/edged/edged.toml
  mkdir -p /boot/firmware
  printf '[pi4]\ndtoverlay=vc4-kms-v3d' >/boot/firmware/config.txt   # no newline at the end, a section open
  printf 'console=tty1 root=PARTUUID=x rootwait\n' >/boot/firmware/cmdline.txt
  : >/root/stub/calls
  $inst --profile pi5-spi-strip-60 --wheel "$wheel" --no-apt 2>/root/inst.err
  ! calls | grep -q '^restart' || fail "started the service while a reboot is pending (SPI just switched on)"
  grep -q 'SPI was just switched on, so reboot now' /root/inst.err || fail "no word to reboot"
  [ "$(tail -n 3 /boot/firmware/config.txt)" = "$(printf 'dtoverlay=vc4-kms-v3d\n[all]\ndtparam=spi=on')" ] \
    || fail "config.txt was not appended on lines of their own under [all]: $(cat /boot/firmware/config.txt)"
  grep -q 'rootwait spidev.bufsiz=32768$' /boot/firmware/cmdline.txt || fail "no spidev.bufsiz on the kernel command line"
  rm -rf /boot/firmware /run/systemd/system /usr/local/sbin/systemctl /root/stub
fi

step "--uninstall --purge"
$inst --uninstall --purge
[ ! -e /opt/edged ] && [ ! -e /etc/edged ] && ! id edged >/dev/null 2>&1 || fail "uninstall left something behind"
[ ! -e /usr/local/bin/edged ] && [ ! -e /etc/udev/rules.d/60-edged-leds.rules ] || fail "uninstall left the command link or the udev rule"
step "installer checks ($scope) passed"
