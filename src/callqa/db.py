"""The database behind the store: SQLite (the embedded default, nothing to set up) or PostgreSQL (``CALLQA_DB=
postgresql://user@host/db``, for several API nodes and worker hosts), behind one small interface.

Every module writes its SQL once, in the dialect both engines share, with ``?`` placeholders:

    with store.connect() as db:             # one connection, one transaction (committed on success)
        db.execute("INSERT INTO t (id, n) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET n = excluded.n", (k, 1))
        rows = db.execute("SELECT id FROM t WHERE n > ?", (0,)).fetchall()

On PostgreSQL the placeholders become psycopg's, and connections come from a pool per process that checks each
connection before handing it out (a restarted server costs the next query a reconnect, not an error). What the
two engines share: ``INSERT ... ON CONFLICT (...) DO UPDATE SET x = excluded.x`` upserts, ``CREATE TABLE/INDEX
IF NOT EXISTS``, ``DOUBLE PRECISION`` for floating point (``REAL`` is 4 bytes on PostgreSQL: never for times),
``LIKE ? ESCAPE '\\'`` with :func:`contains` for substring search, ``ORDER BY x IS NULL``. What they do not
(``INSERT OR REPLACE``, ``instr``, ``json_extract``, ``PRAGMA``): not used outside this module.

A driver error inside ``connect()`` comes out as a :class:`~callqa.errors.StoreError` (HTTP 503, a job retried).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

from callqa.errors import StoreError

log = logging.getLogger("callqa.db")
Dialect = Literal["sqlite", "postgresql"]
_LOCK_ID = 0x63616C6C7161  # "callqa": the advisory lock that serialises schema changes on PostgreSQL


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


def is_postgres(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


def contains(text: str) -> str:
    """The pattern of ``column LIKE ? ESCAPE '\\'`` that matches ``text`` anywhere, literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled); quoted text is left alone."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


class Connection:
    """One connection inside one transaction, with the sqlite3 methods the modules use."""

    dialect: Dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def executescript(self, script: str) -> None:
        """Statements without parameters (a schema), run as one unit."""
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        """The column names of a table (empty when it does not exist)."""
        raise NotImplementedError

    def lock_schema(self) -> None:
        """Hold the schema lock until the transaction ends (one process at a time changes the schema)."""
        raise NotImplementedError


class _SqliteConnection(Connection):
    dialect: Dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def executescript(self, script: str) -> None:
        self.db.executescript(script)

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}

    def lock_schema(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")


class _PgConnection(Connection):
    dialect: Dialect = "postgresql"

    def __init__(self, db: Any) -> None:
        self.db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self.db.execute(_pg_sql(sql), tuple(args))  # type: ignore[no-any-return]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            with self.db.cursor() as cur:
                cur.executemany(_pg_sql(sql), rows)

    def executescript(self, script: str) -> None:
        # concurrent CREATE ... IF NOT EXISTS race on PostgreSQL's catalogue: one process at a time
        self.lock_schema()
        self.db.execute(script)  # no parameters: sent as one simple query, several statements allowed

    def columns(self, table: str) -> set[str]:
        rows = self.db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s", (table,)).fetchall()  # fmt: skip
        return {r[0] for r in rows}

    def lock_schema(self) -> None:
        self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))


class Database:
    """Where the store lives: a SQLite file or a PostgreSQL URL. ``connect()`` yields a :class:`Connection`."""

    def __init__(self, target: str | Path) -> None:
        self.dialect: Dialect = "postgresql" if is_postgres(target) else "sqlite"
        self.target = str(target)
        self.path = Path(target) if self.dialect == "sqlite" else None

    def describe(self) -> str:
        """The target without a password (for messages)."""
        if self.dialect == "sqlite":
            return self.target
        from psycopg.conninfo import conninfo_to_dict

        try:
            info = conninfo_to_dict(self.target)
        except Exception:  # noqa: BLE001 - a malformed URL is reported by connect(); never echo it
            return "postgresql (malformed URL)"
        host, port = info.get("host", ""), info.get("port", 5432)
        return f"postgresql://{info.get('user', '')}@{host}:{port}/{info.get('dbname', '')}"

    @contextmanager
    def connect(self, timeout_s: float | None = None) -> Iterator[Connection]:
        """One connection in one transaction. ``timeout_s``: how long to wait for a connection (the SQLite lock, or
        a PostgreSQL server that is restarting); default ``CALLQA_DB_WAIT_S`` (30 s)."""
        timeout_s = float(os.environ.get("CALLQA_DB_WAIT_S", "30")) if timeout_s is None else timeout_s
        try:
            if self.dialect == "sqlite":
                db = sqlite3.connect(self.target, timeout=timeout_s)
                try:
                    with db:  # one transaction: committed on success, rolled back on error
                        yield _SqliteConnection(db)
                finally:
                    db.close()
            else:
                with _pool(self.target, timeout_s).connection() as conn:  # commits on success, rolls back on error
                    yield _PgConnection(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"result store {self.target}: {exc}") from exc
        except Exception as exc:
            if _is_pg_error(exc):  # the server's words go to the log; a client is told no host, user or SQL
                log.warning("result store %s: %s: %s", self.describe(), type(exc).__name__, exc)
                raise StoreError(f"the result store is unavailable or refused the request ({type(exc).__name__})") \
                    from exc  # fmt: skip
            raise


def _is_pg_error(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the extra is not installed
        return False
    return isinstance(exc, psycopg.Error)


def _configure(conn: Any) -> None:
    """Values as SQLite's module gives them: NUMERIC (``avg()``, ``sum()`` of floats cast) as float, not Decimal."""
    from psycopg.types.numeric import FloatLoader

    conn.adapters.register_loader("numeric", FloatLoader)


_POOLS: dict[tuple[str, int], Any] = {}
_POOLS_LOCK = threading.Lock()


def _pool(url: str, timeout_s: float) -> Any:
    """This process's connection pool for ``url`` (made on first use; a forked or spawned worker makes its own)."""
    key = (url, os.getpid())
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            try:
                from psycopg_pool import ConnectionPool
            except ImportError as exc:
                raise StoreError("PostgreSQL needs the 'scale' extra: pip install 'callqa[scale]'") from exc
            size = int(os.environ.get("CALLQA_DB_POOL", "8"))
            pool = ConnectionPool(url, min_size=1, max_size=max(1, size), timeout=timeout_s, open=True,
                                  check=ConnectionPool.check_connection, reconnect_timeout=300.0,
                                  configure=_configure, kwargs={"connect_timeout": 10})  # fmt: skip
            _POOLS[key] = pool
        return pool


def close_pools() -> None:
    """Close this process's PostgreSQL pools (tests that drop their database)."""
    with _POOLS_LOCK:
        for key in [k for k in _POOLS if k[1] == os.getpid()]:
            _POOLS.pop(key).close()
