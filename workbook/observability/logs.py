"""One call that configures logging for the workbook and the Azure SDKs, with secrets masked.

`configure_logging` sets a level per workbook component (workbook.esb, workbook.saga, ...) and per SDK
logger (azure.servicebus, its AMQP layer azure.servicebus._pyamqp, azure.core, azure.cosmos), and
writes to the console and to a file, as text or as one JSON object per line. Every handler masks
secrets in every record (workbook.config.masking). Timestamps come from the package clock, so a run
on a VirtualClock logs the same times every run. Calling it again replaces the previous setup, and
`LoggingSetup.restore` puts back what was there before the first call.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import pandas as pd

from workbook.clock import get_clock
from workbook.config import SecretMaskingFilter, mask_secrets, register_secret
from workbook.config.masking import MASK

WORKBOOK_LOGGER = "workbook"
SDK_LOGGER = "azure"
# Short names of the workbook's components and the loggers they log to.
COMPONENTS: Mapping[str, str] = {
    "esb": "workbook.esb",
    "saga": "workbook.saga",
    "eventstore": "workbook.eventstore",
    "servicebus": "workbook.servicebus",
    "config": "workbook.config",
    "flow": "workbook.debug",
}
# Short names of the SDK loggers. The Service Bus SDK logs connection and link states on its AMQP layer.
SDK_LOGGERS: Mapping[str, str] = {
    "servicebus": "azure.servicebus",
    "amqp": "azure.servicebus._pyamqp",
    "core": "azure.core",
    "cosmos": "azure.cosmos",
}
# The flow logger only receives records while the debug mode is on, so it logs everything it gets.
DEFAULT_LEVELS: Mapping[str, str] = {WORKBOOK_LOGGER: "WARNING", COMPONENTS["flow"]: "DEBUG"}
# The AMQP layer has no default, so it follows azure.servicebus unless a level is given for it.
DEFAULT_SDK_LEVELS: Mapping[str, str] = {
    SDK_LOGGERS[name]: "WARNING" for name in ("servicebus", "core", "cosmos")
}
LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
LOG_COLUMNS = ("time", "level", "logger", "message")

# Attributes every LogRecord has. Any other attribute came from `extra=` and goes into the JSON.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# A key or signature setting whose value is anything but the mask.
_UNMASKED_SETTINGS = [
    (f"{name} value", re.compile(rf"(?i)\b{name}\s*=\s*(?!{re.escape(MASK)})[^;\s'\"&]"))
    for name in ("SharedAccessKey", "AccountKey", "sig")
]
_setup_lock = threading.Lock()
_active: LoggingSetup | None = None


class LoggingSettingError(ValueError):
    """Invalid argument of configure_logging: an unknown component or level name."""


class ClockFormatter(logging.Formatter):
    """Text formatter whose timestamp is the package clock's time in ISO 8601, with milliseconds."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return get_clock().now().isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        # Masked again as a whole, because `extra` fields and tracebacks are not part of the message.
        return mask_secrets(super().format(record))


class JsonFormatter(ClockFormatter):
    """One JSON object per record: time, level, logger, message, `extra` fields and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return mask_secrets(json.dumps(entry, default=str, ensure_ascii=False))


@dataclass
class _SavedLogger:
    level: int
    propagate: bool
    handlers: list[logging.Handler]


@dataclass
class LoggingSetup:
    """The handlers and levels one configure_logging call applied, and what they replaced.

    `restore` closes the handlers and puts back each logger's previous level, handlers and propagation.
    """

    levels: dict[str, int]
    file: Path | None
    sdk_file: Path | None
    handlers: list[logging.Handler] = field(default_factory=list)
    _saved: dict[str, _SavedLogger] = field(default_factory=dict, repr=False)

    def restore(self) -> None:
        """Undo this setup. Restoring twice, or a setup already replaced, does nothing more."""
        global _active
        with _setup_lock:
            self._restore_unlocked()
            if _active is self:
                _active = None

    def level_table(self) -> pd.DataFrame:
        """Return each configured logger with its level name, sorted by logger name."""
        rows = sorted((name, logging.getLevelName(level)) for name, level in self.levels.items())
        return pd.DataFrame(rows, columns=["logger", "level"])

    def flush(self) -> None:
        """Flush every handler, so that the log files hold every record logged so far."""
        for handler in self.handlers:
            handler.flush()

    def __enter__(self) -> LoggingSetup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def _restore_unlocked(self) -> None:
        for name, saved in self._saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(saved.level)
            logger.propagate = saved.propagate
            logger.handlers = list(saved.handlers)
        self._saved.clear()
        for handler in self.handlers:
            handler.close()
        self.handlers.clear()


def configure_logging(
    levels: Mapping[str, str | int] | None = None,
    *,
    sdk_levels: Mapping[str, str | int] | None = None,
    console: TextIO | None = sys.stderr,
    console_level: str | int = "INFO",
    file: Path | str | None = None,
    sdk_file: Path | str | None = None,
    json_lines: bool = False,
    secrets: Iterable[str | None] = (),
) -> LoggingSetup:
    """Configure the workbook's and the SDKs' loggers, handlers and formats; return the setup.

    `levels` maps component names (COMPONENTS) or workbook logger names to levels, on top of
    DEFAULT_LEVELS, and `sdk_levels` does the same for SDK_LOGGERS on top of DEFAULT_SDK_LEVELS.
    Records go to `console` (None for none) at `console_level` and above, and to `file`; SDK records go
    to `sdk_file` instead of `file` when it is given. Files are overwritten. `secrets` are masked
    wherever they appear, besides the keys and signatures that masking always finds. A second call
    restores the first one's state before it applies its own, so repeated calls add no handlers.
    Raises LoggingSettingError for an unknown component or level.
    """
    global _active
    resolved = _resolve_levels(levels, COMPONENTS, DEFAULT_LEVELS, WORKBOOK_LOGGER)
    resolved |= _resolve_levels(sdk_levels, SDK_LOGGERS, DEFAULT_SDK_LEVELS, SDK_LOGGER)
    console_threshold = _level_number(console_level, "console")
    for secret in secrets:
        register_secret(secret)

    with _setup_lock:
        if _active is not None:
            # Back to the state from before the first call, so that restore() of this setup returns to it.
            _active._restore_unlocked()
        setup = LoggingSetup(resolved, _path(file), _path(sdk_file))
        setup._saved = _save_loggers([WORKBOOK_LOGGER, SDK_LOGGER, *resolved])
        _apply(setup, console, console_threshold, json_lines)
        _active = setup
    return setup


def active_setup() -> LoggingSetup | None:
    """Return the setup of the last configure_logging call, or None after restore or before any call."""
    return _active


def read_log_lines(path: Path | str) -> pd.DataFrame:
    """Read a JSON-lines log file into a table: LOG_COLUMNS first, then every `extra` field seen.

    Raises ValueError naming the line when a line is not a JSON object, as in a text-format log.
    """
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"line {number} of {path} is not JSON ({error.msg}): configure_logging(json_lines=True) "
                "writes the files this function reads"
            ) from error
    frame = pd.DataFrame(entries)
    extra = [column for column in frame.columns if column not in LOG_COLUMNS]
    return frame.reindex(columns=[*LOG_COLUMNS, *extra])


def line_counts(path: Path | str) -> pd.DataFrame:
    """Count the lines of a JSON-lines log file per logger and level, most lines first."""
    entries = read_log_lines(path)
    counts = entries.groupby(["logger", "level"]).size().rename("lines").reset_index()
    return counts.sort_values(["lines", "logger"], ascending=[False, True], ignore_index=True)


def secret_occurrences(folder: Path | str, secrets: Iterable[str]) -> pd.DataFrame:
    """List every line of the files in `folder` that contains a secret or an unmasked key or signature.

    Each secret is searched as given and URL-encoded. Rows name the file, line number and what was
    found (``secret 1``, ``SharedAccessKey value`` ...), never the secret. An empty table means none.
    """
    needles = []
    for number, secret in enumerate(secrets, start=1):
        needles += [(f"secret {number}", secret), (f"secret {number} URL-encoded", quote(secret, safe=""))]
    rows = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        for line_number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            found = [name for name, needle in needles if needle and needle in line]
            found += [name for name, pattern in _UNMASKED_SETTINGS if pattern.search(line)]
            rows += [(path.name, line_number, name) for name in found]
    return pd.DataFrame(rows, columns=["file", "line", "found"])


# -- applying a setup -------------------------------------------------------------------------------


def _apply(setup: LoggingSetup, console: TextIO | None, console_level: int, json_lines: bool) -> None:
    formatter = JsonFormatter() if json_lines else ClockFormatter(TEXT_FORMAT)
    masking = SecretMaskingFilter()

    def handler_for(handler: logging.Handler, level: int = logging.NOTSET) -> logging.Handler:
        handler.setLevel(level)
        handler.setFormatter(formatter)
        handler.addFilter(masking)
        setup.handlers.append(handler)
        return handler

    console_handler = handler_for(logging.StreamHandler(console), console_level) if console else None
    file_handler = handler_for(_file_handler(setup.file)) if setup.file else None
    sdk_file_handler = handler_for(_file_handler(setup.sdk_file)) if setup.sdk_file else None
    workbook_handlers = [handler for handler in (console_handler, file_handler) if handler]
    sdk_handlers = [handler for handler in (console_handler, sdk_file_handler or file_handler) if handler]

    for root, handlers in ((WORKBOOK_LOGGER, workbook_handlers), (SDK_LOGGER, sdk_handlers)):
        logger = logging.getLogger(root)
        # Without a handler, logging would print warnings to stderr through logging.lastResort.
        logger.handlers = handlers or [logging.NullHandler()]
        logger.propagate = False
    for name, level in setup.levels.items():
        logging.getLogger(name).setLevel(level)


def _file_handler(path: Path) -> logging.FileHandler:
    path.parent.mkdir(parents=True, exist_ok=True)
    return logging.FileHandler(path, mode="w", encoding="utf-8", delay=False)


def _save_loggers(names: Iterable[str]) -> dict[str, _SavedLogger]:
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = _SavedLogger(logger.level, logger.propagate, list(logger.handlers))
    return saved


def _resolve_levels(
    requested: Mapping[str, str | int] | None,
    short_names: Mapping[str, str],
    defaults: Mapping[str, str],
    prefix: str,
) -> dict[str, int]:
    resolved = {name: _level_number(level, name) for name, level in defaults.items()}
    for name, level in (requested or {}).items():
        resolved[_logger_name(name, short_names, prefix)] = _level_number(level, name)
    return resolved


def _logger_name(name: str, short_names: Mapping[str, str], prefix: str) -> str:
    if name in short_names:
        return short_names[name]
    if name == prefix or name.startswith(f"{prefix}."):
        return name
    raise LoggingSettingError(
        f"logger {name!r} is unknown: pass one of {sorted(short_names)} or a logger name under {prefix!r}"
    )


def _level_number(level: str | int, name: str) -> int:
    if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
        return level
    if isinstance(level, str) and level.upper() in LEVEL_NAMES:
        return logging.getLevelNamesMapping()[level.upper()]
    raise LoggingSettingError(
        f"level {level!r} for {name!r} is not a logging level: pass one of {', '.join(LEVEL_NAMES)} "
        "or a level number"
    )


def _path(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)
