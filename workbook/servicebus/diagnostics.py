"""The SDK's own diagnostic logging, captured with secrets masked, for one operation at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from workbook.config import SecretMaskingFilter, ServiceBusConnectionString

SDK_LOGGER = "azure.servicebus"
_FRAME_LINE = r"^(?P<direction>->|<-) (?P<frame>[A-Za-z]+Frame)\((?P<detail>.*)\)$"
_OUTCOME = r"state=\{'(accepted|rejected|modified|released)'"
_SUMMARIZED_FRAMES = ("AttachFrame", "TransferFrame", "DispositionFrame", "DetachFrame")
SEND_TIMEOUT_SECONDS = 10.0


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[tuple[str, str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.addFilter(SecretMaskingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.name, record.getMessage()))


@contextmanager
def capture_sdk_log(level: int = logging.DEBUG) -> Iterator[list[tuple[str, str, str]]]:
    """Collect the SDK's log records as (level, logger, masked message) while the block runs.

    The records do not reach other handlers meanwhile, so a notebook's stderr stays clean.
    """
    lines: list[tuple[str, str, str]] = []
    handler = _ListHandler(lines)
    sdk_logger = logging.getLogger(SDK_LOGGER)
    saved = (sdk_logger.level, sdk_logger.propagate)
    sdk_logger.setLevel(level)
    sdk_logger.propagate = False
    sdk_logger.addHandler(handler)
    try:
        yield lines
    finally:
        sdk_logger.removeHandler(handler)
        sdk_logger.setLevel(saved[0])
        sdk_logger.propagate = saved[1]


def trace_one_send(
    connection: ServiceBusConnectionString, queue: str, message: ServiceBusMessage
) -> pd.DataFrame:
    """Send one message with the SDK's frame-level logging on; return the masked log as a table.

    A client of its own is used because `logging_enable` is fixed when a client is created.
    """
    with (
        capture_sdk_log() as lines,
        ServiceBusClient.from_connection_string(
            connection.to_sdk_string(), logging_enable=True, retry_total=0
        ) as client,
        client.get_queue_sender(queue) as sender,
    ):
        sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)
    return pd.DataFrame(lines, columns=["level", "logger", "message"])


def summarize_frames(log: pd.DataFrame) -> pd.DataFrame:
    """Count the AMQP frames of a captured SDK log by direction and type, with the last outcome of each.

    Link names and delivery tags differ on every run; this summary does not, so a notebook can show it.
    """
    frames = log["message"].str.extract(_FRAME_LINE).dropna()
    frames = frames[frames["frame"].isin(_SUMMARIZED_FRAMES)]
    frames["direction"] = frames["direction"].map({"->": "client to service", "<-": "service to client"})
    frames["outcome"] = frames["detail"].str.extract(_OUTCOME, expand=False).fillna("")
    summary = frames.groupby(["direction", "frame"], sort=False).agg(
        count=("frame", "size"), last_outcome=("outcome", "last")
    )
    return summary.reset_index()
