"""The exit codes of every ``edged`` command, defined once."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What an ``edged`` command's exit status means (README, "Command line")."""

    #: it did what was asked
    OK = 0
    #: what it ran failed (a plugin, a check, a rollout, a daemon that refused); the message is on stderr
    FAILED = 1
    #: bad usage, a bad config, something that cannot load or cannot be reached (argparse exits 2 as well)
    USAGE = 2
    #: the reader of its output went away (``edged ctl stats | head``): 128 + SIGPIPE, as a shell reports it
    BROKEN_PIPE = 141
