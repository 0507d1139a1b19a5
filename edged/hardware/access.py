"""Why a device node cannot be opened, said so a maker can fix it (missing, or no permission and which group)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

#: what creates each kind of device node on Raspberry Pi OS
_ENABLE = {
    "spidev": "enable SPI: sudo raspi-config nonint do_spi 0 (or dtparam=spi=on in /boot/firmware/config.txt), reboot",
    "gpiochip": "this is not a Raspberry Pi, or its kernel has no GPIO character devices",
    "leds": "add dtoverlay=ws2812-pio,gpio=N,num_leds=N to /boot/firmware/config.txt (Pi 5) and reboot",
}


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def device_problem(path: str | Path, *, enable: str | None = None) -> str | None:
    """``None`` when ``path`` exists and this process may read and write it; else what is wrong and the fix
    (``enable``: how to make a missing node appear, when the name does not tell)."""
    p = Path(path)
    kind = next((k for k in _ENABLE if p.name.startswith(k)), None)
    try:
        st = p.stat()
    except FileNotFoundError:
        hint = enable or (_ENABLE[kind] if kind else "is the hardware enabled?")
        return f"{p} does not exist ({hint})"
    except OSError as exc:
        return f"{p}: {exc.strerror}"
    if os.access(p, os.R_OK | os.W_OK):
        return None
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    if group != "root" and st.st_mode & stat.S_IRGRP and st.st_mode & stat.S_IWGRP:
        fix = (
            f"add the user to the {group} group: sudo usermod -aG {group} {_user()} and log in again (the edged "
            f"service's user gets it from deploy/pi/install)"
        )
    else:
        fix = "only root may open it"
    return f"no permission to open {p} as {_user()} (owner {pwd_name(st.st_uid)}:{group}): {fix}"


def pwd_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
