"""Issue 10.5: one memory accounting for everything a plugin can grow.

The manifest's ``max_pages`` overrode the device's ``plugin_memory_mb``; the store limit capped each memory, not their
sum (extra memories, the kernel's, tables); a ``max_var_bytes`` above 16 MiB kept vars in Python without bound. Four
bombs reached 845 MB to 3.9 GB of RSS (plasma alone: 215 MB). Each bomb runs in a process of its own, and its peak RSS
may exceed the anchor's (the same command without the bomb) by the cap plus :data:`~tests.containment.harness.SLACK`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.containment.conftest import Anchors, anchor_run
from tests.containment.harness import (
    DEFAULT_PLUGIN_MEMORY,
    MiB,
    Run,
    assert_clean_or_refused,
    assert_healthy_kept_rate,
    assert_rss_within,
    assert_survived,
    edged,
    make_site,
    run_site,
)
from tests.containment.hostile import PluginFiles, bomb_kernel, bomb_memories, bomb_pages, bomb_tables, bomb_vars

#: the device's cap in the runs here
DEVICE_MB = 32
DEVICE = f"plugin_memory_mb = {DEVICE_MB}"
#: what the bombs that declare ``max_pages`` declare (512 pages), the only cap ``edged call`` has
MANIFEST_CAP = 32 * MiB

BOMBS: dict[str, Callable[[], PluginFiles]] = {
    "pages": bomb_pages,
    "memories": bomb_memories,
    "tables": bomb_tables,
    "vars": bomb_vars,
    # beyond the list: the kernel's memory, grown by the host for var_get copies
    "kernel": bomb_kernel,
}


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return anchor_run(tmp_path_factory.mktemp("anchor"), daemon=DEVICE)


@pytest.mark.slow
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_run_holds_a_bomb_to_the_device_cap(tmp_path: Path, bomb: str, anchor: Run) -> None:
    run = run_site(make_site(tmp_path, [("h1", BOMBS[bomb]())], daemon=DEVICE))
    assert_rss_within(run.outcome, anchor.outcome.peak_rss, DEVICE_MB * MiB, f"run with the {bomb} bomb")
    assert_healthy_kept_rate(anchor, run)


#: frames preview and check draw of a bomb: enough for each to pass any cap here several times over
BOMB_FRAMES = "40"


@pytest.mark.parametrize("bomb", ["memories", "tables", "kernel"])
def test_call_holds_a_bomb_to_the_manifest_cap(tmp_path: Path, bomb: str, anchors: Anchors) -> None:
    """Without a device, the manifest's ``max_pages`` is the cap: extra memories, the kernel's and tables count too
    (export ``fill``: grow until refused). Not the pages and vars bombs: without a device, their manifests' own
    ``max_pages`` and ``max_var_bytes`` (1 GiB each) are what the author asked for, as in Extism."""
    o = edged("call", str(BOMBS[bomb]().write(tmp_path)), "fill", cwd=tmp_path)
    assert_clean_or_refused(o, "edged call:")
    assert_rss_within(o, anchors.rss("call"), MANIFEST_CAP, f"call with the {bomb} bomb")


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_preview_holds_a_bomb_to_the_default_cap(tmp_path: Path, bomb: str, anchors: Anchors) -> None:
    """Preview stands in for a device: the daemon's default cap holds, whatever the manifest declares."""
    o = edged("preview", str(BOMBS[bomb]().write(tmp_path)), "--png", "out.png", "--frames", BOMB_FRAMES, cwd=tmp_path)
    assert_clean_or_refused(o, "edged preview:")
    assert_rss_within(o, anchors.rss("preview"), DEFAULT_PLUGIN_MEMORY, f"preview of the {bomb} bomb")


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_check_holds_a_bomb_to_the_default_cap(tmp_path: Path, bomb: str, anchors: Anchors) -> None:
    o = edged("plugin", "check", str(BOMBS[bomb]().write(tmp_path)), "--frames", BOMB_FRAMES, cwd=tmp_path)
    assert_survived(o)
    assert o.returncode in (0, 1), o.describe()
    assert_rss_within(o, anchors.rss("check"), DEFAULT_PLUGIN_MEMORY, f"check of the {bomb} bomb")
