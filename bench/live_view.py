#!/usr/bin/env python3
"""The web page's cost on the frame loop: ``bench/frame_timing.py --live-view`` (three live-view streams and a
/metrics scrape a second against the anchor, in alternating rounds), as one script for ``bench/readme.py``.

Usage: python bench/live_view.py [--seconds S] [--rounds N]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import frame_timing

if __name__ == "__main__":
    sys.exit(frame_timing.main(["--live-view", "--seconds", "5", *sys.argv[1:]]))
