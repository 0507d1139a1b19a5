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

from ..daemon.client import request
from ..daemon.paths import control_socket
from ..errors import EdgedError
from .exitcodes import ExitCode

#: every action, in the order ``edged ctl --help`` lists them, with its help
ACTIONS = {
    "list": "a table of the loaded plugins",
    "stats": "frame and plugin statistics (JSON)",
    "health": "whether the daemon is ready (exit 1 with the reasons when not)",
    "problems": "what the daemon refused",
    "reload": "re-read the config, as SIGHUP does",
    "switch": "play another playlist on a display's layer, now",
    "next": "cut to the next item of a layer's playlist",
    "play": "cut to a plugin of a layer's playlist",
    "power": "switch a display's LEDs on or off (the plugins keep running)",
    "brightness": "set a display's brightness",
    "identify": "blink a border on every display",
    "displays": "each display's state",
    "sensors": "the sensor plugins' values",
    "token": "print the web page's credential",
    "decommission": "remove the device from Home Assistant",
}


def _power(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"power takes on or off, got {text!r}")
    return text == "on"


def _brightness(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"brightness takes 0-255, got {text!r}")
    return int(text)


def _where(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--socket", metavar="PATH", default=default, help="control socket (default: from --config)")
    p.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="the daemon's config, to find its socket (default: the embedded default's)",
    )


def register(sub: Any) -> None:
    p = sub.add_parser("ctl", help="control a running daemon", description=__doc__)
    _where(p, None)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    layer = "layer name (default: the display's first layer)"
    for name, text in ACTIONS.items():
        a = actions.add_parser(name, help=text, description=text)
        _where(a, argparse.SUPPRESS)  # after the action too (`edged ctl stats --socket S`), keeping one given before
        a.set_defaults(handler=run)
        if name in ("switch", "next", "play", "power", "brightness"):
            a.add_argument("display", metavar="DISPLAY", help="display name")
        if name == "switch":
            a.add_argument("playlist", metavar="PLAYLIST", help="playlist name")
        elif name == "play":
            a.add_argument("plugin", metavar="PLUGIN", help="plugin name (an item of the layer's playlist)")
        elif name == "power":
            a.add_argument("on", type=_power, metavar="on|off", help="on or off")
        elif name == "brightness":
            a.add_argument("brightness", type=_brightness, metavar="0-255", help="the brightness")
        if name in ("switch", "next", "play"):
            a.add_argument("--layer", help=layer)


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["display", "layer", "plugin", "version", "kind", "playing", "quarantined", "strikes"]
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    """The request for ``args.action`` (the wire format of docs/daemon.md)."""
    payload: dict[str, Any] = {
        "cmd": args.action,
        "display": getattr(args, "display", None),
        "playlist": getattr(args, "playlist", None),
        "layer": getattr(args, "layer", None),
    }
    for field in ("plugin", "on", "brightness"):
        if hasattr(args, field):
            payload[field] = getattr(args, field)
    return payload


def run(args: argparse.Namespace) -> int:
    try:
        path = Path(args.socket) if args.socket else control_socket(args.config)
    except EdgedError as exc:
        print(f"edged ctl: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        reply = request(path, _payload(args))
    except OSError as exc:
        print(f"edged ctl: cannot reach the daemon at {path}: {exc.strerror or exc}", file=sys.stderr)
        return ExitCode.USAGE
    if not reply.get("ok"):
        print(f"edged ctl: {reply.get('error')}", file=sys.stderr)
        return ExitCode.FAILED
    result = reply["result"]
    if args.action == "health":
        print(json.dumps(result, indent=2))
        for reason in result.get("reasons", []):
            print(f"edged ctl: not ready: {reason}", file=sys.stderr)
        return ExitCode.OK if result.get("ready") else ExitCode.FAILED
    if args.action == "list":
        print(_table(result))
    elif args.action == "token":
        print(result)
    else:
        print(json.dumps(result, indent=2))
    return ExitCode.OK
