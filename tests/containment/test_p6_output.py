"""Issue 10.6: host-side work on plugin output is budgeted.

A valid Matricks frame behind 24 MiB of whitespace, built in kernel memory the plugin never allocated (beyond the
heap top: memory survives reset), cost the plugin ~0.1 M fuel and the host up to 125 ms a frame, with no strike:
plasma ran at ~5 fps. The output must be checked against the display's size before it is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.containment.conftest import Anchors, anchor_run
from tests.containment.harness import (
    DEFAULT_PLUGIN_MEMORY,
    FRAMES,
    Run,
    assert_check_fails,
    assert_clean_or_refused,
    assert_healthy_kept_rate,
    assert_refused,
    assert_rss_within,
    assert_stopped_in_run,
    edged,
    make_site,
    run_site,
)
from tests.containment.hostile import OUTPUT_BUILD_FRAMES, output_bomb, output_bomb_vars

#: enough frames for the plugin to build its whitespace and set it off a few times
BOMB_FRAMES = str(OUTPUT_BUILD_FRAMES + 10)


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


def test_preview_refuses_the_output_in_one_line(tmp_path: Path, anchors: Anchors) -> None:
    o = edged("preview", str(output_bomb().write(tmp_path)), "--png", "out.png", "--frames", BOMB_FRAMES, cwd=tmp_path)
    assert_refused(o, "edged preview:", "output", codes=(1,))
    assert_rss_within(o, anchors.rss("preview"), DEFAULT_PLUGIN_MEMORY, "preview of the output bomb")


def test_check_fails_the_output(tmp_path: Path) -> None:
    o = edged("plugin", "check", str(output_bomb().write(tmp_path)), "--frames", BOMB_FRAMES, cwd=tmp_path)
    assert_check_fails(o, "output")


def test_call_survives_it(tmp_path: Path, anchors: Anchors) -> None:
    """``edged call`` prints outputs without decoding them; the one that lies outside allocated memory (or is over
    the limit) may be refused, in one line."""
    o = edged(
        "call", str(output_bomb().write(tmp_path)), "update", "--loop", str(OUTPUT_BUILD_FRAMES + 1), cwd=tmp_path
    )
    assert_clean_or_refused(o, "edged call:")
    assert_rss_within(o, anchors.rss("call"), DEFAULT_PLUGIN_MEMORY, "call of the output bomb")


@pytest.mark.slow
def test_run_strikes_it_and_keeps_plasma_at_rate(tmp_path: Path, anchor: Run) -> None:
    assert OUTPUT_BUILD_FRAMES < FRAMES - 10  # the bomb goes off within the run
    run = run_site(make_site(tmp_path, [("h1", output_bomb())]))
    assert_healthy_kept_rate(anchor, run)
    assert_stopped_in_run(run, "h1", "output_bomb")


# --- beyond the list: the same bomb from allocated blocks only (vars the host copies for no fuel) ------------


def test_preview_refuses_a_var_served_output_bomb(tmp_path: Path, anchors: Anchors) -> None:
    o = edged("preview", str(output_bomb_vars().write(tmp_path)), "--png", "out.png", "--frames", "5", cwd=tmp_path)
    assert_refused(o, "edged preview:", "output", codes=(1,))
    assert_rss_within(o, anchors.rss("preview"), DEFAULT_PLUGIN_MEMORY, "preview of the var-served output bomb")


def test_check_fails_a_var_served_output_bomb(tmp_path: Path) -> None:
    o = edged("plugin", "check", str(output_bomb_vars().write(tmp_path)), "--frames", "5", cwd=tmp_path)
    assert_check_fails(o, "output")


@pytest.mark.slow
def test_run_strikes_a_var_served_output_bomb(tmp_path: Path, anchor: Run) -> None:
    run = run_site(make_site(tmp_path, [("h1", output_bomb_vars())]))
    assert_healthy_kept_rate(anchor, run)
    assert_stopped_in_run(run, "h1", "output_vars")
