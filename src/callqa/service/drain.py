"""How fast the job queue drains, measured: the basis of ``Retry-After`` when the queue is full.

An estimate from analysis times alone (queue depth x mean analysis time / workers) ignores cache hits, fetches,
parallel legs and the time between jobs, and was off by a factor of five. Here the intervals between consecutive
job completions are measured while a backlog was waiting (an idle service says nothing about its drain rate);
the last ``window`` intervals give jobs per second, and the time to drain ``depth`` jobs follows. Until enough
intervals are known, the analysis-time estimate stands in.
"""

from __future__ import annotations

from collections import deque

MIN_INTERVALS = 3


class DrainRate:
    def __init__(self, window: int = 50) -> None:
        self.intervals: deque[float] = deque(maxlen=window)
        self.last: float | None = None  # time of the last completion
        self.backlog = False  # whether jobs were waiting at the last completion

    def done(self, now: float, waiting: int) -> None:
        """A job finished at ``now`` (monotonic seconds); ``waiting`` jobs are queued or running after it."""
        if self.last is not None and self.backlog:
            self.intervals.append(max(0.0, now - self.last))
        self.last, self.backlog = now, waiting > 0

    def jobs_per_s(self) -> float | None:
        if len(self.intervals) < MIN_INTERVALS or sum(self.intervals) <= 0:
            return None
        return len(self.intervals) / sum(self.intervals)

    def retry_after(self, depth: int, fallback_job_s: float, workers: int, cap_s: int = 3600) -> int:
        """Seconds until ``depth`` jobs have drained: from the measured rate, else from the fallback."""
        rate = self.jobs_per_s()
        seconds = depth / rate if rate else depth * fallback_job_s / max(1, workers)
        return max(1, min(cap_s, round(seconds)))
