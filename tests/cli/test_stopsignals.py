"""The commands that run until SIGINT or SIGTERM (``edged agent``, ``edged preview --serve``; ``edged market serve``
shares their helper) stop on either, and give the caller its own handlers back when they return: run in-process, as
tests run them through ``edged.cli.main``, they kept theirs, and the caller's Ctrl-C and SIGTERM then only set an
Event nobody waited for."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.cli import main
from edged.cli.stopsignals import stop_on_signals
from edged.deploy.testing import free_port
from edged.deploy.trust import TrustStore
from tests.engine.anims import solid

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture
def handlers() -> Iterator[dict[int, Any]]:
    """This process's SIGINT and SIGTERM handlers before the test; put back after it whatever it did."""
    before = {s: signal.getsignal(s) for s in SIGNALS}
    yield before
    for s, h in before.items():
        signal.signal(s, h)


def interrupt_when_handled(before: dict[int, Any]) -> tuple[threading.Thread, list[bool]]:
    """A thread that sends this process SIGINT once the command in the main thread has put its own handler in (or
    after a minute without one: then KeyboardInterrupt stops it). ``seen`` says whether it had."""
    seen: list[bool] = []

    def run() -> None:
        end = time.monotonic() + 60
        while signal.getsignal(signal.SIGINT) is before[signal.SIGINT] and time.monotonic() < end:
            time.sleep(0.01)
        seen.append(signal.getsignal(signal.SIGINT) is not before[signal.SIGINT])
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def run_until_interrupted(argv: list[str], before: dict[int, Any]) -> int:
    thread, seen = interrupt_when_handled(before)
    try:
        code = main(argv)
    except KeyboardInterrupt:
        code = -1  # the command had no handler of its own
    thread.join()
    assert seen == [True], f"edged {argv[0]} put no SIGINT handler of its own in"
    return code


def test_stop_on_signals_sets_the_event_and_puts_the_handlers_back(handlers: dict[int, Any]) -> None:
    for signum in SIGNALS:
        stop = threading.Event()
        with stop_on_signals(stop):
            assert all(signal.getsignal(s) is not handlers[s] for s in SIGNALS)
            os.kill(os.getpid(), signum)
            assert stop.wait(20), f"{signal.Signals(signum).name} did not set the event"
        assert {s: signal.getsignal(s) for s in SIGNALS} == handlers
    with pytest.raises(RuntimeError), stop_on_signals(threading.Event()):
        raise RuntimeError("the command failed")
    assert {s: signal.getsignal(s) for s in SIGNALS} == handlers


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            lambda tmp: ["preview", str(_plugin(tmp)), "--serve", "--port", str(free_port()), "--size", "4x2"],
            id="preview --serve",
        ),
        pytest.param(
            lambda tmp: [
                "agent",
                "--device",
                "d",
                "--broker",
                f"127.0.0.1:{free_port()}",  # nothing listens: the agent keeps trying to connect until stopped
                "--store",
                str(tmp / "store"),
                "--trust",
                str(_trust(tmp)),
            ],
            id="agent",
        ),
    ],
)
def test_an_in_process_command_gives_the_handlers_back(
    command: Callable[[Path], list[str]], tmp_path: Path, handlers: dict[int, Any]
) -> None:
    assert run_until_interrupted(command(tmp_path), handlers) == 0
    assert {s: signal.getsignal(s) for s in SIGNALS} == handlers


def _plugin(tmp: Path) -> Path:
    folder = tmp / "glow"
    folder.mkdir()
    (folder / "glow.wasm").write_bytes(solid(255, 0, 0))
    return folder


def _trust(tmp: Path) -> Path:
    TrustStore().to_file(tmp / "trust.json")
    return tmp / "trust.json"
