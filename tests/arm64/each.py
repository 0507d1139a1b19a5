"""Run pytest once per test file, each in a fresh process, and report each file's peak memory and wall time.

Used by tests/arm64/inside.sh: under qemu-user a process never gets back the memory its wasmtime stores free, so
one pytest process for many files grows with every file; one process per file starts afresh each time.

    python tests/arm64/each.py [PYTEST-OPTION]... -- FILE...

Every option before ``--`` goes to every run (``--deselect`` and ``--ignore`` included). Exit status 1 when any
file fails, after running them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    options, files = argv[:split], argv[split + 1 :]
    rows: list[tuple[str, int, float, float]] = []
    for path in files:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, path])
        _, status, usage = os.wait4(proc.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        rows.append((path, rc, usage.ru_maxrss / 1024, time.monotonic() - start))
        print(f"-- {path}: exit {rc}, peak RSS {usage.ru_maxrss / 1024:.0f} MiB, {rows[-1][3]:.0f} s", file=sys.stderr)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'test file':<{width}}  exit  peak RSS (MiB)  wall (s)", file=sys.stderr)
    for path, rc, peak, wall in rows:
        print(f"{path:<{width}}  {rc:>4}  {peak:>14.0f}  {wall:>8.0f}", file=sys.stderr)
    failed = [r[0] for r in rows if r[1] != 0]
    print(
        f"{len(rows)} files, largest peak {max(r[2] for r in rows):.0f} MiB, {sum(r[3] for r in rows):.0f} s in all"
        + (f"; FAILED: {' '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
