"""Runs ``edged agent`` in a subprocess, optionally SIGKILLing itself at a store checkpoint.

``--kill-at after_chunk_rename:5`` kills the process (a real SIGKILL, no cleanup) the 5th time the store passes that
checkpoint; every other argument goes to ``edged agent``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections import Counter

from edged.cli import agent as agent_cmd
from edged.cli import build_parser


def run(argv: list[str]) -> int:
    kill_at: tuple[str, int] | None = None
    if "--kill-at" in argv:
        i = argv.index("--kill-at")
        name, _, n = argv[i + 1].partition(":")
        kill_at = (name, int(n or 1))
        del argv[i : i + 2]
    seen: Counter[str] = Counter()

    def checkpoint(point: str) -> None:
        seen[point] += 1
        if kill_at is not None and (point, seen[point]) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    args = build_parser(load=["agent"]).parse_args(["agent", *argv])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return agent_cmd.run(args, checkpoint=checkpoint)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
