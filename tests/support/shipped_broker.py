"""mosquitto running the shipped deploy/mosquitto.conf and deploy/acl, on free loopback ports.

Only what cannot work in a test is rewritten: the two listeners' ports (bound to 127.0.0.1), the paths under
/etc/mosquitto/edged/ and /var/lib/mosquitto/ (into the test's directory), syslog (into a file), and, as root, the
user mosquitto drops to. Every other line, the listeners' authentication, ACL, TLS and client-id settings
included, is the shipped file's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from edged.deploy.testing import Mosquitto, free_port
from tests.conftest import ROOT

SHIPPED_CONF = ROOT / "deploy" / "mosquitto.conf"
SHIPPED_ACL = ROOT / "deploy" / "acl"
SHIPPED_ACL_MARKET = ROOT / "deploy" / "acl-market"


class ShippedMosquitto(Mosquitto):
    """``port`` is the device listener (8883 in the file), ``market_port`` the marketplace's (8884).

    ``devices`` and ``market_users`` are ``{user: password}`` for ``passwd`` and ``passwd-market``; ``acl_extra`` is
    appended to the shipped ACL (group blocks, as provisioning adds them); ``tls`` is (CA, certificate, key);
    ``drop`` removes shipped lines that contain it (for a control experiment only)."""

    def __init__(
        self,
        workdir: Path,
        devices: dict[str, str],
        market_users: dict[str, str],
        tls: tuple[Path, Path, Path],
        *,
        acl_extra: str = "",
        drop: str | None = None,
    ) -> None:
        super().__init__(workdir)
        self.market_port = free_port()
        etc = self.workdir / "etc"
        etc.mkdir(exist_ok=True)
        tool = shutil.which("mosquitto_passwd") or str(Path(str(self.binary)).parents[1] / "bin" / "mosquitto_passwd")
        for name, users in (("passwd", devices), ("passwd-market", market_users)):
            pw = etc / name
            pw.write_text("")
            for user, password in users.items():
                subprocess.run([tool, "-b", str(pw), user, password], check=True, capture_output=True)
        (etc / "acl").write_text(SHIPPED_ACL.read_text() + "\n" + acl_extra)
        (etc / "acl-market").write_text(SHIPPED_ACL_MARKET.read_text())
        for src, name in zip(tls, ("ca.crt", "broker.crt", "broker.key"), strict=True):
            shutil.copy(src, etc / name)
        text = SHIPPED_CONF.read_text()
        if drop is not None:
            text = "\n".join(line for line in text.splitlines() if drop not in line)
        text = re.sub(r"^listener 8883$", f"listener {self.port} {self.host}", text, flags=re.M)
        text = re.sub(r"^listener 8884$", f"listener {self.market_port} {self.host}", text, flags=re.M)
        text = text.replace("/etc/mosquitto/edged/", f"{etc}/").replace("/var/lib/mosquitto/", f"{self.workdir}/")
        text = text.replace("log_dest syslog", f"log_dest file {self.workdir / 'mosquitto.log'}")
        # the file is a drop-in: Debian's main mosquitto.conf turns persistence on (tests/deploy/test_broker_dropin.py)
        text += f"\npersistence true\npersistence_location {self.workdir}/\n"
        if os.geteuid() == 0:
            text += "\nuser root\n"
        self.config.write_text(text)
