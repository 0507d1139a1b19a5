"""The ``edged`` command line: a thin consumer of the library. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from . import call as call_cmd
from . import ctl as ctl_cmd
from . import market as market_cmd
from . import plugin as plugin_cmd
from . import preview as preview_cmd
from . import run as run_cmd

#: Exit codes shared by every subcommand.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="IoT edge daemon for WebAssembly device plugins")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["trace", "debug", "info", "warning", "error"],
        help="log level for edged and plugin logs (default: warning; `edged run` takes it from its config)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    call_cmd.register(sub)
    plugin_cmd.register(sub)
    preview_cmd.register(sub)
    run_cmd.register(sub)
    ctl_cmd.register(sub)
    market_cmd.register(sub)
    return parser


def _setup_logging(level: str) -> None:
    lvl = 5 if level == "trace" else getattr(logging, level.upper())
    logging.basicConfig(level=lvl, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edged`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.log_level_explicit = args.log_level is not None
    _setup_logging(args.log_level or "warning")
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
