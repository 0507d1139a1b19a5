"""One bundle's download: the window of chunks asked for, what an arriving chunk means, and when a transfer that
stalls is asked again or given up. Pure bookkeeping over a store :class:`~edged.deploy.store.Transfer`; the
installer publishes the requests and acts on the outcomes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

from ...errors import DeployError, DiskFull
from ..messages import ChunkHeader
from ..store import Transfer


class ChunkOutcome(Enum):
    """What one arriving chunk did to the download."""

    #: its size, count or index does not fit this transfer (a rejected message)
    MISFIT = "misfit"
    #: a chunk already stored (re-sent, or a replay): no progress
    DUPLICATE = "duplicate"
    #: stored: progress
    STORED = "stored"
    #: its bytes were bad: asked again (``detail`` says why)
    RETRY = "retry"
    #: the download fails (bad too often, or a full disk)
    FAILED = "failed"


@dataclass(frozen=True)
class ChunkResult:
    outcome: ChunkOutcome
    reason: str = ""
    detail: str = ""


class StallOutcome(Enum):
    """What the periodic check found."""

    #: nothing to do
    FINE = "fine"
    #: no progress for a while: everything missing is to be asked for again
    ASK_AGAIN = "ask_again"
    #: asked too often without a chunk arriving (``missing_chunk``)
    GIVE_UP = "give_up"
    #: not done within the download timeout (``download_timeout``)
    TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class StallCheck:
    outcome: StallOutcome
    detail: str = ""


@dataclass
class Download:
    """A transfer in progress: ``window`` chunks in flight at most, asked again after ``stall_s`` without progress."""

    transfer: Transfer
    total: int
    chunk_size: int
    #: when it fails as ``download_timeout`` whatever arrives (monotonic)
    deadline: float
    requested: set[int] = field(default_factory=set)
    retries: dict[int, int] = field(default_factory=dict)
    last_progress: float = field(default_factory=time.monotonic)
    last_percent: float = -100.0
    #: times in a row the transfer asked again without receiving a chunk in between
    stalls: int = 0
    #: the marketplace's last error for a chunk (an unsigned header: only named in a later ``missing_chunk``)
    last_error: str = ""

    def next_indices(self, window: int) -> list[int]:
        """The missing chunks to ask for now to fill the window (marked as asked for)."""
        missing = [i for i in self.transfer.missing() if i not in self.requested]
        want = missing[: max(0, window - len(self.requested))]
        self.requested.update(want)
        return want

    def put(self, header: ChunkHeader, data: bytes, chunk_retries: int) -> ChunkResult:
        """Store one chunk of this transfer (``header`` names this transfer's wasm and has no ``error``)."""
        if header.chunk_size != self.chunk_size or header.total != self.total or header.index >= self.total:
            return ChunkResult(ChunkOutcome.MISFIT, "wrong_schema", "chunk does not fit the transfer")
        self.requested.discard(header.index)
        try:
            new = self.transfer.put_chunk(header.index, data, header.sha256)
        except DiskFull as exc:  # asking again cannot help; the partial download is reclaimed
            return ChunkResult(ChunkOutcome.FAILED, exc.reason, f"chunk {header.index}: {exc}")
        except DeployError as exc:
            n = self.retries[header.index] = self.retries.get(header.index, 0) + 1
            reason = getattr(exc, "reason", "hash_mismatch")
            if n > chunk_retries:
                detail = f"chunk {header.index} still bad after {chunk_retries} retries: {exc}"
                return ChunkResult(ChunkOutcome.FAILED, reason, detail)
            self.last_progress = time.monotonic()
            return ChunkResult(ChunkOutcome.RETRY, reason, str(exc))
        if not new:
            return ChunkResult(ChunkOutcome.DUPLICATE)
        self.stalls = 0
        self.last_progress = time.monotonic()
        return ChunkResult(ChunkOutcome.STORED)

    def percent_to_report(self, force: bool = False) -> float | None:
        """The progress to report now (every 10 %, and at 100 %), or None."""
        pct = round(max(0.0, min(100.0, float(self.transfer.progress()) * 100)), 1)
        if force or pct - self.last_percent >= 10 or (pct >= 100 and self.last_percent < 100):
            self.last_percent = pct
            return pct
        return None

    def check(self, now: float, stall_s: float, max_stalls: int, connected: bool, timeout_s: float) -> StallCheck:
        """Whether the download timed out, stalled for good, or is to be asked again (only while connected)."""
        if now > self.deadline > 0:
            got = len(self.transfer.received())
            return StallCheck(
                StallOutcome.TIMED_OUT, f"{got}/{self.total} chunks after {timeout_s:g} s; the download is given up"
            )
        if now - self.last_progress <= stall_s or not connected:
            return StallCheck(StallOutcome.FINE)
        self.stalls += 1
        if self.stalls > max_stalls:
            missing = self.transfer.missing()
            last = f"; last: {self.last_error}" if self.last_error else ""
            detail = f"chunks {missing[:16]} never arrived: asked {max_stalls} times, {stall_s:g} s apart" + last
            return StallCheck(StallOutcome.GIVE_UP, detail)
        self.requested.clear()  # lost or dropped: ask again
        self.last_progress = now
        return StallCheck(StallOutcome.ASK_AGAIN)
