"""``edged completion bash|zsh|tcsh``: print a shell completion script for every command and option of ``edged``.

Generated from the command line's own parser (with shtab), so it never drifts from ``edged --help``. Install it
once: ``edged completion bash > ~/.local/share/bash-completion/completions/edged`` (bash), or
``edged completion zsh > ~/.zfunc/_edged`` with ``fpath+=~/.zfunc`` before ``compinit`` in ~/.zshrc (zsh).
"""

from __future__ import annotations

import argparse
from typing import Any

from .exitcodes import ExitCode

SHELLS = ("bash", "zsh", "tcsh")


def register(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh)", description=__doc__)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import shtab

    from . import build_parser

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return ExitCode.OK
