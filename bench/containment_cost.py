#!/usr/bin/env python3
"""What the sandbox fixes cost on the frame path: this tree against a revision before them, side by side in one run.

The anchor is the source tree at ``--base`` (default: the last commit before issue 10's containment fixes),
exported into a temporary folder; the test plugins built for this tree are shared, so both run the same wasm.
Rounds alternate the two trees, each in a fresh process, so machine noise hits both alike:

  frame path   the gallery's plasma on a 64x64 display through the whole frame path (Supervised → DevicePlugin →
               Plugin → kernel → frame decoding) with a fake clock, 3,000 frames: median µs per frame
  runtime      bench/runtime.py --quick of each tree: edged's per-call medians for every workload

Prints one table: each row's median over the rounds for the base and for this tree, and after / before.

Usage: python bench/containment_cost.py [--base REV] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the last commit before the containment fixes of issue 10
DEFAULT_BASE = "46cc8c7"

FRAME_PATH = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from edged.engine.clock import FakeClock
from edged.engine.supervisor import Budget, Supervised
from edged.host.frames import Tick
from edged.host.functions import DisplayInfo
from edged.host.plugin import DevicePlugin

gallery = sys.argv[1] + "/plugins/gallery/plasma/manifest.json"
dp = DevicePlugin(gallery, display=DisplayInfo(64, 64, fps=60))
slot = Supervised(dp, Budget(ms=8, fuel=500_000_000, deadline_ms=200), FakeClock())
for n in range(200):  # warm up
    slot.frame(Tick(n, n * 16_667, 16_667, 64, 64, n == 0))
per_frame = []
for block in range(30):
    start = time.perf_counter()
    for n in range(100):
        slot.frame(Tick(n, n * 16_667, 16_667, 64, 64, False))
    per_frame.append((time.perf_counter() - start) / 100)
assert slot.stats.strikes == 0, slot.stats
print(json.dumps({"frame path: plasma 64x64": statistics.median(per_frame)}))
"""


def export(rev: str, dest: Path) -> None:
    """The tree at ``rev``, without its .git, in ``dest``; the test plugins built for this tree are shared."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    built = ROOT / "tests" / "plugins" / "build"
    if built.is_dir():
        (dest / "tests" / "plugins" / "build").symlink_to(built)


def measure(tree: Path, tmp: Path) -> dict[str, float]:
    """One round for one tree, each part in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", FRAME_PATH, str(tree)], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    report = tmp / "runtime.json"
    subprocess.run(
        [sys.executable, str(tree / "bench" / "runtime.py"), "--quick", "--json", str(report)],
        check=True,
        capture_output=True,
    )
    doc = json.loads(report.read_text())
    for row in doc["calls"] if isinstance(doc, dict) else doc:  # later versions add the deadline table beside
        result[f"runtime: {row['workload']}"] = row["edged"]
    return result


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} µs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=DEFAULT_BASE, help=f"the revision to compare with (default {DEFAULT_BASE})")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per tree, alternating (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    samples: dict[str, dict[str, list[float]]] = {"base": {}, "this tree": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        export(args.base, base)
        for r in range(args.rounds):
            for label, tree in (("base", base), ("this tree", ROOT)):
                print(f"  round {r + 1}/{args.rounds}: {label} ...", file=sys.stderr)
                for key, value in measure(tree, Path(tmp)).items():
                    samples[label].setdefault(key, []).append(value)
    rows: list[dict[str, Any]] = []
    for key, before in samples["base"].items():
        after = samples["this tree"].get(key)
        if not after:
            continue
        b, a = statistics.median(before), statistics.median(after)
        rows.append({"workload": key, "base": b, "this tree": a, "ratio": a / b})
    print()
    print(f"Containment fixes on the frame path: this tree against {args.base}, medians of {args.rounds} rounds each")
    print()
    print("| workload | before (base) | after (this tree) | after / before |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['workload']} | {fmt(row['base'])} | {fmt(row['this tree'])} | {row['ratio']:.2f}× |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
