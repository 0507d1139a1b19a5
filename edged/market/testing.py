"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temp directory, listening
only on a free loopback port, stopped and deleted afterwards. Never the machine's own server.

PostgreSQL refuses to run as root: as root the cluster is created and run as the unprivileged ``nobody`` user
(``runuser``), in a directory handed to that user. Not for production.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..deploy.testing import free_port

log = logging.getLogger("edged.market.testing")

#: why a test or bench cannot start PostgreSQL
MISSING = "PostgreSQL is not installed: tests/run installs it (apt-get install postgresql), or put initdb on PATH"


def find_pg_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


class Postgres:
    """A PostgreSQL server on ``127.0.0.1:port`` with its data in a fresh temp directory (trust authentication for
    the ``edged`` superuser, loopback only). :meth:`create_database` gives each test its own database."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise FileNotFoundError(MISSING)
        self.bin = found
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "edged"
        self.dir = Path(tempfile.mkdtemp(prefix="edged-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "nobody", "--"]
            shutil.chown(self.dir, "nobody")
        self.started = False

    def _run(self, *cmd: str, timeout: float = 120) -> None:
        proc = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}{self.log_tail()}")

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        opts = (
            f"-c listen_addresses={self.host} -c port={self.port} -c unix_socket_directories='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB"
        )
        log_file = str(self.dir / "log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log_file, "-o", opts, "-w", "start")
        self.started = True

    def stop(self) -> None:
        """Stop the server (fast mode) and delete its directory."""
        if self.started:
            with contextlib.suppress(Exception):
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database; returns its URL."""
        import psycopg

        name = name or f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, n: int = 3000) -> str:
        p = self.dir / "log"
        return "\n" + p.read_text(errors="replace")[-n:] if p.exists() else ""

    def __enter__(self) -> Postgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")
