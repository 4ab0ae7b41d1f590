"""Errors of dead-letter processing, all under `DeadLetterError`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbook.esb.errors import EsbError

if TYPE_CHECKING:
    from workbook.esb.deadletter.processor import ProcessingReport

# -- errors ---------------------------------------------------------------------------------------


class DeadLetterError(EsbError):
    """Root of the errors of dead-letter processing."""


class DeadLetterSettingError(DeadLetterError, ValueError):
    """Error for an invalid argument, such as an unknown disposition or an empty dead-letter reason."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}.")


class ArchiveUnreadableError(DeadLetterError):
    """Error for an archive file that SQLite cannot open or read, or whose tables have other columns."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        if "locked" in detail or "busy" in detail:
            advice = "Another process holds the file: close it there, or retry later."
        else:
            advice = (
                "It is not a dead-letter archive or it is damaged: move it aside (keep it for inspection) "
                "and open the archive again, which creates a new file at that path."
            )
        super().__init__(f"dead-letter archive {path} cannot be read: {detail}. {advice}")


class ArchiveWriteError(DeadLetterError):
    """Error for a record that the archive could not commit, so nothing of that record is stored."""

    def __init__(self, path: Path, entity: str, sequence_number: int, detail: str) -> None:
        self.path = path
        self.entity = entity
        self.sequence_number = sequence_number
        self.detail = detail
        super().__init__(
            f"dead-letter archive {path} did not store message {sequence_number} of {entity!r}: {detail}. "
            "Make the file writable and free (no other process holding a write lock), then process again."
        )


class DeadLetterPassError(DeadLetterError):
    """Error for a pass that stopped because receiving failed. ``report`` lists the messages handled."""

    def __init__(self, report: ProcessingReport, error: Exception) -> None:
        self.report = report
        self.error = error
        super().__init__(
            f"the dead-letter pass over {report.entity!r} stopped after {report.read} message(s) because "
            f"receiving failed: {type(error).__name__}: {error}. Messages not yet handled stay in the "
            "dead-letter queue; check the connection and process again."
        )
