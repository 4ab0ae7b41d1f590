"""Errors raised by the saga package, all under one root class `SagaError`."""

from __future__ import annotations

from typing import Any

MAX_SHOWN_VALUE = 80  # characters of a value that an error message quotes


class SagaError(Exception):
    """Root of every error raised by `workbook.saga`."""


class SagaDefinitionError(SagaError, ValueError):
    """Error for an invalid saga definition, step, retry policy or setting; names the field and its value."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid {name} {value!r}: expected {expected}.")


class InvalidTransitionError(SagaError):
    """Error for a status change that the saga state machine does not allow."""

    def __init__(self, saga_id: str, current: str, requested: str) -> None:
        self.saga_id = saga_id
        self.current = current
        self.requested = requested
        super().__init__(
            f"saga {saga_id!r} cannot move from {current} to {requested}: only RUNNING -> COMPLETED, "
            "RUNNING -> COMPENSATING, RUNNING -> TIMEOUT, TIMEOUT -> COMPENSATING, "
            "COMPENSATING -> COMPENSATED and COMPENSATING -> FAILED are allowed."
        )


class SagaNotFoundError(SagaError, KeyError):
    """Error for a saga id that the store does not contain."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"saga {saga_id!r} is not in the saga store: start it first, or check the id.")

    def __str__(self) -> str:
        return str(self.args[0])


class SagaExistsError(SagaError):
    """Error for starting a saga with an id that the store already contains."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"saga {saga_id!r} already exists: use a new saga id, or load the existing saga.")


class SagaConcurrencyError(SagaError):
    """Error for a save whose expected version is not the saga record's version in the store.

    Another handler saved the saga first: reload it, decide again on its current state, and retry.
    """

    def __init__(self, saga_id: str, expected: int, actual: int) -> None:
        self.saga_id = saga_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"save of saga {saga_id!r} rejected: expected version {expected}, but the store has version "
            f"{actual}. Reload the saga, decide again on its current state, and retry."
        )


class SagaStoreUnavailableError(SagaError):
    """Error for a saga store backend that failed or timed out; `operation` names what the store was doing."""

    def __init__(self, message: str, *, operation: str, saga_id: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.saga_id = saga_id


class SagaMessageError(SagaError):
    """Error for a command, reply or deadline message that lacks a property the saga protocol needs."""

    def __init__(self, message_id: str | None, missing: str) -> None:
        self.message_id = message_id
        self.missing = missing
        super().__init__(
            f"message {message_id!r} has no {missing!r} application property, so it cannot be matched to a "
            "saga step: send it with workbook.saga.messages.command_message or reply_message."
        )


class InvalidSagaMessageError(SagaError, ValueError):
    """Error for a saga message whose property, content type or body the saga protocol cannot read.

    `name` is the property (or "content type", "body"), `value` what the message carried.
    """

    def __init__(self, message_id: str | None, name: str, value: Any, expected: str) -> None:
        self.message_id = message_id
        self.name = name
        self.value = value
        quoted = repr(value) if len(repr(value)) <= MAX_SHOWN_VALUE else f"{repr(value)[:MAX_SHOWN_VALUE]}..."
        super().__init__(
            f"message {message_id!r} has the {name} {quoted}, but the saga protocol expects {expected}: "
            "send it with workbook.saga.messages.command_message or reply_message."
        )
