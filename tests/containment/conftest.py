"""Fixtures of the hostile-plugin suite: the anchors every case is judged against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.containment.harness import Run, assert_survived, edged, make_site, run_site
from tests.containment.hostile import FRAME_BLACK, drawing, module


class Anchors:
    """Peak RSS of ``edged call``, ``preview`` and ``plugin check`` on a harmless drawing plugin, measured once per
    session the same way as the hostile cases (memory is not timing: one measurement serves the whole session)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._rss: dict[str, int] = {}
        self.plugin = drawing("benign", module(body=FRAME_BLACK)).write(root / "plugins")

    def rss(self, command: str) -> int:
        if command not in self._rss:
            runs: dict[str, Callable[[], object]] = {
                "call": lambda: edged("call", str(self.plugin), "frame", cwd=self.root),
                "preview": lambda: edged("preview", str(self.plugin), "--png", "benign.png", cwd=self.root),
                "check": lambda: edged("plugin", "check", str(self.plugin), cwd=self.root),
            }
            o = runs[command]()
            assert_survived(o)  # type: ignore[arg-type]
            assert o.returncode == 0, o.describe()  # type: ignore[attr-defined]
            self._rss[command] = o.peak_rss  # type: ignore[attr-defined]
        return self._rss[command]


@pytest.fixture(scope="session")
def anchors(tmp_path_factory: pytest.TempPathFactory) -> Anchors:
    return Anchors(tmp_path_factory.mktemp("anchors"))


def anchor_run(root: Path, daemon: str = "") -> Run:
    """Plasma alone on the emulated 16×16 (the same site as the hostile runs, without the hostile layer)."""
    run = run_site(make_site(root, daemon=daemon))
    assert_survived(run.outcome)
    assert run.outcome.returncode == 0 and run.stats is not None, run.outcome.describe()
    assert run.display()["frames"] > 0
    return run
