#!/usr/bin/env python3
"""Pixel pipeline benchmark: µs per frame for a 16×16 matrix, a 64×64 matrix and a 300-LED strip.

Each size runs the full pipeline (brightness, gamma 2.8, GRB order, serpentine index map, and the current limiter,
set to act so the slower path is measured). Interleaved with it in the same rounds runs an anchor: a bare
``frame.copy().tobytes()`` of the same frame, the least any pipeline must do to hand bytes to a backend. The table
shows medians over the rounds and the ratio to the anchor; on this machine's noise only the ratio is comparable
between runs. The target is 64×64 well under 1 ms.

Usage: python bench/pixel_pipeline.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from edged.hardware.geometry import DisplayConfig
from edged.hardware.pipeline import PixelPipeline

CASES = {
    "16×16 matrix": DisplayConfig(
        width=16, height=16, wiring="serpentine", brightness=200, gamma=2.8, max_ma=1000, color_order="GRB"
    ),
    "64×64 matrix": DisplayConfig(
        width=64, height=64, wiring="serpentine", brightness=200, gamma=2.8, max_ma=20_000, color_order="GRB"
    ),
    "300-LED strip": DisplayConfig(width=300, height=1, brightness=200, gamma=2.8, max_ma=1000, color_order="GRB"),
}


def per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="5 rounds of fewer calls")
    args = ap.parse_args()
    rounds, calls = (5, 50) if args.quick else (args.rounds, 200)
    rng = np.random.default_rng(1)
    print("| display | LEDs | pipeline µs/frame (median) | anchor µs (copy+tobytes) | ratio | limiter scale |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, cfg in CASES.items():
        pipe = PixelPipeline(cfg)
        frame = rng.integers(0, 256, (cfg.height, cfg.width, 3), dtype=np.uint8)
        pipe.process(frame)  # warm up (and check it runs)
        ours, anchor = [], []
        for _ in range(rounds):
            ours.append(per_call(lambda pipe=pipe, frame=frame: pipe.process(frame), calls))
            anchor.append(per_call(lambda frame=frame: frame.copy().tobytes(), calls))
        ours_us, anchor_us = statistics.median(ours) * 1e6, statistics.median(anchor) * 1e6
        print(
            f"| {name} | {cfg.led_count} | {ours_us:.1f} | {anchor_us:.2f} | {ours_us / anchor_us:.0f}× "
            f"| {pipe.last_scale:.2f} |"
        )
    print()
    print("target: 64×64 well under 1000 µs per frame")


if __name__ == "__main__":
    main()
