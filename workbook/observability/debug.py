"""The debug mode: with WORKBOOK_DEBUG=1, each stage logs the message it handles and each saga transition.

The pipeline and the orchestrator call `trace_message` and `trace_transitions` at their stages. Both
return at once while the mode is off. Otherwise they log one DEBUG record on the `workbook.debug`
logger with the message id, type, correlation id, a payload summary and the application properties
as `extra` fields, so a JSON log (workbook.observability.logs) contains them as fields. The variable is
read at every call, so the mode can be switched while a process runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from workbook.config import mask_secrets

DEBUG_VARIABLE = "WORKBOOK_DEBUG"
FLOW_LOGGER = "workbook.debug"
ON_VALUES = frozenset({"1", "true", "yes", "on"})
OFF_VALUES = frozenset({"", "0", "false", "no", "off"})
PAYLOAD_PREVIEW_CHARACTERS = 60
FLOW_COLUMNS = ("stage", "message_id", "message_type", "correlation_id", "payload", "properties", "detail")

logger = logging.getLogger(FLOW_LOGGER)


class DebugModeError(ValueError):
    """Error for a WORKBOOK_DEBUG value that is neither on nor off."""


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Tell whether WORKBOOK_DEBUG switches the debug mode on. An unset variable means off.

    Raises DebugModeError for a value outside ON_VALUES and OFF_VALUES (case is ignored).
    """
    value = (os.environ if environ is None else environ).get(DEBUG_VARIABLE, "").strip().lower()
    if value in ON_VALUES:
        return True
    if value in OFF_VALUES:
        return False
    raise DebugModeError(
        f"{DEBUG_VARIABLE}={value!r} is not a switch value: set it to 1 (or true, yes, on) to turn the "
        "debug mode on, or to 0 (or false, no, off), or unset it, to turn it off"
    )


@contextmanager
def debug_mode(enabled: bool = True) -> Iterator[None]:
    """Set WORKBOOK_DEBUG for the duration of a `with` block, then put back its previous value."""
    previous = os.environ.get(DEBUG_VARIABLE)
    os.environ[DEBUG_VARIABLE] = "1" if enabled else "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DEBUG_VARIABLE, None)
        else:
            os.environ[DEBUG_VARIABLE] = previous


def trace_message(stage: str, message: Any, **detail: Any) -> None:
    """Log `message` at `stage` when the debug mode is on; `detail` adds fields such as destinations.

    `message` may be an SDK message (sent or received), a RoutableMessage, a TransformResult or any
    object with some of message_id, subject, correlation_id, body and application_properties. The type
    is the subject, else the document type, else the content type. `message_id`, `message_type` and
    `correlation_id` in `detail` override the values read from the message.
    """
    if not debug_enabled():
        return

    fields = describe_message(message)
    for key in ("message_id", "message_type", "correlation_id"):
        if key in detail:
            fields[key] = detail.pop(key)
    fields["detail"] = _detail_text(detail)
    logger.debug(
        "%s: message %s (%s) correlation %s, %s, properties %s%s",
        stage,
        fields["message_id"],
        fields["message_type"],
        fields["correlation_id"],
        fields["payload"],
        fields["properties"],
        f"; {fields['detail']}" if fields["detail"] else "",
        extra={"stage": stage, **fields},
    )


def trace_transitions(transitions: Iterable[Any]) -> None:
    """Log saga status transitions (saga_id, previous, status, step, reason) when the debug mode is on."""
    if not debug_enabled():
        return

    for transition in transitions:
        stage = f"saga {transition.previous or 'new'} -> {transition.status}"
        logger.debug(
            "%s: saga %s at step %s (%s)",
            stage,
            transition.saga_id,
            transition.step,
            transition.reason,
            extra={
                "stage": stage,
                "message_id": None,
                "message_type": "saga transition",
                "correlation_id": transition.saga_id,
                "payload": "",
                "properties": {},
                "detail": f"step {transition.step}: {transition.reason}",
            },
        )


def describe_message(message: Any) -> dict[str, Any]:
    """Return the traced fields of a message: id, type, correlation id, payload summary, properties."""
    properties = getattr(message, "application_properties", None)
    if properties is None:
        properties = getattr(message, "properties", None) or {}
    body = getattr(message, "body", None)
    # A canonical message (RoutableMessage) carries its type only in its body.
    body_type = body.get("document_type") if isinstance(body, Mapping) else None
    return {
        "message_id": _text(getattr(message, "message_id", None)),
        "message_type": _text(
            getattr(message, "subject", None)
            or getattr(message, "document_type", None)
            or body_type
            or getattr(message, "content_type", None)
        ),
        "correlation_id": _text(getattr(message, "correlation_id", None)),
        "payload": summarize_payload(body),
        "properties": {_text(key): _text(value) for key, value in dict(properties).items()},
    }


def summarize_payload(body: Any) -> str:
    """Summarize a body as its size and a masked one-line preview, such as `812 bytes: <?xml ...`."""
    if body is None:
        return "no body"
    if isinstance(body, Mapping):
        return f"JSON object with keys {', '.join(sorted(map(str, body)))}"
    if isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, bytes | bytearray):
        data = bytes(body)
    else:
        # The SDK returns a body as an iterator of sections, and reading it consumes it.
        data = b"".join(bytes(section) for section in body)
    preview = " ".join(data[:PAYLOAD_PREVIEW_CHARACTERS].decode("utf-8", errors="replace").split())
    return mask_secrets(f"{len(data)} bytes: {preview}")


def flow_table(log_path: Path | str, message_id: str | None = None) -> pd.DataFrame:
    """Return the debug-mode records of a JSON-lines log, in order, for one message id or for all.

    Raises ValueError when the file is not a JSON-lines log (see read_log_lines).
    """
    from workbook.observability.logs import read_log_lines

    entries = read_log_lines(log_path)
    if "stage" not in entries.columns:
        return pd.DataFrame(columns=list(FLOW_COLUMNS))
    flow = entries[entries["logger"] == FLOW_LOGGER]
    if message_id is not None:
        flow = flow[flow["message_id"] == message_id]
    return flow.reindex(columns=list(FLOW_COLUMNS)).reset_index(drop=True)


def _detail_text(detail: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in detail.items() if value not in (None, ""))


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
