"""Dead-letter processing: read a dead-letter queue, classify each message, then resubmit or archive it.

The processor sends the resubmission or commits the archive record first, and completes the original
only then. If completing fails, the original stays in the dead-letter queue for the next pass, so
handling is at-least-once. The archive records both actions by entity and sequence number, so a repeat
stores nothing twice, and a repeated resubmission keeps its message id, which duplicate detection drops.

Modules: `reasons` (reasons and their classification), `reader` (reading, releasing locks and message
contents), `archive` (the SQLite archive), `processor` (the processing pass) and `errors`. The settings
(timeouts and limits) are importable from here too, but are not part of `__all__`.
"""

from workbook.esb.deadletter.archive import ARCHIVE_BUSY_TIMEOUT_SECONDS as ARCHIVE_BUSY_TIMEOUT_SECONDS
from workbook.esb.deadletter.archive import (
    ARCHIVE_COLUMNS,
    ArchivedMessage,
    DeadLetterArchive,
    Resubmission,
)
from workbook.esb.deadletter.errors import (
    ArchiveUnreadableError,
    ArchiveWriteError,
    DeadLetterError,
    DeadLetterPassError,
    DeadLetterSettingError,
)
from workbook.esb.deadletter.processor import (
    REPORT_COLUMNS,
    Action,
    DeadLetterProcessor,
    Outcome,
    ProcessingReport,
)
from workbook.esb.deadletter.reader import CREDIT_PROBE_WAIT_SECONDS as CREDIT_PROBE_WAIT_SECONDS
from workbook.esb.deadletter.reader import (
    DEAD_LETTER_COLUMNS,
    ORIGINAL_MESSAGE_ID,
    ORIGINAL_SEQUENCE_NUMBER,
    RESUBMISSION_COUNT,
    DeadLetterBatch,
    PeekedDeadLetters,
    application_properties,
    dead_letter_frame,
    entity_path,
    message_body,
    open_dead_letter_receiver,
    peek_dead_letters,
    read_dead_letters,
    release_locks,
    resubmission_count,
    resubmission_message,
    resubmission_message_id,
)
from workbook.esb.deadletter.reader import DEAD_LETTER_PROPERTIES as DEAD_LETTER_PROPERTIES
from workbook.esb.deadletter.reader import DEFAULT_MAX_MESSAGES as DEFAULT_MAX_MESSAGES
from workbook.esb.deadletter.reader import MAX_MESSAGE_ID_LENGTH as MAX_MESSAGE_ID_LENGTH
from workbook.esb.deadletter.reader import RECEIVE_BATCH_SIZE as RECEIVE_BATCH_SIZE
from workbook.esb.deadletter.reader import RECEIVE_WAIT_SECONDS as RECEIVE_WAIT_SECONDS
from workbook.esb.deadletter.reader import RETURN_WAIT_SECONDS as RETURN_WAIT_SECONDS
from workbook.esb.deadletter.reader import SDK_TIMEOUT_SECONDS as SDK_TIMEOUT_SECONDS
from workbook.esb.deadletter.reasons import (
    DEAD_LETTER_CLASSIFICATION,
    MALFORMED_DOCUMENT,
    MAX_DELIVERY_COUNT_EXCEEDED,
    NO_ROUTE_MATCHED,
    PIPELINE_REASONS,
    SCHEMA_VALIDATION_FAILED,
    TRANSFORMATION_FAILED,
    TRANSIENT_DEPENDENCY_FAILURE,
    TTL_EXPIRED,
    UNSAFE_XML,
    UNSUPPORTED_CONTENT_TYPE,
    Disposition,
    classify_reason,
    dead_letter,
    normalize_classification,
)
from workbook.esb.deadletter.reasons import MAX_DEAD_LETTER_TEXT_LENGTH as MAX_DEAD_LETTER_TEXT_LENGTH

__all__ = [
    "ARCHIVE_COLUMNS",
    "DEAD_LETTER_CLASSIFICATION",
    "DEAD_LETTER_COLUMNS",
    "MALFORMED_DOCUMENT",
    "MAX_DELIVERY_COUNT_EXCEEDED",
    "NO_ROUTE_MATCHED",
    "ORIGINAL_MESSAGE_ID",
    "ORIGINAL_SEQUENCE_NUMBER",
    "PIPELINE_REASONS",
    "REPORT_COLUMNS",
    "RESUBMISSION_COUNT",
    "SCHEMA_VALIDATION_FAILED",
    "TRANSFORMATION_FAILED",
    "TRANSIENT_DEPENDENCY_FAILURE",
    "TTL_EXPIRED",
    "UNSAFE_XML",
    "UNSUPPORTED_CONTENT_TYPE",
    "Action",
    "ArchiveUnreadableError",
    "ArchiveWriteError",
    "ArchivedMessage",
    "DeadLetterArchive",
    "DeadLetterBatch",
    "DeadLetterError",
    "DeadLetterPassError",
    "DeadLetterProcessor",
    "DeadLetterSettingError",
    "Disposition",
    "Outcome",
    "PeekedDeadLetters",
    "ProcessingReport",
    "Resubmission",
    "application_properties",
    "classify_reason",
    "dead_letter",
    "dead_letter_frame",
    "entity_path",
    "message_body",
    "normalize_classification",
    "open_dead_letter_receiver",
    "peek_dead_letters",
    "read_dead_letters",
    "release_locks",
    "resubmission_count",
    "resubmission_message",
    "resubmission_message_id",
]
