"""The ``edged`` command line: a thin consumer of the library. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from .. import __version__
from ..platformcheck import unsupported_reason

#: Exit codes shared by every subcommand.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    # the subcommands import wasmtime: only after the platform check (see main)
    from . import call as call_cmd
    from . import completion as completion_cmd
    from . import ctl as ctl_cmd
    from . import market as market_cmd
    from . import plugin as plugin_cmd
    from . import preview as preview_cmd
    from . import run as run_cmd

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
    completion_cmd.register(sub)
    _plain_help(parser)
    return parser


_LITERAL = re.compile(r"``([^`]+)``")


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Help shows `x` where a docstring (reST) says ``x``: descriptions come from the modules' docstrings."""
    if parser.description:
        parser.description = _LITERAL.sub(r"`\1`", parser.description)
    for action in parser._actions:
        if action.help and action.help is not argparse.SUPPRESS:
            action.help = _LITERAL.sub(r"`\1`", action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.help:
                    choice.help = _LITERAL.sub(r"`\1`", choice.help)
            for child in set(action.choices.values()):
                _plain_help(child)


def _setup_logging(level: str) -> None:
    from ..daemon.logs import TextFormatter  # edged.daemon imports wasmtime: after the platform check

    lvl = 5 if level == "trace" else getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter())
    logging.basicConfig(level=lvl, handlers=[handler])


#: the exit code of a command whose reader went away (``edged ctl stats | head``): 128 + SIGPIPE, as a shell says
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edged`` console script; returns the exit code."""
    if reason := unsupported_reason():
        print(f"edged: {reason}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    args.log_level_explicit = args.log_level is not None
    _setup_logging(args.log_level or "warning")
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, while the handler still can be told apart from exit
    except BrokenPipeError:
        # the reader stopped reading: nothing to say, and nothing more to write (Python would complain at exit)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # not a real file (a test's capture): nothing to silence
            pass
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
