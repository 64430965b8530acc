"""Structured logging for every process: JSON lines for machines, readable text on a terminal.

Each record carries the service name, the current OpenTelemetry ``trace_id``/``span_id`` when a
span is active, and the journey's ids when known: from Temporal's ``workflow.logger`` and
``activity.logger`` (their ``temporal_workflow`` / ``temporal_activity`` extras) or from an
explicit ``extra={"journey_id": ...}``. Only the allow-listed id fields below are copied from a
record's extras; anything else a caller passes in ``extra`` is dropped, so a careless
``extra={"patient": ...}`` cannot put PHI in the logs. The message text itself is the caller's
responsibility (log ids, never names or contact details). uvicorn's access log goes through the
same handler (``log_config=None``) with patient link tokens and query strings cut from its paths.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from workflows.ids import WORKFLOW_ID_PREFIX

# Id fields copied from Temporal's log extras; all are ids or counters, never payload data.
_TEMPORAL_FIELDS: Mapping[str, str] = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "workflow_run_id": "run_id",
    "workflow_type": "workflow_type",
    "activity_type": "activity_type",
    "activity_id": "activity_id",
    "attempt": "attempt",
    "task_queue": "task_queue",
    "namespace": "namespace",
    "update_name": "update_name",
    "update_id": "update_id",
}
# Explicit extras a caller may pass (e.g. the API: ``extra={"journey_id": wf_id}``).
ALLOWED_EXTRA_FIELDS = frozenset({"journey_id", "workflow_id", "run_id", "clinic_id", "rule"})
CONTEXT_FIELDS = (
    "trace_id",
    "span_id",
    "journey_id",
    "workflow_id",
    "run_id",
    "workflow_type",
    "activity_type",
    "activity_id",
    "attempt",
    "task_queue",
    "namespace",
    "update_name",
    "update_id",
    "clinic_id",
    "rule",
)
_HANDLER_MARK = "_pore_journey_handler"
_CONTEXT_ATTR = "journey_context"


class JourneyContextFilter(logging.Filter):
    """Attaches ``record.journey_context``: the allow-listed ids and the current trace ids.

    Never drops a record.
    """

    def __init__(self, service_name: str) -> None:
        """Remember the service name every record is stamped with."""
        super().__init__()
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        """Compute the record's context (see the class docstring); always True."""
        context: dict[str, Any] = {"service": self.service_name}
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            context["trace_id"] = format(span_context.trace_id, "032x")
            context["span_id"] = format(span_context.span_id, "016x")
        for extra_name in ("temporal_workflow", "temporal_activity"):
            details = getattr(record, extra_name, None)
            if isinstance(details, Mapping):
                for source, target in _TEMPORAL_FIELDS.items():
                    value = details.get(source)
                    if value is not None:
                        context.setdefault(target, value)
        for name in ALLOWED_EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                context.setdefault(name, value)
        workflow_id = context.get("workflow_id")
        if (
            "journey_id" not in context
            and isinstance(workflow_id, str)
            and workflow_id.startswith(WORKFLOW_ID_PREFIX)
        ):
            context["journey_id"] = workflow_id
        setattr(record, _CONTEXT_ATTR, context)
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    context = getattr(record, _CONTEXT_ATTR, None)
    return dict(context) if isinstance(context, dict) else {}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, the context fields
    present, and ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single JSON line."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_context(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class ReadableFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message [journey_id=... trace_id=...]`` for a terminal."""

    def __init__(self) -> None:
        """Use a short time format."""
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """Render the record, then the context ids that matter when reading a terminal."""
        text = super().format(record)
        context = _context(record)
        shown = [
            f"{name}={context[name]}"
            for name in ("journey_id", "activity_type", "trace_id")
            if name in context
        ]
        if shown:
            first, _, rest = text.partition("\n")
            text = f"{first} [{' '.join(shown)}]" + (f"\n{rest}" if rest else "")
        return text


# The patient's page carries its link token in the path (/p/<token>/...); query strings may
# carry one too (?token=...). Both are credentials to a patient's journey.
_PATIENT_PATH = re.compile(r"^/p/[^/?]+")
# A private calendar feed link is a credential too (api/routes/calendar.py).
_FEED_PATH = re.compile(r"^/calendar/feeds/[^/?]+")
ACCESS_LOGGER = "uvicorn.access"


class AccessLogRedactor(logging.Filter):
    """Rewrites uvicorn's access-log path: ``/p/<token>`` → ``/p/{token}``, query dropped.

    uvicorn logs ``(client, method, path with query, http version, status)`` as the record's
    args; the record is changed in place and never dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the path argument when the record has uvicorn's access-log shape."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = _PATIENT_PATH.sub("/p/{token}", args[2].split("?", 1)[0])
            path = _FEED_PATH.sub("/calendar/feeds/{token}", path)
            record.args = (args[0], args[1], path, args[3], args[4])
        return True


def configure_logging(
    service_name: str,
    level: str = "INFO",
    *,
    stream: TextIO | None = None,
    json_lines: bool | None = None,
) -> None:
    """Route the root logger to one structured handler (idempotent).

    Args:
        service_name: Stamped on every record as ``service``.
        level: Root level name (``LOG_LEVEL``), e.g. ``"INFO"``.
        stream: Where to write; standard error by default.
        json_lines: Force JSON (True) or text (False); by default JSON unless ``stream`` is a
            TTY.

    Calling again replaces the handler this function installed (other handlers, e.g. pytest's
    capture, are left alone).

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    target = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(target, "isatty") and target.isatty())
    handler = logging.StreamHandler(target)
    handler.addFilter(JourneyContextFilter(service_name))
    handler.setFormatter(JsonLinesFormatter() if json_lines else ReadableFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # uvicorn's own logging config (applied by any uvicorn.Config built with its default
    # log_config earlier in this process: the product passes log_config=None) gives its loggers their own handlers
    # and stops them propagating: its lines would then bypass our handler, its redaction and
    # its JSON. Route them through the root like every other logger.
    for name in ("uvicorn", "uvicorn.error", ACCESS_LOGGER):
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, AccessLogRedactor) for f in access.filters):
        access.addFilter(AccessLogRedactor())
