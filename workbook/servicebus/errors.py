"""Errors of the local Service Bus emulator, each mapped to the AMQP condition Service Bus sends."""

from __future__ import annotations


class ServiceBusEmulatorError(Exception):
    """Root of the emulator's errors. ``condition`` is the AMQP error condition sent to the client."""

    condition = "amqp:internal-error"


class EmulatorConfigError(ServiceBusEmulatorError):
    """The entity configuration file is missing or invalid."""


class EntityNotFoundError(ServiceBusEmulatorError):
    """A client addressed a queue the emulator does not have."""

    condition = "amqp:not-found"

    def __init__(self, entity: str, known: list[str]) -> None:
        self.entity = entity
        self.known = known
        listed = ", ".join(known) if known else "none"
        super().__init__(
            f"The messaging entity {entity!r} could not be found. "
            f"Known queues: {listed}. Add it to the emulator's Config.json or fix the name."
        )


class EntityAlreadyExistsError(ServiceBusEmulatorError):
    """A create request named a queue, topic, subscription or rule that already exists."""

    condition = "com.microsoft:entity-already-exists"

    def __init__(self, entity: str) -> None:
        self.entity = entity
        super().__init__(
            f"The messaging entity {entity!r} already exists (names ignore case). "
            "Choose another name, or delete the existing entity first."
        )


class MessageLockLostError(ServiceBusEmulatorError):
    """A settlement or lock renewal named a lock that expired or was never held."""

    condition = "com.microsoft:message-lock-lost"

    def __init__(self, lock_token: str) -> None:
        self.lock_token = lock_token
        super().__init__(
            f"The lock {lock_token} is not held: it expired or the message was already settled. "
            "Receive the message again; renew locks that must outlive the lock duration."
        )


class InvalidOperationError(ServiceBusEmulatorError):
    """An operation the entity's settings forbid, such as a send without SessionId to a session queue."""

    condition = "amqp:not-allowed"


class SessionCannotBeLockedError(ServiceBusEmulatorError):
    """The requested session is locked by another receiver."""

    condition = "com.microsoft:session-cannot-be-locked"


class NoSessionAvailableError(ServiceBusEmulatorError):
    """A receiver asked for the next available session and no unlocked session has messages."""

    condition = "com.microsoft:timeout"


class SessionLockLostError(ServiceBusEmulatorError):
    """A session operation named a session whose lock expired or is held by another receiver."""

    condition = "com.microsoft:session-lock-lost"


class InvalidRequestError(ServiceBusEmulatorError):
    """A management request lacks a field or carries an invalid one."""

    condition = "amqp:invalid-field"


class MessageNotFoundError(ServiceBusEmulatorError):
    """No deferred message has the requested sequence number."""

    condition = "com.microsoft:message-not-found"

    def __init__(self, entity: str, sequence_number: int) -> None:
        self.entity = entity
        self.sequence_number = sequence_number
        super().__init__(
            f"No deferred message with sequence number {sequence_number} in {entity!r}. "
            "Use the sequence number that receive_messages returned before you deferred the message."
        )


class MessageTooLargeError(ServiceBusEmulatorError):
    """A message exceeded the entity's maximum size."""

    condition = "amqp:link:message-size-exceeded"

    def __init__(self, entity: str, size: int, limit: int) -> None:
        self.entity = entity
        self.size = size
        self.limit = limit
        super().__init__(
            f"The message of {size} bytes exceeds the limit of {limit} bytes of {entity!r}. "
            "Send the payload to storage and put its reference in the message (claim check)."
        )


class UnsupportedOperationError(ServiceBusEmulatorError):
    """A client asked for an operation this emulator version does not implement."""

    condition = "amqp:not-implemented"
