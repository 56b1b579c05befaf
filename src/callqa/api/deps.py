"""Dependencies as ``Annotated`` aliases: the application state, and API keys with a scope and a rate limit."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from callqa.ai.assistant import Assistant
from callqa.api.hub import Hub
from callqa.api.keys import ApiKey, KeyStore, Scope
from callqa.config import Settings
from callqa.service.ingest import SiteCalls
from callqa.service.jobs import JobStore, audio_dir
from callqa.service.metrics import Metrics
from callqa.service.queue import QueueRunner
from callqa.service.runner import Runner
from callqa.store import Store
from callqa.web.session import COOKIE, Sessions

KEY_CACHE_S = 30.0  # a revoked key stops working within this time


class RateLimiter:
    """Token bucket per key: ``per_minute`` requests a minute, bursts up to the same number. With
    ``read_per_minute``, reads (GET) have buckets of their own: polling a job does not use up the key's writes."""

    def __init__(self, per_minute: int, read_per_minute: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.buckets: dict[str, tuple[float, float]] = {}
        self.reads = RateLimiter(read_per_minute) if read_per_minute else None

    def take(self, key_id: str, now: float | None = None, scope: Scope = "write") -> float:
        """0 when allowed, else the seconds to wait."""
        if scope == "read" and self.reads is not None:
            return self.reads.take(key_id, now)
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(key_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self.buckets[key_id] = (tokens - 1.0, now)
        return 0.0


@dataclass
class AppState:
    settings: Settings
    store: Store
    keys: KeyStore
    jobs: JobStore
    metrics: Metrics
    assistant: Assistant
    runner: Runner | QueueRunner  # the in-process pool, or the queue to `callqa worker` processes (CALLQA_BROKER)
    limiter: RateLimiter
    hub: Hub = field(default_factory=lambda: Hub())
    verified: dict[str, tuple[ApiKey, float]] = field(default_factory=dict)
    _sessions: Sessions | None = None
    _site_calls: SiteCalls | None = None

    @property
    def sessions(self) -> Sessions:
        """Browser sessions of the web pages (their table is created on first use)."""
        if self._sessions is None:
            self._sessions = Sessions(self.store)
        return self._sessions

    @property
    def site_calls(self) -> SiteCalls:
        """Calls received from capture sites (their table is created on first use)."""
        if self._site_calls is None:
            self._site_calls = SiteCalls(self.store, audio_dir(self.settings))
        return self._site_calls

    def verify(self, token: str) -> ApiKey | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        hit = self.verified.get(digest)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        key = self.keys.verify(token)
        if key is not None:
            if len(self.verified) > 10_000:
                self.verified.clear()
            self.verified[digest] = (key, time.monotonic() + KEY_CACHE_S)
        return key


def get_state(request: Request) -> AppState:
    return request.app.state.callqa  # type: ignore[no-any-return]


State = Annotated[AppState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False, description="an API key from `callqa keys create`")


def _limit(state: AppState, key_id: str, scope: Scope) -> None:
    wait = state.limiter.take(key_id, scope=scope)
    if wait > 0:
        raise HTTPException(429, "rate limit exceeded for this API key", {"Retry-After": str(int(wait) + 1)})


def _authorize(needed: Scope):  # type: ignore[no-untyped-def]
    def check(state: State, request: Request,
              cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:  # fmt: skip
        if (cred is None or not cred.credentials) and needed == "read" and request.method in ("GET", "HEAD"):
            session = state.sessions.get(request.cookies.get(COOKIE))  # a signed-in browser may read
            if session is not None:
                _limit(state, session.key_id, needed)
                return ApiKey(session.key_id, session.scope, "", 0.0, False)
        if cred is None or not cred.credentials:
            raise HTTPException(401, "missing API key (Authorization: Bearer KEY)", {"WWW-Authenticate": "Bearer"})
        key = state.verify(cred.credentials)
        if key is None or key.revoked:
            raise HTTPException(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
        if not key.allows(needed):
            raise HTTPException(403, f"this API key has scope {key.scope!r}; {needed!r} is needed")
        _limit(state, key.id, needed)
        return key

    return check


ReadKey = Annotated[ApiKey, Depends(_authorize("read"))]
WriteKey = Annotated[ApiKey, Depends(_authorize("write"))]
