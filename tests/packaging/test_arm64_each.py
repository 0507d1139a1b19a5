"""tests/arm64/each.py, the arm64 check's test runner: one pytest process per file, each file's peak memory and
time reported, every file run even after a failure, and the failures named in the exit status and the summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_one_process_per_file_with_its_peak_memory_and_the_failures_named(tmp_path: Path) -> None:
    (tmp_path / "test_big.py").write_text(
        "def test_holds_memory():\n    block = bytearray(300 << 20)\n    block[::4096] = b'x' * len(block[::4096])\n"
    )
    (tmp_path / "test_fails.py").write_text("def test_no():\n    assert 1 == 2\n")
    (tmp_path / "test_small.py").write_text("import os\n\ndef test_own_process():\n    print(os.getpid())\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "arm64" / "each.py"), "--rootdir", str(tmp_path), "--"]
        + [str(tmp_path / f"test_{name}.py") for name in ("big", "fails", "small")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    rows = {
        line.split()[0]: line.split()[1:]
        for line in result.stderr.splitlines()
        if line.startswith(str(tmp_path)) and len(line.split()) == 4
    }
    exits = {Path(path).name: int(cols[0]) for path, cols in rows.items()}
    peaks = {Path(path).name: int(cols[1]) for path, cols in rows.items()}
    assert exits == {"test_big.py": 0, "test_fails.py": 1, "test_small.py": 0}  # the last ran after the failure
    # each file's own peak: the 300 MiB file's, not carried over to the small one after it
    assert peaks["test_big.py"] >= 300 and peaks["test_small.py"] < peaks["test_big.py"] - 200
    assert result.stderr.rstrip().endswith(f"FAILED: {tmp_path / 'test_fails.py'}")


def test_usage_without_the_separator() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "arm64" / "each.py"), "x.py"], capture_output=True)
    assert result.returncode == 2
