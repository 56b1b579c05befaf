"""Send live events to the callqa service (``POST /live/events``), batched, from a thread of their own.

The capture never waits for the network: events go into a bounded queue (the oldest are dropped when the
service cannot keep up, and counted), and a failed POST is retried with the next batch."""

from __future__ import annotations

import json
import queue
import sys
import threading
from typing import Any

import httpx

MAX_QUEUE = 10_000


class Publisher:
    def __init__(self, base_url: str | None, api_key: str | None, echo: bool = False) -> None:
        self.url = base_url.rstrip("/") + "/live/events" if base_url else None
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.echo = echo or not base_url
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(MAX_QUEUE)
        self.dropped = 0
        self.failed_posts = 0
        self.thread = threading.Thread(target=self._run, name="live-publisher", daemon=True)
        self.thread.start()

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout_s: float = 10.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout_s)

    def _run(self) -> None:
        client = httpx.Client(timeout=5.0, trust_env=False) if self.url else None
        pending: list[dict[str, Any]] = []
        done = False
        while not done:
            try:
                item = self.queue.get(timeout=0.2)
                done = item is None
                if item is not None:
                    pending.append(item)
                    while len(pending) < 500:
                        more = self.queue.get_nowait()
                        if more is None:
                            done = True
                            break
                        pending.append(more)
            except queue.Empty:
                pass
            if not pending:
                continue
            if self.echo:
                for event in pending:
                    sys.stderr.write("live " + json.dumps(event) + "\n")
            if client is not None and self.url:
                try:
                    client.post(self.url, json={"events": pending}, headers=self.headers).raise_for_status()
                except httpx.HTTPError:
                    self.failed_posts += 1
                    if len(pending) < MAX_QUEUE:
                        continue  # keep them for the next attempt
            pending = []
        if client is not None:
            client.close()
