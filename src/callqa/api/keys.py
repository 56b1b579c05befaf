"""API keys: random tokens, stored only as SHA-256 hashes, each scoped ``read`` or ``write``.

A token looks like ``cqa_<id>_<secret>``; the id finds the row, the hash of the whole token is compared in
constant time. Tokens carry 256 bits of randomness, so a fast hash is the right tool (no password stretching
is needed for secrets nobody chose).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from callqa.store import Store

Scope = Literal["read", "write"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    created_at  DOUBLE PRECISION NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    scope: Scope
    name: str
    created_at: float
    revoked: bool

    def allows(self, needed: Scope) -> bool:
        return not self.revoked and (self.scope == "write" or needed == "read")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        with store.connect() as db:
            db.executescript(SCHEMA)

    def create(self, scope: Scope, name: str = "") -> str:
        """A new key; the token is returned once and never stored."""
        if scope not in ("read", "write"):
            raise ValueError(f"scope must be read or write, not {scope!r}")
        key_id = secrets.token_hex(4)
        token = f"cqa_{key_id}_{secrets.token_urlsafe(32)}"
        with self.store.connect() as db:
            db.execute("INSERT INTO api_keys (id, hash, scope, name, created_at) VALUES (?, ?, ?, ?, ?)",
                       (key_id, _hash(token), scope, name, time.time()))  # fmt: skip
        return token

    def verify(self, token: str) -> ApiKey | None:
        parts = token.split("_")
        if len(parts) < 3 or parts[0] != "cqa" or len(token) > 200:
            return None
        with self.store.connect() as db:
            row = db.execute("SELECT id, hash, scope, name, created_at, revoked FROM api_keys WHERE id = ?",
                             (parts[1],)).fetchone()  # fmt: skip
        if row is None or not hmac.compare_digest(row[1], _hash(token)):
            return None
        return ApiKey(row[0], row[2], row[3], row[4], bool(row[5]))

    def revoke(self, key_id: str) -> bool:
        with self.store.connect() as db:
            return db.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?", (key_id,)).rowcount == 1

    def list(self) -> list[ApiKey]:
        with self.store.connect() as db:
            rows = db.execute("SELECT id, scope, name, created_at, revoked FROM api_keys ORDER BY created_at")
            return [ApiKey(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]
