"""``edged ctl``: talk to a running daemon over its control socket.

``list`` shows the loaded plugins, ``stats`` the frame and plugin statistics (JSON, with the MQTT connection's state),
``health`` whether the daemon is ready (exit 1 with the reasons when not: a display not running, MQTT not connected),
``problems`` what the daemon refused, ``reload`` re-reads the config (as SIGHUP does), ``switch DISPLAY PLAYLIST``
plays another playlist and ``next DISPLAY`` cuts to the next item. Exit code 0 on success, 1 when the daemon refuses,
2 when it cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..daemon.config import load_config
from ..daemon.control import request
from ..errors import EdgedError


def register(sub: Any) -> None:
    p = sub.add_parser("ctl", help="control a running daemon", description=__doc__)
    p.add_argument("--socket", metavar="PATH", help="control socket (default: from --config or the default)")
    p.add_argument("--config", metavar="FILE", help="the daemon's config, to find its socket")
    p.add_argument(
        "action", choices=["list", "stats", "health", "problems", "reload", "switch", "next"], help="what to do"
    )
    p.add_argument("display", nargs="?", help="display name (switch, next)")
    p.add_argument("playlist", nargs="?", help="playlist name (switch)")
    p.add_argument("--layer", help="layer name (default: the display's first layer)")
    p.set_defaults(handler=run)


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["display", "layer", "plugin", "version", "kind", "playing", "quarantined", "strikes"]
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.action in ("switch", "next") and not args.display:
        print(f"edged ctl: {args.action} needs a DISPLAY", file=sys.stderr)
        return 2
    if args.action == "switch" and not args.playlist:
        print("edged ctl: switch needs a DISPLAY and a PLAYLIST", file=sys.stderr)
        return 2
    try:
        path = Path(args.socket) if args.socket else load_config(args.config).control_socket
    except EdgedError as exc:
        print(f"edged ctl: {exc}", file=sys.stderr)
        return 2
    payload = {"cmd": args.action, "display": args.display, "playlist": args.playlist, "layer": args.layer}
    try:
        reply = request(path, payload)
    except OSError as exc:
        print(f"edged ctl: cannot reach the daemon at {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"edged ctl: {reply.get('error')}", file=sys.stderr)
        return 1
    result = reply["result"]
    if args.action == "health":
        print(json.dumps(result, indent=2))
        for reason in result.get("reasons", []):
            print(f"edged ctl: not ready: {reason}", file=sys.stderr)
        return 0 if result.get("ready") else 1
    if args.action == "list":
        print(_table(result))
    else:
        print(json.dumps(result, indent=2))
    return 0
