"""Python's garbage collector paced by the frame threads: collections run in a frame's slack, not mid-frame."""

from __future__ import annotations

import gc
import threading

from ..engine.clock import Clock


class GcPacer:
    """Python's garbage collector, run in the frame threads' slack instead of whenever allocation counts say.

    A full collection of a daemon's heap takes tens of milliseconds (measured: a 50-60 ms stall every few seconds
    with faulty plugins failing on every frame), far more than a frame period. So once the displays run, automatic
    collection is off, everything loaded so far is frozen out of the collector's way, and :meth:`idle` (called after
    each frame is rendered ahead) collects the young generations, and now and then the old one, when the next
    deadline leaves room.
    """

    #: collect generation 1 every this many frames, generation 2 every this many
    GEN1_EVERY, GEN2_EVERY = 16, 1800

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._frames = 0
        self._active = False
        self.collections = [0, 0, 0]

    def take_over(self) -> None:
        self.settle()
        gc.disable()
        self._active = True

    def settle(self) -> None:
        """Move what exists now (plugins, modules, config) to the permanent generation."""
        gc.collect()
        gc.freeze()

    def freeze_new(self) -> None:
        """After a reload, while frames run: freeze what exists without a full collection (that would stall the
        untouched displays); the pacer collects the young generations as usual."""
        if self._active:
            gc.freeze()

    def release(self) -> None:
        """Give collection back to Python (on stop): unfreeze, so that what the daemon held can be collected."""
        if self._active:
            self._active = False
            gc.unfreeze()
            gc.enable()

    def idle(self, deadline: float) -> None:
        if not self._active or not self._lock.acquire(blocking=False):
            return  # another display thread is collecting
        try:
            self._frames += 1
            slack = deadline - self.clock.now()
            generation = 0
            if self._frames % self.GEN2_EVERY == 0 or gc.get_count()[2] > 10 * gc.get_threshold()[2]:
                generation = 2
            elif self._frames % self.GEN1_EVERY == 0:
                generation = 1
            if generation and slack < 0.004:
                generation = 0  # no room this frame: the young generation only
            if slack > 0.0005 or gc.get_count()[0] > 10 * gc.get_threshold()[0]:
                gc.collect(generation)
                self.collections[generation] += 1
        finally:
            self._lock.release()
