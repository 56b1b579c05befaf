"""Logging for the service: secrets never reach a log line, and internal errors are logged with an id.

Browsers cannot set headers on a WebSocket, so API keys may travel as ``?token=`` in a URL; uvicorn writes
request lines (HTTP access log, WebSocket "accepted"/"rejected" lines) with their query strings. A filter on
uvicorn's loggers replaces the value of every credential-like query parameter by ``[REDACTED]`` before a
line is formatted, whatever handler or format the operator configured.
"""

from __future__ import annotations

import logging
import re
from typing import Any

SECRET_PARAMS = ("token", "access_token", "api_key", "apikey", "key", "ticket")
_SECRET = re.compile(r"(?i)([?&](?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s\"']*")
_BEARER = re.compile(r"(?i)(bearer\s+)[\w.~+/=-]+")
UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")
log = logging.getLogger("callqa.api")


def redact(text: str) -> str:
    """``text`` with the values of credential query parameters (and Bearer tokens) replaced."""
    return _BEARER.sub(r"\1[REDACTED]", _SECRET.sub(r"\1[REDACTED]", text))


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and arguments so that no credential in a URL is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Attach the filter to uvicorn's loggers (once; configuring logging later keeps logger filters), and give
    callqa's own loggers (internal errors of requests and jobs, with their ids) a handler on stderr when the
    process has none."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    own = logging.getLogger("callqa")
    if not own.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_FILTER)
        own.addHandler(handler)
        own.setLevel(logging.INFO)
