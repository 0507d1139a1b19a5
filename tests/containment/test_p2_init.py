"""Issue 10.2: initialisation (a ``(start)`` function, ``_initialize``) runs under the same limits as a call.

A looping init hung ``edged call`` (even with --fuel and --timeout-ms), preview, check and the daemon's frame thread;
an init that spins and a frame that says "done" made a one-item looping playlist re-instantiate it every frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.containment.conftest import Anchors, anchor_run
from tests.containment.harness import (
    DEFAULT_PLUGIN_MEMORY,
    FRAMES,
    Run,
    assert_check_fails,
    assert_healthy_kept_rate,
    assert_refused,
    assert_rss_within,
    assert_stopped_in_run,
    edged,
    make_site,
    run_site,
)
from tests.containment.hostile import INIT_MARK, PluginFiles, init_loop, init_spin_done, start_loop

LOOPS = {"init_loop": init_loop, "start_loop": start_loop}
LIMITS = {
    "fuel+timeout": ("--fuel", "1000000", "--timeout-ms", "200"),
    "fuel": ("--fuel", "1000000"),
    "timeout": ("--timeout-ms", "200"),
}
#: a plugin that is re-instantiated every frame would log its init about FRAMES times; a struck one a few times
MAX_INITS = FRAMES // 10


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


@pytest.mark.parametrize("limits", list(LIMITS))
@pytest.mark.parametrize("case", list(LOOPS))
def test_call_stops_a_looping_init_at_its_limits(tmp_path: Path, case: str, limits: str, anchors: Anchors) -> None:
    o = edged("call", str(LOOPS[case]().write(tmp_path)), "frame", *LIMITS[limits], cwd=tmp_path)
    assert_refused(o, "edged call:", "fuel", "timeout", codes=(1,))
    assert_rss_within(o, anchors.rss("call"), DEFAULT_PLUGIN_MEMORY, f"call {case}")


@pytest.mark.parametrize("case", list(LOOPS))
def test_preview_stops_a_looping_init(tmp_path: Path, case: str) -> None:
    """No flags: preview's own defaults must bound an init too."""
    o = edged("preview", str(LOOPS[case]().write(tmp_path)), "--png", "out.png", cwd=tmp_path)
    assert_refused(o, "edged preview:", "fuel", "timeout")


@pytest.mark.parametrize("case", list(LOOPS))
def test_check_fails_a_looping_init(tmp_path: Path, case: str) -> None:
    o = edged("plugin", "check", str(LOOPS[case]().write(tmp_path)), cwd=tmp_path)
    assert_check_fails(o, "fuel", "timeout")


def test_check_fails_an_init_that_spins_past_the_budget(tmp_path: Path) -> None:
    """An init far over a frame's budget whose frame says "done" right away passed the check."""
    o = edged("plugin", "check", str(init_spin_done().write(tmp_path)), cwd=tmp_path)
    assert_check_fails(o)


@pytest.mark.slow
def test_run_keeps_plasma_beside_looping_inits(tmp_path: Path, anchor: Run) -> None:
    layers: list[tuple[str, PluginFiles]] = [("h1", init_loop()), ("h2", start_loop())]
    run = run_site(make_site(tmp_path, layers))
    assert_healthy_kept_rate(anchor, run)
    for layer, plugin in layers:
        said = assert_stopped_in_run(run, layer, plugin.name)
        assert any(k in said.lower() for k in ("fuel", "timeout")), said


@pytest.mark.slow
def test_run_does_not_reinstantiate_a_done_plugin_every_frame(tmp_path: Path, anchor: Run) -> None:
    """A one-item looping playlist of a plugin whose init spins for tens of ms and whose frame says "done"."""
    run = run_site(make_site(tmp_path, [("h1", init_spin_done())]))
    assert_healthy_kept_rate(anchor, run)
    inits = run.outcome.stderr.count(INIT_MARK)
    assert inits <= MAX_INITS, f"initialised {inits} times in {FRAMES} frames"
