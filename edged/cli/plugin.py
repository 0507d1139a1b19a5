"""``edged plugin new|check``: scaffold a plugin from a template, and check one before it ships.

``new NAME --lang as|c|zig [--dir DIR]`` writes DIR/NAME/ (default: ./NAME/; source and manifest) from the
templates shipped in edged/tooling/templates/, and says how to build it (plugins/build of an edged checkout).
``check PLUGIN [--manifest M] [--frames N] [--fps F] [--size WxH] [--config K=V]`` validates the manifest, the
imports against the capabilities it asks for, the exports, and dry-runs N frames in emulation, reporting fuel and
ms per frame against the budget at F fps. Exit codes: 0 pass, 1 fail, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..tooling import LANGUAGES, CheckOptions, ScaffoldError, build_hint, check_plugin, new_plugin, source_build_script
from .exitcodes import ExitCode


def register(sub: Any) -> None:
    p = sub.add_parser("plugin", help="scaffold and check plugins", description=__doc__)
    cmds = p.add_subparsers(dest="plugin_command", metavar="SUBCOMMAND", required=True)

    new = cmds.add_parser("new", help="scaffold a plugin from a template")
    new.add_argument("name", help="plugin name: lowercase letters, digits and '_'")
    new.add_argument("--lang", required=True, choices=sorted(LANGUAGES), help="AssemblyScript, C or Zig")
    new.add_argument(
        "--dir", default=Path("."), type=Path, help="parent folder: writes DIR/NAME/ (default: the current folder)"
    )
    new.add_argument("--templates", type=Path, help="templates folder (default: the templates shipped with edged)")
    new.set_defaults(handler=run_new)

    check = cmds.add_parser("check", help="validate a plugin and dry-run it in emulation")
    check.add_argument("plugin", type=Path, help="a .wasm, a manifest .json or a plugin folder")
    check.add_argument("--manifest", "-m", type=Path, help="the manifest (default: manifest.json beside the plugin)")
    check.add_argument("--frames", type=int, default=60, help="frames (or ticks) to dry-run (default 60)")
    check.add_argument("--fps", type=float, default=60.0, help="frame rate the budget is for (default 60)")
    check.add_argument("--size", default="16x16", help="display size WxH (default 16x16)")
    check.add_argument("--config", "-c", action="append", default=[], metavar="K=V", help="config key (repeatable)")
    check.add_argument(
        "--recalibrate", action="store_true", help="measure this machine's fuel rate again (default: the cached one)"
    )
    check.set_defaults(handler=run_check)


def run_new(args: argparse.Namespace) -> int:
    try:
        folder = new_plugin(args.name, args.lang, args.dir, templates=args.templates)
    except (ScaffoldError, OSError) as exc:
        print(f"edged plugin new: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    for path in sorted(folder.iterdir()):
        print(path)
    print(build_hint(folder, source_build_script()), file=sys.stderr)
    return ExitCode.OK


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"--size expects WxH such as 16x16, got {text!r}")
    return int(w), int(h)


def run_check(args: argparse.Namespace) -> int:
    try:
        width, height = _size(args.size)
        config = {}
        for item in args.config:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--config expects K=V, got {item!r}")
            config[key] = value
        options = CheckOptions(
            frames=args.frames, fps=args.fps, width=width, height=height, config=config, recalibrate=args.recalibrate
        )
        report = check_plugin(args.plugin, manifest=args.manifest, options=options)
    except (ValueError, ValidationError, FileNotFoundError) as exc:
        print(f"edged plugin check: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print("\n".join(report.lines()))
    return ExitCode.OK if report.ok else ExitCode.FAILED
