"""Browser sessions: an API key exchanged once for a random session token in an HttpOnly, SameSite cookie.

Only the token's SHA-256 is stored, with the key's id and scope and a CSRF token for the session's forms
(synchronizer token: every form and script POST carries it back). A session ends at sign-out, after
``TTL_S``, or as soon as its API key is revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from callqa.api.keys import Scope
from callqa.store import Store

COOKIE = "callqa_session"
LOGIN_COOKIE = "callqa_login"  # double-submit token of the sign-in form (there is no session yet)
TTL_S = 12 * 3600.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS ui_sessions (
    hash        TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
"""


@dataclass(frozen=True)
class Session:
    key_id: str
    scope: Scope
    csrf: str

    @property
    def can_write(self) -> bool:
        return self.scope == "write"

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, token or "")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.connect() as db:
            db.executescript(SCHEMA)

    def create(self, key_id: str, now: float | None = None) -> str:
        """A new session for this key; returns the cookie value (stored only as its hash)."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        with self.store.connect() as db:
            db.execute("DELETE FROM ui_sessions WHERE expires_at < ?", (now,))
            db.execute("INSERT INTO ui_sessions VALUES (?, ?, ?, ?, ?)",
                       (_hash(token), key_id, secrets.token_urlsafe(24), now, now + TTL_S))  # fmt: skip
        return token

    def get(self, token: str | None, now: float | None = None) -> Session | None:
        """The live session of this cookie value: unexpired, and its API key still valid."""
        if not token or len(token) > 100:
            return None
        now = time.time() if now is None else now
        with self.store.connect() as db:
            row = db.execute(
                "SELECT s.key_id, k.scope, s.csrf FROM ui_sessions s JOIN api_keys k ON k.id = s.key_id "
                "WHERE s.hash = ? AND s.expires_at > ? AND k.revoked = 0", (_hash(token), now)
            ).fetchone()  # fmt: skip
        return Session(row[0], row[1], row[2]) if row else None

    def end(self, token: str | None) -> None:
        if token:
            with self.store.connect() as db:
                db.execute("DELETE FROM ui_sessions WHERE hash = ?", (_hash(token),))
