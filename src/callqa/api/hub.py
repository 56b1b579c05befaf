"""Fan-out of live events (transcript segments, rule events) to WebSocket subscribers.

Each subscriber has its own bounded queue; a subscriber is removed as soon as its connection ends (the
WebSocket route watches for the disconnect while it waits for events), and ``close`` ends every subscription
at shutdown so that no handler is left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

QUEUE = 1000  # events a slow subscriber may lag behind; older ones are dropped for it
CLOSED: dict[str, Any] = {"type": "closed"}  # put in every queue at shutdown: the subscription ends


class Hub:
    """Fan-out of live events to WebSocket subscribers, each with its own bounded queue."""

    def __init__(self) -> None:
        self.subscribers: set[tuple[str | None, asyncio.Queue[dict[str, Any]]]] = set()
        self.published = 0
        self.closed = False

    @contextlib.contextmanager
    def subscribe(self, call_id: str | None) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """A queue of the events of ``call_id`` (None: every call) for as long as the block runs."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        entry = (call_id, q)
        if self.closed:
            q.put_nowait(CLOSED)
        else:
            self.subscribers.add(entry)
        try:
            yield q
        finally:
            self.subscribers.discard(entry)

    def publish(self, event: dict[str, Any]) -> None:
        self.published += 1
        for call_id, q in list(self.subscribers):
            if call_id is not None and event.get("call_id") != call_id:
                continue
            _put(q, event)

    def close(self) -> None:
        """Shutdown: every subscription ends (its handler closes the WebSocket with 1001)."""
        self.closed = True
        for _, q in list(self.subscribers):
            _put(q, CLOSED)


def _put(q: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if q.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            q.get_nowait()
    q.put_nowait(event)
