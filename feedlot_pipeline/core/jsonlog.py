"""JSON log lines with a correlation id, for the Dagster side (loader, batch runs, worker).

The landing Lambdas log JSON through Powertools ``Logger``, with the request's correlation id
under ``correlation_id``. This gives everything else the same shape, so one CloudWatch Logs
Insights query (``deploy/cloudformation/monitoring.yaml``: ``TraceCorrelationIdQuery``) follows a
correlation id from the Lambda that landed it to the load that turned it into rows, and one
(``RejectionsByReasonQuery``) sums ``rejections`` lines by reason code across both.

- ``get_logger("load")``: the logger ``feedlot.load``, writing one JSON object per line to stderr
  (Dagster keeps a step's stderr with the run; on ECS/EC2 it goes to CloudWatch Logs).
- ``correlation(cid)``: binds a correlation id to every line logged inside it (a context
  variable: per thread and per task).
- ``log_rejections(logger, {code: count}, **fields)``: one ``rejections`` line per reason code.

Log per object, chunk or partition, never per record.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

SERVICE = "feedlot-dagster"
_CORRELATION: ContextVar[str | None] = ContextVar("feedlot_correlation_id", default=None)
# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, service, correlation_id, the
    ``extra=`` fields, and the exception (type, message, traceback) when there is one."""

    def __init__(self, service: str = SERVICE) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "correlation_id": getattr(record, "correlation_id", None) or _CORRELATION.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
            line["exception_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(line, default=str, ensure_ascii=False)


def get_logger(name: str, stream: Any = None) -> logging.Logger:
    """``feedlot.<name>``, with one JSON handler of its own (added once) and no propagation to
    the root logger (whose handlers would print the line a second time, as text)."""
    logger = logging.getLogger(f"feedlot.{name}")
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    return logger


@contextmanager
def correlation(correlation_id: str | None) -> Iterator[None]:
    """Every line logged inside carries ``correlation_id`` (unless a line sets its own)."""
    token = _CORRELATION.set(correlation_id)
    try:
        yield
    finally:
        _CORRELATION.reset(token)


def log_rejections(
    logger: logging.Logger, rejected_by_code: Mapping[str, int], **fields: Any
) -> None:
    """One ``rejections`` line per reason code (``reason_code``, ``count`` and ``fields``)."""
    for code, count in sorted(rejected_by_code.items()):
        if count:
            logger.info("rejections", extra={**fields, "reason_code": code, "count": int(count)})
