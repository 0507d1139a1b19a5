#!/usr/bin/env python3
"""Start-up benchmark: CPU seconds (user + system, of the child process alone) each light command takes.

Rows: ``python -c pass`` (the floor: the interpreter alone, the anchor), ``python -c "import edged"``,
``edged --version``, ``edged --help``, ``edged ctl --help`` and ``edged ctl stats`` against a daemon this script
starts (``edged run --emulate --no-http``, its state in a temporary folder). Each command runs as
``python -m edged …`` in a fresh interpreter; the rows run interleaved, one of each per round, and the table shows
medians over the rounds and the ratio to the floor. CPU time, not wall time: it does not count waiting for the
shared machine's other work (only the ratios compare between runs). The target (issue 11.5) is ≤ 0.25 s each.

Usage: python bench/startup.py [--rounds N] [--quick] [--source DIR]
(``--source`` measures another checkout's ``edged``, e.g. a revision before a change, with this script)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.25


def cpu_seconds(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run ``cmd`` to its end; the user + system CPU seconds of that process (``os.wait4``'s usage)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def start_daemon(state: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """``edged run --emulate --no-http`` with its control socket in ``state``, once it answers."""
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "--emulate", "--no-http", "--render", "headless"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "EDGED_STATE_DIR": str(state)},
        cwd=cwd,
    )
    ctl = [sys.executable, "-m", "edged", "ctl", "--socket", str(state / "control.sock"), "stats"]
    deadline = time.monotonic() + 120
    while subprocess.run(ctl, capture_output=True, env=env, cwd=cwd).returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            raise SystemExit("the daemon did not start")
        time.sleep(0.5)
    return daemon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    ap.add_argument("--source", type=Path, default=ROOT, help="the edged checkout to measure (default: this one)")
    args = ap.parse_args()
    rounds = 5 if args.quick else args.rounds
    source = args.source.resolve()  # the folder `python -m edged` imports from is the current one
    env = {**os.environ, "PYTHONPATH": str(source)}
    edged = [sys.executable, "-m", "edged"]
    with tempfile.TemporaryDirectory(prefix="edged-bench-startup-") as tmp:
        state = Path(tmp)
        daemon = start_daemon(state, env, source)
        try:
            rows = {
                "`python -c pass` (floor)": [sys.executable, "-c", "pass"],
                '`python -c "import edged"`': [sys.executable, "-c", "import edged"],
                "`edged --version`": [*edged, "--version"],
                "`edged --help`": [*edged, "--help"],
                "`edged ctl --help`": [*edged, "ctl", "--help"],
                "`edged ctl stats` (a running daemon)": [
                    *edged,
                    "ctl",
                    "--socket",
                    str(state / "control.sock"),
                    "stats",
                ],
            }
            samples: dict[str, list[float]] = {name: [] for name in rows}
            for r in range(rounds):
                for name, cmd in rows.items():
                    samples[name].append(cpu_seconds(cmd, env, source))
                print(f"round {r + 1}/{rounds}", file=sys.stderr)
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)
    floor = statistics.median(next(iter(samples.values())))
    print(f"CPU seconds (user + system) to start and finish, median of {rounds} interleaved rounds")
    print()
    print("| command | CPU s (median) | min | × floor | ≤ 0.25 s |")
    print("|---|---:|---:|---:|---|")
    for name, values in samples.items():
        median = statistics.median(values)
        ok = "yes" if median <= TARGET_S else "no"
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {median / floor:.1f}× | {ok} |")


if __name__ == "__main__":
    main()
