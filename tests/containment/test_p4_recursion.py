"""Issue 10.4: a Matricks ``update`` returning 100,000 ``[`` raised RecursionError in the frame decoder, which killed
the display thread (0 frames after) and printed a traceback in preview and check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.containment.conftest import Anchors, anchor_run
from tests.containment.harness import (
    DEFAULT_PLUGIN_MEMORY,
    Run,
    assert_check_fails,
    assert_healthy_kept_rate,
    assert_refused,
    assert_rss_within,
    assert_stopped_in_run,
    assert_survived,
    edged,
    make_site,
    run_site,
)
from tests.containment.hostile import BRACKETS, brackets


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"))


def test_call_hands_the_bytes_over(tmp_path: Path) -> None:
    """``edged call`` does not decode frames: it prints the output and lives."""
    o = edged("call", str(brackets().write(tmp_path)), "update", cwd=tmp_path)
    assert_survived(o)
    assert o.returncode == 0 and o.stdout == "[" * BRACKETS, o.describe()


def test_preview_says_one_line(tmp_path: Path, anchors: Anchors) -> None:
    o = edged("preview", str(brackets().write(tmp_path)), "--png", "out.png", cwd=tmp_path)
    assert_refused(o, "edged preview:", codes=(1,))
    assert_rss_within(o, anchors.rss("preview"), DEFAULT_PLUGIN_MEMORY, "preview of 100,000 [")


def test_check_fails_it_in_one_line(tmp_path: Path) -> None:
    assert_check_fails(edged("plugin", "check", str(brackets().write(tmp_path)), cwd=tmp_path))


@pytest.mark.slow
def test_run_keeps_the_display_alive(tmp_path: Path, anchor: Run) -> None:
    run = run_site(make_site(tmp_path, [("h1", brackets())]))
    assert_healthy_kept_rate(anchor, run)
    assert_stopped_in_run(run, "h1", "brackets")
