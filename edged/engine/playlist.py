"""Playlists: plugins in order, each for a duration or until it says it is done, with cut or crossfade
transitions, optional time-of-day schedules, and looping."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..hardware.pipeline import to_rgb
from ..host.frames import Tick
from .compose import crossfade
from .supervisor import DONE, Supervised

log = logging.getLogger("edged.engine")


class PlaylistItem(BaseModel):
    """One entry: which plugin, for how long, how to enter it, and when it may play."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    plugin: str
    #: seconds to play; None plays until the plugin says it is done
    duration_s: float | None = Field(default=30.0, gt=0)
    transition: Literal["cut", "crossfade"] = "cut"
    transition_s: float = Field(default=1.0, ge=0)
    #: local time-of-day window "HH:MM-HH:MM" (may wrap past midnight); None means always
    schedule: str | None = None
    config: dict[str, str] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None:
            parse_window(v)
        return v


def parse_window(text: str) -> tuple[dt.time, dt.time]:
    """``"08:00-22:30"`` → (08:00, 22:30)."""
    try:
        a, b = text.split("-")
        return dt.time.fromisoformat(a.strip()), dt.time.fromisoformat(b.strip())
    except ValueError:
        raise ValueError(f"schedule must look like 'HH:MM-HH:MM', got {text!r}") from None


def in_window(text: str, now: dt.time) -> bool:
    start, end = parse_window(text)
    return start <= now < end if start <= end else (now >= start or now < end)


class PlaylistPlayer:
    """Plays a playlist in one layer. ``slots`` maps plugin names to supervised plugins (loaded in advance, so
    that nothing compiles on the frame path)."""

    def __init__(
        self,
        items: list[PlaylistItem],
        slots: dict[str, Supervised],
        *,
        loop: bool = True,
        time_of_day: Callable[[], dt.time] | None = None,
    ) -> None:
        missing = sorted({i.plugin for i in items} - slots.keys())
        if missing:
            raise ValueError(f"playlist names unknown plugins: {missing}")
        if not items:
            raise ValueError("a playlist needs at least one item")
        self.items = items
        self.slots = slots
        self.loop = loop
        self.time_of_day = time_of_day or (lambda: dt.datetime.now().time())
        self.index = -1
        self.started = 0.0
        self.finished = False
        self.frames_in_item = 0
        self._outgoing: tuple[Supervised, np.ndarray | None, float, int] | None = None
        self._last: np.ndarray | None = None
        self.advances = 0

    @property
    def current(self) -> PlaylistItem | None:
        return self.items[self.index] if 0 <= self.index < len(self.items) else None

    def _playable(self, item: PlaylistItem) -> bool:
        return item.schedule is None or in_window(item.schedule, self.time_of_day())

    def jump(self, index: int, now: float) -> None:
        """Play item ``index`` now (a cut), e.g. from the control interface."""
        self._start(index % len(self.items), now, transition=False)

    def _start(self, index: int, now: float, transition: bool = True) -> None:
        prev = self.slots[self.items[self.index].plugin] if 0 <= self.index < len(self.items) else None
        item = self.items[index]
        slot = self.slots[item.plugin]
        # a crossfade needs two plugins: an item that follows itself (a one-item loop) restarts with a cut
        if (
            transition
            and prev is not None
            and prev is not slot
            and item.transition == "crossfade"
            and item.transition_s > 0
        ):
            self._outgoing = (prev, self._last, self.started, self.frames_in_item)
        else:
            self._outgoing = None
        slot.restart()  # each play starts a fresh instance, as in Matricks
        self.index = index
        self.started = now
        self.frames_in_item = 0
        self.advances += 1
        log.info("playlist item %d: %s", index, item.plugin)

    def _advance(self, now: float) -> None:
        n = len(self.items)
        for step in range(1, n + 1):
            nxt = self.index + step
            if nxt >= n and not self.loop:
                break
            if self._playable(self.items[nxt % n]):
                self._start(nxt % n, now)
                return
        self.index = -1
        # nothing may play right now: a looping playlist waits (dark) and looks again next frame, since its
        # schedule windows will open again; a playlist that does not loop has ended
        self.finished = not self.loop

    @staticmethod
    def _item_tick(slot: Supervised, tick: Tick, now: float, started: float, frames: int) -> Tick:
        """The tick as the plugin sees it: frames and time count from when this play of it started."""
        d = slot.plugin.display
        w, h = (d.width, d.height) if d is not None else (tick.width, tick.height)
        return Tick(frames, int((now - started) * 1e6), tick.dt_us, w, h, frames == 0)

    def render(self, tick: Tick, now: float) -> np.ndarray | None:
        """This layer's frame for ``tick``; ``None`` when nothing plays (before anything is schedulable, or after a
        non-looping playlist has ended)."""
        if self.finished:
            return None
        item = self.current
        if item is None or (item.duration_s is not None and now - self.started >= item.duration_s):
            self._advance(now)
            item = self.current
            if item is None:
                return None
        slot = self.slots[item.plugin]
        frame = slot.frame(self._item_tick(slot, tick, now, self.started, self.frames_in_item))
        if frame is DONE:
            self._advance(now)
            return self._last
        self.frames_in_item += 1
        if frame is not None and self._outgoing is not None:
            out_slot, out_last, out_started, out_frames = self._outgoing
            progress = (now - self.started) / item.transition_s
            if progress >= 1.0:
                self._outgoing = None
            else:
                self._outgoing = (out_slot, out_last, out_started, out_frames + 1)
                old = out_slot.frame(self._item_tick(out_slot, tick, now, out_started, out_frames))
                old = out_last if old is DONE or old is None else old
                if old is not None and old.shape[:2] == frame.shape[:2]:
                    frame = crossfade(to_rgb(old), to_rgb(frame), progress)
        if frame is not None:
            self._last = frame
        return frame
