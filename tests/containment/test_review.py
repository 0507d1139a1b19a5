"""Attacks found by a hostile review after issue 10's fixes, run like the others: beside plasma in ``edged run``,
and through ``edged call`` and ``plugin check``.

A WASI ``poll_oneoff`` sleep is a host call, where wasmtime never checks the deadline: a frame or an init that
slept held the display thread for as long as it asked (a legacy plugin gets WASI, so this needed no capability). A
manifest's ``budget.frame_ms`` granted its plugin as much time as it asked.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.containment.conftest import anchor_run
from tests.containment.harness import (
    Run,
    assert_healthy_kept_rate,
    assert_refused,
    assert_stopped_in_run,
    edged,
    make_site,
    run_site,
)
from tests.containment.hostile import FRAME_BLACK, PluginFiles, module

#: a relative clock subscription on WASI's monotonic clock: userdata, tag 0, then id, timeout, precision, flags
SLEEP_NS = 10 * 10**9
POLL = '(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))'


def _sleep_body(ns: int) -> str:
    sub = struct.pack("<QB7xI4xQQH6x", 1, 0, 1, ns, 0, 0)
    data = "".join(f"\\{b:02x}" for b in sub)
    return f"""
  (data (i32.const 60000) "{data}")
  (func $sleep (drop (call $poll (i32.const 60000) (i32.const 60100) (i32.const 1) (i32.const 60200))))"""


def sleeping_frame() -> PluginFiles:
    """A bare module (the legacy grant: WASI) whose every frame sleeps ten seconds in poll_oneoff."""
    wasm = module(
        POLL, _sleep_body(SLEEP_NS) + '\n(func (export "frame") (result i32) (call $sleep) (call $black) (i32.const 0))'
    )
    return PluginFiles("sleeper", wasm, None)


def sleeping_init() -> PluginFiles:
    """A bare module whose ``_initialize`` sleeps ten seconds; its frames draw black."""
    wasm = module(POLL, _sleep_body(SLEEP_NS) + '\n(func (export "_initialize") (call $sleep))\n' + FRAME_BLACK)
    return PluginFiles("sleepy_init", wasm, None)


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


def test_call_ends_a_sleep_at_the_timeout(tmp_path: Path) -> None:
    o = edged("call", str(sleeping_frame().write(tmp_path)), "frame", "--wasi", "--timeout-ms", "50", cwd=tmp_path)
    assert_refused(o, "edged call:", "timeout", codes=(1,))


def test_check_fails_a_sleeping_initialisation(tmp_path: Path) -> None:
    o = edged("plugin", "check", str(sleeping_init().write(tmp_path)), cwd=tmp_path)
    assert o.returncode == 1 and "timeout" in o.stdout, o.describe()


@pytest.mark.slow
def test_run_keeps_plasma_beside_sleeping_frames_and_inits(tmp_path: Path, anchor: Run) -> None:
    layers = [("h1", sleeping_frame()), ("h2", sleeping_init())]
    run = run_site(make_site(tmp_path, layers))
    assert_healthy_kept_rate(anchor, run)
    for layer, plugin in layers:
        said = assert_stopped_in_run(run, layer, plugin.name)
        assert "timeout" in said, said


@pytest.mark.slow
def test_run_holds_a_plugin_to_the_display_share_whatever_its_manifest_asks(tmp_path: Path, anchor: Run) -> None:
    spin = module(
        body="""
  (func (export "frame") (result i32) (local $i i32)
    (local.set $i (i32.const 60000000))
    (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $l (local.get $i)))
    (call $black) (i32.const 0))"""
    )
    greedy = PluginFiles("greedy", spin, {"edged": {"capabilities": {"led": True}, "budget": {"frame_ms": 400}}})
    run = run_site(make_site(tmp_path, [("h1", greedy)]))
    assert_healthy_kept_rate(anchor, run)
    slot = run.plugin("h1", "greedy")
    assert slot is not None and slot["budget_ms"] < 17, slot  # the display's share of a 60 fps period, not 400
    assert_stopped_in_run(run, "h1", "greedy")
