"""Logs: one JSON object per line on stderr, at the level PM_LOG_LEVEL names.

Each line has `time`, `level`, `logger` and `message`; a served call's line also has `method`,
`payout_id`, `code`, `duration_ms`, `request_id` (the caller's `x-request-id`, else a new one) and
`caller` (its identity: the initiator of any change the call made; empty when it was refused as
unknown).
A URL's password is masked in every line, whatever logged it.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

CALL_FIELDS = ("method", "payout_id", "code", "duration_ms", "request_id", "caller")
_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)


def masked(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    # The pattern needs "://"; without it the search would try a scheme at every letter.
    if "://" not in text:
        return text
    return _PASSWORD.sub(r"\g<scheme>:***@", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": masked(record.getMessage()),
        }
        for field in CALL_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = masked(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    """Sends every log record of this process to stderr as JSON lines, from `level` up."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line names a thread, a process or a source line, so logging need not find them out for
    # each record (the logging HOWTO's "Optimization": findCaller walks the stack every time).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    # Alembic names each of its plugins at INFO; the migrations it runs are what matters.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
