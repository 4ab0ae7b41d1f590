"""Masking of secrets in text and log records, so keys never reach an output, a log line or an error."""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse

MASK = "***"

# Shorter values are too common in ordinary text to replace everywhere they occur.
MIN_SECRET_LENGTH = 4

# Each pattern keeps the setting's name (group 1) and replaces its value. A SAS token contains spaces,
# so its value runs to the next ';', quote or line end, while the other values end at whitespace too.
_SECRET_SETTINGS = [
    re.compile(r"(?i)(\bSharedAccessKey\s*=\s*)[^;\s'\"]+"),
    re.compile(r"(?i)(\bSharedAccessSignature\s*=\s*)[^;'\"\r\n]+"),
    re.compile(r"(?i)(\bAccountKey\s*=\s*)[^;\s'\"]+"),
    re.compile(r"(?i)(\bsig=)[^&;\s'\"]+"),
]

# A run of 20 or more base64 characters that mixes letters and digits has the shape of a key or a
# signature. Host names, key names, flags and targets rarely contain one, so such a value is most likely
# a key pasted into the wrong setting. A host name that does contain one is shown by its length only.
_KEY_SHAPED_RUN = re.compile(r"[A-Za-z0-9+/]{20,}")

_registry_lock = threading.Lock()
_registered: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask `value` (and its URL-encoded form) wherever `mask_secrets` runs from now on.

    None, empty values and values shorter than MIN_SECRET_LENGTH characters are ignored.
    """
    if not value or len(value) < MIN_SECRET_LENGTH:
        return

    global _registered_pattern
    with _registry_lock:
        _registered.update({value, urllib.parse.quote(value, safe="")})
        # Longest first, so a secret that contains another one is masked whole.
        alternatives = sorted(_registered, key=len, reverse=True)
        _registered_pattern = re.compile("|".join(re.escape(secret) for secret in alternatives))


def looks_like_key(value: str) -> bool:
    """Tell whether `value` contains a run of 20 or more base64 characters with both letters and digits."""
    return any(
        re.search(r"[0-9]", run) and re.search(r"[A-Za-z]", run) for run in _KEY_SHAPED_RUN.findall(value)
    )


def quote_value(value: str, *, limit: int | None = None) -> str:
    """Return `value` quoted for an error message (its first `limit` characters), or only its length
    when it looks like a key, because a key pasted into another setting must not reach the message.
    """
    if looks_like_key(value):
        return f"(a value of {len(value)} characters, not shown because it looks like a key)"
    return repr(value if limit is None else value[:limit])


def mask_secrets(text: str) -> str:
    """Return `text` with key, signature and registered secret values replaced by ***."""
    with _registry_lock:
        pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)

    for setting in _SECRET_SETTINGS:
        text = setting.sub(rf"\g<1>{MASK}", text)
    return text


class SecretMaskingFilter(logging.Filter):
    """Logging filter that formats each record's message, masks secrets in it, and always keeps the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A message that cannot be formatted must still not leak its arguments.
            _mask_unformatted(record)
        else:
            record.msg = mask_secrets(message)
            record.args = ()

        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


def install_secret_masking(logger: logging.Logger | None = None) -> SecretMaskingFilter:
    """Add a SecretMaskingFilter to `logger` and its handlers, and return the filter.

    The default is the root logger, its handlers and logging.lastResort. Installing twice adds nothing.

    NOTE: handlers added later do not get the filter, so call this again after configuring logging.
    """
    target = logging.getLogger() if logger is None else logger
    filterers: list[logging.Filterer] = [target, *target.handlers]
    if logger is None and logging.lastResort is not None:
        filterers.append(logging.lastResort)

    installed = _find_filter(filterers) or SecretMaskingFilter()
    for filterer in filterers:
        if installed not in filterer.filters:
            filterer.addFilter(installed)
    return installed


def _find_filter(filterers: list[logging.Filterer]) -> SecretMaskingFilter | None:
    for filterer in filterers:
        for existing in filterer.filters:
            if isinstance(existing, SecretMaskingFilter):
                return existing
    return None


def _mask_unformatted(record: logging.LogRecord) -> None:
    # logging prints the message and arguments when formatting fails, so both are masked as text.
    record.msg = mask_secrets(str(record.msg))
    if isinstance(record.args, dict):
        record.args = {key: mask_secrets(str(value)) for key, value in record.args.items()}
    elif record.args:
        record.args = tuple(mask_secrets(str(value)) for value in record.args)
