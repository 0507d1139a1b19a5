"""Issue 16.5: deploy/mosquitto.conf installed as deploy/README.md says, as a drop-in in /etc/mosquitto/conf.d/ of
Debian's stock mosquitto, must let the broker start (it exited: "Duplicate persistence_location").

Debian's own main config (tests/deploy/debian/mosquitto.conf, the conffile of bookworm's mosquitto 2.0.11 package,
untouched) and the drop-in run in a temp folder: only their absolute paths are moved there and the listeners go to
free loopback ports. The broker starts as root and switches to the `mosquitto` user as on Debian (mosquitto 2.x does
so right after reading its config, BEFORE it reads the password files, the ACLs and the TLS key), so the files are
made with the owners and modes deploy/README.md gives them; with the ones it gave before (password files root:root
0600) the broker cannot read them and stops. Needs root, as tests/run has in CI."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edged.deploy.testing import find_mosquitto, free_port
from tests.support.acl import PASSWORDS, acl_text, tls_files

ROOT = Path(__file__).resolve().parents[2]
STOCK = Path(__file__).resolve().parent / "debian" / "mosquitto.conf"
README = ROOT / "deploy" / "README.md"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="mosquitto switches to the mosquitto user only when started as root, and only root can give the files "
    "their documented owners; tests/run runs as root in CI",
)

# (owner, group, mode) of each file in /etc/mosquitto/edged/, as deploy/README.md installs them
DOCUMENTED = {
    "ca.crt": ("root", "root", 0o644),
    "broker.crt": ("root", "root", 0o644),
    "broker.key": ("root", "mosquitto", 0o640),
    "passwd": ("root", "mosquitto", 0o640),
    "passwd-market": ("root", "mosquitto", 0o640),
    "acl": ("root", "mosquitto", 0o640),
    "acl-market": ("root", "mosquitto", 0o640),
}
# what the README said before: `install -m 600 /dev/null passwd` and `mosquitto_passwd -c` as root (root:root; 0600
# with the umask mosquitto_passwd >= 2.0.19 sets), the key handed to mosquitto, the ACLs copied with cp
BEFORE = DOCUMENTED | {
    "broker.key": ("mosquitto", "mosquitto", 0o600),
    "passwd": ("root", "root", 0o600),
    "passwd-market": ("root", "root", 0o600),
    "acl": ("root", "root", 0o644),
    "acl-market": ("root", "root", 0o644),
}


@pytest.fixture
def mosquitto_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.fail("there is no `mosquitto` user: Debian's mosquitto package creates it (tests/run installs it)")


@pytest.fixture
def tmp(mosquitto_user: pwd.struct_passwd) -> Iterator[Path]:
    """A folder the mosquitto user may enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="edged-broker-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _own(path: Path, owner: str, group: str, mode: int) -> None:
    shutil.chown(path, owner, group)
    path.chmod(mode)


def _layout(tmp: Path, port: int, perms: dict[str, tuple[str, str, int]]) -> Path:
    etc = tmp / "etc" / "mosquitto"
    (etc / "conf.d").mkdir(parents=True)
    # as Debian's package makes them: /var/lib/mosquitto (postinst), /run/mosquitto and /var/log/mosquitto (unit)
    for d, mode in (("run", 0o740), ("lib", 0o755), ("log", 0o740)):
        (tmp / d).mkdir()
        _own(tmp / d, "mosquitto", "root", mode)
    main = STOCK.read_text()
    main = main.replace("/run/mosquitto/", f"{tmp}/run/").replace("/var/lib/mosquitto/", f"{tmp}/lib/")
    main = main.replace("/var/log/mosquitto/", f"{tmp}/log/").replace("/etc/mosquitto/conf.d", f"{etc}/conf.d")
    (etc / "mosquitto.conf").write_text(main)

    edged = etc / "edged"
    tls_files(edged)  # ca.crt, broker.crt, broker.key where the drop-in expects them
    (edged / "acl").write_text(acl_text())
    for shipped in sorted((ROOT / "deploy").glob("acl-*")):  # the marketplace listener's ACL, and any other
        (edged / shipped.name).write_text(shipped.read_text())
    (edged / "passwd").write_text("")
    (edged / "passwd-market").write_text("")
    assert sorted(p.name for p in edged.iterdir()) == sorted(perms)
    for name, (owner, group, mode) in perms.items():
        _own(edged / name, owner, group, mode)
    # users go in after the files have their owners, as the README adds them: mosquitto_passwd keeps both
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(edged / "passwd"), user, password], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(edged / "passwd-market"), "market", PASSWORDS["market"]], check=True)
    for name, want in perms.items():
        st = (edged / name).stat()
        got = (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o7777)
        assert got == want, name

    dropin = (ROOT / "deploy" / "mosquitto.conf").read_text().replace("/etc/mosquitto/edged/", f"{edged}/")
    dropin, n = re.subn(r"(?m)^listener 8883$", f"listener {port} 127.0.0.1", dropin)
    dropin, m = re.subn(r"(?m)^listener 8884$", f"listener {free_port()} 127.0.0.1", dropin)
    assert n == 1 and m == 1
    (etc / "conf.d" / "edged.conf").write_text(dropin)
    return etc / "mosquitto.conf"


def _start(tmp: Path, perms: dict[str, tuple[str, str, int]]) -> tuple[subprocess.Popen[bytes], int]:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("mosquitto is not installed (tests/run installs Debian's)")
    assert "include_dir /etc/mosquitto/conf.d" in STOCK.read_text()
    assert "persistence_location /var/lib/mosquitto/" in STOCK.read_text()
    assert "user " not in STOCK.read_text()  # the default user: mosquitto
    port = free_port()
    main = _layout(tmp, port, perms)
    proc = subprocess.Popen([str(binary), "-c", str(main)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, port


def _output(tmp: Path, proc: subprocess.Popen[bytes]) -> str:
    out = proc.stdout.read().decode() if proc.stdout else ""
    log = tmp / "log" / "mosquitto.log"
    return out + (log.read_text() if log.exists() else "")


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def test_the_readme_gives_the_files_the_owners_this_test_does() -> None:
    table = {}
    for files, owner, group, mode in re.findall(
        r"(?m)^\| (`.+`) \| (\w+):(\w+) \| (0[0-7]{3}) \|$", README.read_text()
    ):
        for name in re.findall(r"`([^`]+)`", files):
            table[name] = (owner, group, int(mode, 8))
    assert table == DOCUMENTED


def test_drop_in_runs_on_debians_stock_mosquitto(tmp: Path, mosquitto_user: pwd.struct_passwd) -> None:
    proc, port = _start(tmp, DOCUMENTED)
    try:
        connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-a")
        c.username_pw_set("dev-a", PASSWORDS["dev-a"])
        c.tls_set(ca_certs=str(tmp / "etc/mosquitto/edged/ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        for _ in range(100):
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}: {_output(tmp, proc)}")
            try:
                c.connect("127.0.0.1", port)
                break
            except OSError:
                threading.Event().wait(0.1)
        c.loop_start()
        assert connected.wait(20), "a device could not log in over TLS on the drop-in's listener"
        c.disconnect()
        c.loop_stop()
        assert _uid(proc.pid) == mosquitto_user.pw_uid, "the broker did not switch to the mosquitto user"
    finally:
        proc.terminate()
        proc.wait(20)
    # the stock config's persistence took effect: the database landed where the main config put it
    assert (tmp / "lib" / "mosquitto.db").exists()


def test_password_files_only_root_may_read_stop_the_broker(tmp: Path) -> None:
    """The complaint: with the password files as the README made them before (root:root 0600) the broker, already
    running as mosquitto when it reads them, cannot open them and exits."""
    proc, _ = _start(tmp, BEFORE)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(20)
        pytest.fail("mosquitto started with password files only root may read")
    assert rc != 0
    assert f'Unable to open pwfile "{tmp}/etc/mosquitto/edged/passwd' in _output(tmp, proc)
