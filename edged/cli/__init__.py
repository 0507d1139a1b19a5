"""The ``edged`` command line: a thin consumer of the library. Each subcommand lives in its own module.

Only the subcommand a command line names is imported (``edged --version``, ``--help`` and ``edged ctl`` load no
wasmtime, pydantic or daemon): :data:`COMMANDS` names each one's module and help, which ``edged --help`` lists.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .. import __version__
from ..platformcheck import unsupported_reason
from .exitcodes import ExitCode


class Command(NamedTuple):
    """A subcommand: the module (in this package) whose ``register(sub)`` adds its parser, and its one-line help."""

    module: str
    help: str


#: every subcommand, in the order ``edged --help`` lists them, with the help its module's ``register`` gives it
COMMANDS: dict[str, Command] = {
    "call": Command("call", "call a function of a plugin"),
    "plugin": Command("plugin", "scaffold and check plugins"),
    "preview": Command("preview", "render a plugin in emulation (GIF, PNG or terminal)"),
    "run": Command("run", "run the daemon"),
    "ctl": Command("ctl", "control a running daemon"),
    "market": Command("market", "publish and deploy plugins over MQTT"),
    "agent": Command("agent", "run the deploy agent alone, over an emulated display"),
    "completion": Command("completion", "print a shell completion script (bash, zsh, tcsh)"),
}


def build_parser(load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``load`` only those subcommands in full (the others by name and help)."""
    wanted = set(COMMANDS) if load is None else set(load)
    parser = argparse.ArgumentParser(prog="edged", description="IoT edge daemon for WebAssembly device plugins")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["trace", "debug", "info", "warning", "error"],
        help="log level for edged and plugin logs (default: warning; `edged run` takes it from its config)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        if name in wanted:
            importlib.import_module(f"{__name__}.{command.module}").register(sub)
        else:  # a placeholder: enough for `edged --help` and to tell which subcommand a command line names
            sub.add_parser(name, help=command.help, add_help=False)
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
    from ..daemon.logs import TextFormatter

    lvl = 5 if level == "trace" else getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter())
    logging.basicConfig(level=lvl, handlers=[handler])


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """Parse in two steps: with placeholders (``--version``, ``--help`` and an unknown command end here), then with
    the named subcommand's module imported. Subcommands may import wasmtime: only after the platform check."""
    named, _ = build_parser(load=()).parse_known_args(argv)
    return build_parser(load=[named.command]).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edged`` console script; returns the exit code."""
    if reason := unsupported_reason():
        print(f"edged: {reason}", file=sys.stderr)
        return ExitCode.USAGE
    args = _parse(sys.argv[1:] if argv is None else argv)
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
        return ExitCode.BROKEN_PIPE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
