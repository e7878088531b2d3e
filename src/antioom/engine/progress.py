"""Progress events, the final summary, and the seed's heartbeat log line."""

from __future__ import annotations

import bisect
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psutil

from antioom.engine.rejects import Reject

Status = Literal["queued", "running", "completed", "failed", "aborted", "interrupted"]
MAX_REASONS = 50  # distinct reasons counted in Summary.rejects_by_reason; the rest are "other"
OTHER_REASON = "other"
# A quoted value inside a reason (database messages quote the refused value: 'abc', "x").
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PROCESS = psutil.Process()
log = logging.getLogger("antioom")


def rss_mb() -> float:
    """This process's resident set size in MiB."""
    return round(float(_PROCESS.memory_info().rss) / (1 << 20), 1)


def peak_rss_mb() -> float | None:
    """This process's true peak RSS (VmHWM, Linux) in MiB, or None where unknown.

    Unlike ``ru_maxrss`` it starts afresh at exec, so it is the peak of this program alone.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class ProgressEvent:
    """Sent after every committed batch (and once at the start)."""

    import_id: str
    status: Status
    processed: int  # rows committed to the database
    failed: int  # rows rejected (validation, malformed, or refused by the database)
    rows: int  # data records read so far
    bytes: int  # input bytes read (compressed bytes for compressed input)
    elapsed_s: float
    rows_per_s: float
    rss_mb: float
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Summary:
    """What an import did. ``rows == processed + failed`` once it completed."""

    import_id: str
    status: Status
    dataset: str
    table: str
    processed: int = 0
    failed: int = 0
    rows: int = 0
    bytes: int = 0
    batches: int = 0
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    started_at: str = ""
    finished_at: str | None = None
    error: str | None = None
    rejects: list[Reject] = field(default_factory=list)  # the first few, for display
    dialect: dict[str, Any] | None = None  # how the input was read, and what was detected
    notes: list[str] = field(default_factory=list)  # renamed columns, warnings
    # a resumed import: what earlier runs committed (records, rows, rejected, batches)
    resumed_from: dict[str, int] | None = None
    dry_run: bool = False  # nothing was written: ``processed`` rows would have been
    # rows rejected by this run, per "column: reason" (quoted values elided; at most
    # MAX_REASONS keys, then "other"); rows of earlier runs of a resumed import are not here
    rejects_by_reason: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejects"] = [asdict(reject) for reject in self.rejects]
        return data


def reason_key(reject: Reject) -> str:
    """The stable group of a reject: ``"price: must be > 0"``, with quoted values elided
    (``invalid input syntax for type integer: "abc"`` → ``…: "…"``) so that one cause is one
    group whatever the value."""
    reason = _QUOTED.sub(lambda quoted: f"{quoted.group()[0]}…{quoted.group()[0]}", reject.reason)
    return f"{reject.column}: {reason}" if reject.column else reason


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Meter:
    """Counts an import's progress and turns it into events and the summary."""

    def __init__(self, summary: Summary, *, sample_rejects: int = 20) -> None:
        self.summary = summary
        self._start = time.perf_counter()
        self._sample_rejects = sample_rejects
        summary.started_at = utc_now()
        summary.peak_rss_mb = rss_mb()

    def rejected(self, reject: Reject) -> None:
        self.summary.failed += 1
        counts = self.summary.rejects_by_reason
        key = reason_key(reject)
        if key not in counts and len(counts) >= MAX_REASONS:
            key = OTHER_REASON
        counts[key] = counts.get(key, 0) + 1
        # The sample holds the lowest record numbers, whatever order writers report them in.
        sample = self.summary.rejects
        if len(sample) < self._sample_rejects or (sample and reject.record < sample[-1].record):
            bisect.insort(sample, reject, key=lambda kept: kept.record)
            del sample[self._sample_rejects :]

    def event(self) -> ProgressEvent:
        s = self.summary
        elapsed = time.perf_counter() - self._start
        current = rss_mb()
        s.peak_rss_mb = max(s.peak_rss_mb, current)
        s.duration_s = round(elapsed, 3)
        s.rows_per_s = round(s.rows / elapsed, 1) if elapsed > 0 else 0.0
        return ProgressEvent(
            s.import_id,
            s.status,
            s.processed,
            s.failed,
            s.rows,
            s.bytes,
            s.duration_s,
            s.rows_per_s,
            current,
            s.batches,
        )

    def finish(self, status: Status, error: str | None = None) -> Summary:
        self.summary.status = status
        self.summary.error = error
        self.event()
        self.summary.finished_at = utc_now()
        return self.summary


class Heartbeat:
    """Logs the seed's line ``[Progress] Processed: N | Failed: M | RSS: XMB`` at most once a
    ``interval_s``, plus the final one."""

    def __init__(self, interval_s: float = 1.0, logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self._logger = logger

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.status == "running" and now - self._last < self.interval_s:
            return
        self._last = now
        self._logger.info(
            "[Progress] Processed: %d | Failed: %d | RSS: %dMB",
            event.processed,
            event.failed,
            round(event.rss_mb),
        )
