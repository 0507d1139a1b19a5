"""Issue 16.5: deploy/mosquitto.conf installed as deploy/README.md says, as a drop-in in /etc/mosquitto/conf.d/ of
Debian's stock mosquitto, must let the broker start (it exited: "Duplicate persistence_location").

Debian's own main config (tests/deploy/debian/mosquitto.conf, the conffile of bookworm's mosquitto 2.0.11 package,
untouched) and the drop-in run in a temp folder: only their absolute paths are moved there, the listener goes to a
free loopback port, and as root `user root` keeps mosquitto able to read the temp files."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edged.deploy.testing import find_mosquitto, free_port
from tests.support.acl import PASSWORDS, acl_text, tls_files

ROOT = Path(__file__).resolve().parents[2]
STOCK = Path(__file__).resolve().parent / "debian" / "mosquitto.conf"


def _layout(tmp: Path, port: int) -> Path:
    etc = tmp / "etc" / "mosquitto"
    (etc / "conf.d").mkdir(parents=True)
    for d in ("run", "lib", "log"):
        (tmp / d).mkdir()
    main = STOCK.read_text()
    main = main.replace("/run/mosquitto/", f"{tmp}/run/").replace("/var/lib/mosquitto/", f"{tmp}/lib/")
    main = main.replace("/var/log/mosquitto/", f"{tmp}/log/").replace("/etc/mosquitto/conf.d", f"{etc}/conf.d")
    if os.geteuid() == 0:
        main += "user root\n"
    (etc / "mosquitto.conf").write_text(main)

    edged = etc / "edged"
    tls_files(edged)  # ca.crt, broker.crt, broker.key where the drop-in expects them
    (edged / "passwd").write_text("")
    for user, password in PASSWORDS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(edged / "passwd"), user, password], check=True)
    (edged / "acl").write_text(acl_text())
    for shipped in sorted((ROOT / "deploy").glob("acl-*")):  # the marketplace listener's ACL, and any other
        (edged / shipped.name).write_text(shipped.read_text())
    dropin = (ROOT / "deploy" / "mosquitto.conf").read_text().replace("/etc/mosquitto/edged/", f"{edged}/")
    dropin, n = re.subn(r"(?m)^listener 8883$", f"listener {port} 127.0.0.1", dropin)
    dropin, m = re.subn(r"(?m)^listener 8884$", f"listener {free_port()} 127.0.0.1", dropin)
    assert n == 1 and m == 1
    (edged / "passwd-market").write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(edged / "passwd-market"), "market", PASSWORDS["market"]], check=True)
    (etc / "conf.d" / "edged.conf").write_text(dropin)
    return etc / "mosquitto.conf"


def test_drop_in_runs_on_debians_stock_mosquitto(tmp_path: Path) -> None:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("mosquitto is not installed (tests/run installs Debian's)")
    assert "include_dir /etc/mosquitto/conf.d" in STOCK.read_text()
    assert "persistence_location /var/lib/mosquitto/" in STOCK.read_text()
    port = free_port()
    main = _layout(tmp_path, port)
    proc = subprocess.Popen([str(binary), "-c", str(main)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-a")
        c.username_pw_set("dev-a", PASSWORDS["dev-a"])
        c.tls_set(ca_certs=str(tmp_path / "etc/mosquitto/edged/ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
        for _ in range(100):
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                log = (
                    (tmp_path / "log" / "mosquitto.log").read_text()
                    if (tmp_path / "log/mosquitto.log").exists()
                    else ""
                )
                pytest.fail(f"mosquitto exited with {proc.returncode}: {out}{log}")
            try:
                c.connect("127.0.0.1", port)
                break
            except OSError:
                threading.Event().wait(0.1)
        c.loop_start()
        assert connected.wait(20), "a device could not log in over TLS on the drop-in's listener"
        c.disconnect()
        c.loop_stop()
    finally:
        proc.terminate()
        proc.wait(20)
    # the stock config's persistence took effect: the database landed where the main config put it
    assert (tmp_path / "lib" / "mosquitto.db").exists()
