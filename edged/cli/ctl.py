"""``edged ctl``: talk to a running daemon over its control socket.

``list`` shows the loaded plugins, ``stats`` the frame and plugin statistics (JSON, with the MQTT connection's state),
``health`` whether the daemon is ready (exit 1 with the reasons when not: a display not running, MQTT not connected),
``problems`` what the daemon refused, ``reload`` re-reads the config (as SIGHUP does), ``switch DISPLAY PLAYLIST``
plays another playlist, ``next DISPLAY`` cuts to the next item, ``play DISPLAY PLUGIN`` cuts to a plugin of the
playlist, ``power DISPLAY on|off`` switches the LEDs, ``brightness DISPLAY 0-255`` dims them, ``identify`` blinks
every display's border, ``displays`` and ``sensors`` show the displays' state and the sensor plugins' values,
``token`` prints the web credential, ``decommission`` removes the device from Home Assistant (docs/web.md). Exit code
0 on success, 1 when the daemon refuses, 2 when it cannot be reached.
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

ACTIONS = [
    "list",
    "stats",
    "health",
    "problems",
    "reload",
    "switch",
    "next",
    "identify",
    "displays",
    "sensors",
    "token",
    "decommission",
]
#: actions whose second argument is a value, and the request field it goes into
_VALUE = {"play": "plugin", "power": "on", "brightness": "brightness"}


def _value(action: str, text: str) -> Any:
    if action == "power":
        if text not in ("on", "off"):
            raise ValueError("power takes on or off")
        return text == "on"
    if action == "brightness":
        if not text.isdigit() or not 0 <= int(text) <= 255:
            raise ValueError(f"brightness takes 0-255, got {text!r}")
        return int(text)
    return text


def register(sub: Any) -> None:
    p = sub.add_parser("ctl", help="control a running daemon", description=__doc__)
    p.add_argument("--socket", metavar="PATH", help="control socket (default: from --config or the default)")
    p.add_argument("--config", metavar="FILE", help="the daemon's config, to find its socket")
    p.add_argument("action", choices=[*ACTIONS, *_VALUE], help="what to do")
    p.add_argument("display", nargs="?", help="display name (switch, next, play, power, brightness)")
    p.add_argument("playlist", nargs="?", help="playlist (switch), plugin (play), on|off (power), 0-255 (brightness)")
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
    if args.action in ("switch", "next", *_VALUE) and not args.display:
        print(f"edged ctl: {args.action} needs a DISPLAY", file=sys.stderr)
        return 2
    extra: dict[str, Any] = {}
    if args.action in _VALUE:
        try:
            if args.playlist is None:
                raise ValueError(f"{args.action} needs a DISPLAY and a {_VALUE[args.action].upper()}")
            extra[_VALUE[args.action]] = _value(args.action, args.playlist)
        except ValueError as exc:
            print(f"edged ctl: {exc}", file=sys.stderr)
            return 2
        args.playlist = None
    if args.action == "switch" and not args.playlist:
        print("edged ctl: switch needs a DISPLAY and a PLAYLIST", file=sys.stderr)
        return 2
    try:
        path = Path(args.socket) if args.socket else load_config(args.config).control_socket
    except EdgedError as exc:
        print(f"edged ctl: {exc}", file=sys.stderr)
        return 2
    payload = {"cmd": args.action, "display": args.display, "playlist": args.playlist, "layer": args.layer, **extra}
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
    elif args.action == "token":
        print(result)
    else:
        print(json.dumps(result, indent=2))
    return 0
