#!/usr/bin/env python3
"""Run benchmarks and put their tables into README.md, between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``.

Usage: python bench/readme.py NAME [NAME ...]   (NAME is a script in bench/, e.g. runtime, frame_timing)
Each benchmark's standard output from its first table line on is quoted; its progress on stderr is shown as is.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def table(output: str) -> str:
    lines = output.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first is None:
        raise SystemExit("the benchmark printed no table")
    # keep a heading line just above the table (e.g. "64x64 at 60 fps ...") if there is one
    start = first - 2 if first >= 2 and lines[first - 1] == "" and lines[first - 2].strip() else first
    quoted = lines[start:]
    if quoted and quoted[0].startswith("#"):  # a benchmark's own heading reads as a caption inside the README
        quoted[0] = quoted[0].lstrip("# ").strip()
    return "\n".join(quoted).strip()


def main(names: list[str]) -> int:
    if not names:
        print(__doc__, file=sys.stderr)
        return 2
    text = README.read_text()
    for name in names:
        script = ROOT / "bench" / f"{name}.py"
        out = subprocess.run([sys.executable, str(script)], check=True, stdout=subprocess.PIPE, text=True).stdout
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- bench:{name} --> section")
        quoted = table(out)
        text = pattern.sub(lambda m, q=quoted: m.group(1) + q + m.group(2), text)
        README.write_text(text)
        print(f"README.md: bench:{name} updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
