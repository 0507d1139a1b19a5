"""A throwaway mosquitto for tests and benchmarks: a config in a temp directory, a free loopback port, restartable.

Not for production: ``deploy/mosquitto.conf`` is the shipped broker configuration.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger("edged.deploy.testing")

#: why a test or bench cannot find the broker
MISSING = "mosquitto is not installed: tests/run installs it (apt-get install mosquitto), or put it on PATH"


def find_mosquitto() -> Path | None:
    """The mosquitto binary on PATH or in /usr/sbin, or None."""
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto on ``127.0.0.1:port`` with persistence under ``workdir``.

    ``users`` (``{name: password}``) turns on a password file and ``acl`` (file text) an ACL file; without them
    anonymous clients may do anything. ``max_packet_size`` bounds every MQTT packet (mosquitto drops the
    connection of a client that sends a larger one, and does not deliver a larger one to a client). ``tls`` (CA,
    certificate, key files) makes the listener TLS-only; ``extra`` config lines go at the end (a bridge).
    ``restart()`` keeps the port and the persisted sessions.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        max_queued_messages: int = 10000,
        max_packet_size: int = 4 * 1024 * 1024,
        tls: tuple[Path, Path, Path] | None = None,
        binary: Path | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise FileNotFoundError(MISSING)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} {self.host}",
            *([f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}", "tls_version tlsv1.2"] if tls else []),
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"max_queued_messages {max_queued_messages}",
            "max_inflight_messages 0",
            f"max_packet_size {max_packet_size}",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:  # as root mosquitto would switch to user "mosquitto", who cannot read our tmp files
            lines.append("user root")
        if users is not None:
            pw = self.workdir / "passwd"
            pw.write_text("")
            tool = shutil.which("mosquitto_passwd") or str(self.binary.parent.parent / "bin" / "mosquitto_passwd")
            for name, password in users.items():
                subprocess.run([tool, "-b", str(pw), name, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (self.workdir / "acl").write_text(acl)
            lines.append(f"acl_file {self.workdir / 'acl'}")
        lines += extra or []  # e.g. a bridge (its `connection` block must come last)
        self.config = self.workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 20.0) -> None:
        """Start the broker and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            [str(self.binary), "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port, with the same persisted sessions and retained messages."""
        self.stop()
        self.start()

    def log_tail(self, n: int = 4000) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
