"""Fan-out of live events (transcript segments, rule events) to WebSocket subscribers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

QUEUE = 1000  # events a slow subscriber may lag behind; older ones are dropped for it


class Hub:
    """Fan-out of live events to WebSocket subscribers, each with its own bounded queue."""

    def __init__(self) -> None:
        self.subscribers: set[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = set()
        self.published = 0

    def publish(self, event: dict[str, Any]) -> None:
        self.published += 1
        for call_id, q in list(self.subscribers):
            if call_id is not None and event.get("call_id") != call_id:
                continue
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)
