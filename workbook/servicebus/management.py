"""Request/response nodes of the emulator: ``$cbs`` (token put) and ``<entity>/$management``.

Requests carry the operation in the application property ``operation``; responses carry
``statusCode`` (``status-code`` on ``$cbs``) and a correlation id equal to the request's message id,
which is how the SDK matches them.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qs, quote_plus

from proton import Array, Data, Message, symbol

from workbook.servicebus import codec
from workbook.servicebus.engine import ServiceBusEngine
from workbook.servicebus.errors import InvalidRequestError, MessageLockLostError, ServiceBusEmulatorError

logger = logging.getLogger(__name__)

CBS_NODE = "$cbs"
ARGUMENT_ERROR = "com.microsoft:argument-error"
MANAGEMENT_SUFFIX = "/$management"


@dataclass(frozen=True)
class TokenValidator:
    """Check the SAS tokens that clients put on ``$cbs`` against the emulator's key.

    A token signed with another key or key name gets status 401, as on Service Bus. With
    ``key`` None every token is accepted (Microsoft's emulator accepts any token too).
    """

    key_name: str
    key: str | None

    def __repr__(self) -> str:
        return f"TokenValidator(key_name={self.key_name!r}, key={'***' if self.key else None})"

    def check(self, token: str) -> str | None:
        """Return None when the token is valid, else the reason it is not."""
        # The SDK labels SAS tokens "jwt" as often as "servicebus.windows.net:sastoken", so the token's
        # own prefix decides. A real JWT (Entra ID) cannot be checked without the identity provider.
        if self.key is None or not token.startswith("SharedAccessSignature "):
            return None

        fields = {name: values[0] for name, values in parse_qs(token.split(" ", 1)[1]).items()}
        if fields.get("skn") != self.key_name:
            known = self.key_name
            return f"unknown SharedAccessKeyName {fields.get('skn')!r}: the emulator's key name is {known!r}"
        try:
            expiry = int(fields.get("se", ""))
        except ValueError:
            return f"the token's expiry se={fields.get('se')!r} is not a number of seconds since 1970"
        if expiry < time.time():
            return "the token has expired"

        signed = f"{quote_plus(fields.get('sr', ''))}\n{fields.get('se', '')}".encode()
        expected = b64encode(hmac.new(self.key.encode(), signed, sha256).digest()).decode()
        if not hmac.compare_digest(expected, fields.get("sig", "")):
            return "the signature does not match the emulator's SharedAccessKey"
        return None


class ManagementNode:
    """Serve ``$cbs`` and every ``<entity>/$management`` request against the engine."""

    def __init__(self, engine: ServiceBusEngine, tokens: TokenValidator) -> None:
        self.engine = engine
        self.tokens = tokens
        self._operations = {
            "com.microsoft:peek-message": self._peek,
            "com.microsoft:renew-lock": self._renew_lock,
            "com.microsoft:update-disposition": self._update_disposition,
            "com.microsoft:schedule-message": self._schedule,
            "com.microsoft:cancel-scheduled-message": self._cancel_scheduled,
            "com.microsoft:receive-by-sequence-number": self._receive_by_sequence_number,
            "com.microsoft:get-session-state": self._get_session_state,
            "com.microsoft:set-session-state": self._set_session_state,
            "com.microsoft:renew-session-lock": self._renew_session_lock,
            "com.microsoft:get-message-sessions": self._get_message_sessions,
        }

    @staticmethod
    def is_node(address: str) -> bool:
        """Tell whether an address names a request/response node rather than a queue."""
        lowered = address.lower()
        return lowered == CBS_NODE or lowered.endswith(MANAGEMENT_SUFFIX)

    def handle(self, address: str, request: Message) -> Message:
        """Execute one request and build its response."""
        properties = {str(k): v for k, v in (request.properties or {}).items()}
        operation = str(properties.get("operation", ""))
        if address.lower() == CBS_NODE:
            return self._put_token(request, properties)

        entity = address[: -len(MANAGEMENT_SUFFIX)]
        handler = self._operations.get(operation)
        if handler is None:
            return _response(
                request, 501, f"operation {operation!r} is not supported by this emulator version"
            )
        try:
            status, body = handler(entity, request.body or {})
        except MessageLockLostError as error:
            return _response(request, 410, str(error), condition=error.condition)
        except ServiceBusEmulatorError as error:
            status_code = _STATUS_BY_CONDITION.get(error.condition, 500)
            return _response(request, status_code, str(error), condition=error.condition)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            # A field of the wrong type (a text sequence number, a lock token that is no UUID) is the
            # client's mistake: it gets 400, and the reactor goes on serving everyone else.
            logger.info("rejected a malformed %s request to %s: %s", operation, entity, error)
            description = f"invalid field in the {operation} request: {error}"
            return _response(request, 400, description, condition=ARGUMENT_ERROR)
        return _response(request, status, "", body=body)

    # -- $cbs -----------------------------------------------------------------------------------

    def _put_token(self, request: Message, properties: dict[str, Any]) -> Message:
        token = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        problem = self.tokens.check(token)
        if problem:
            logger.info("rejected a token for %s: %s", properties.get("name"), problem)
            return _response(request, 401, f"Unauthorized: {problem}", cbs=True)
        return _response(request, 202, "Accepted", cbs=True)

    # -- operations -----------------------------------------------------------------------------

    def _peek(self, entity: str, body: dict) -> tuple[int, Any]:
        values = _string_keys(body)
        start = int(values.get("from-sequence-number", 1))
        count = int(values.get("message-count", 1))
        session_id = values.get("session-id")
        session = (
            None
            if session_id is None
            else (session_id.decode() if isinstance(session_id, bytes) else str(session_id))
        )
        peeked = self.engine.peek(entity, start, count, session_id=session)
        if not peeked:
            return 204, None
        return 200, {"messages": [{"message": delivery} for _, delivery in peeked]}

    def _renew_lock(self, entity: str, body: dict) -> tuple[int, Any]:
        tokens = _lock_tokens(_string_keys(body))
        expirations = [codec.to_timestamp(self._wall(self.engine.renew_lock(token))) for token in tokens]
        return 200, {"expirations": Array(Data.NULL, Data.TIMESTAMP, *expirations)}

    def _update_disposition(self, entity: str, body: dict) -> tuple[int, Any]:
        values = _string_keys(body)
        status = str(values.get("disposition-status", ""))
        for token in _lock_tokens(values):
            if status == "completed":
                self.engine.complete(token)
            elif status == "abandoned":
                self.engine.abandon(token)
            elif status == "suspended":
                reason = values.get("deadletter-reason")
                description = values.get("deadletter-description")
                self.engine.dead_letter(token, reason, description)
            elif status == "defered":  # sic: the operation's own spelling
                self.engine.defer(token)
            else:
                from workbook.servicebus.errors import UnsupportedOperationError

                raise UnsupportedOperationError(
                    f"disposition {status!r} is not supported by this emulator version"
                )
        return 200, {}

    def _schedule(self, entity: str, body: dict) -> tuple[int, Any]:
        entries = _string_keys(body).get("messages") or []
        raws = [_binary(_string_keys(entry).get("message")) for entry in entries]
        numbers = self.engine.schedule(entity, raws)
        return 200, {"sequence-numbers": Array(Data.NULL, Data.LONG, *numbers)}

    def _cancel_scheduled(self, entity: str, body: dict) -> tuple[int, Any]:
        numbers = _longs(_string_keys(body).get("sequence-numbers"))
        self.engine.cancel_scheduled(entity, numbers)
        return 200, {}

    def _receive_by_sequence_number(self, entity: str, body: dict) -> tuple[int, Any]:
        values = _string_keys(body)
        numbers = _longs(values.get("sequence-numbers"))
        # receiver-settle-mode 0 (first) is receive-and-delete; 1 (second) is peek-lock.
        receive_and_delete = int(values.get("receiver-settle-mode", 1)) == 0
        received = self.engine.receive_deferred(entity, numbers, receive_and_delete=receive_and_delete)
        messages = []
        for message in received:
            entry: dict[str, Any] = {"message": message.delivery}
            if message.lock_token is not None:
                entry["lock-token"] = message.lock_token
            messages.append(entry)
        return 200, {"messages": messages}

    def _get_session_state(self, entity: str, body: dict) -> tuple[int, Any]:
        session_id = _required_text(_string_keys(body), "session-id")
        return 200, {"session-state": self.engine.get_session_state(entity, session_id)}

    def _set_session_state(self, entity: str, body: dict) -> tuple[int, Any]:
        values = _string_keys(body)
        state = values.get("session-state")
        state_bytes = None if state is None else _binary(state)
        self.engine.set_session_state(entity, _required_text(values, "session-id"), state_bytes)
        return 200, {}

    def _renew_session_lock(self, entity: str, body: dict) -> tuple[int, Any]:
        session_id = _required_text(_string_keys(body), "session-id")
        locked_until = self.engine.renew_session_lock(entity, session_id)
        return 200, {"expiration": codec.to_timestamp(self._wall(locked_until))}

    def _get_message_sessions(self, entity: str, body: dict) -> tuple[int, Any]:
        values = _string_keys(body)
        skip, top = int(values.get("skip", 0)), int(values.get("top", 100))
        sessions = self.engine.list_sessions(entity)[skip : skip + top]
        if not sessions:
            return 204, None
        return 200, {"skip": skip, "sessions-ids": sessions}

    def _wall(self, moment):
        from workbook.clock import virtual_to_wall

        return virtual_to_wall(moment, self.engine.clock)


_STATUS_BY_CONDITION = {
    "amqp:not-found": 404,
    "com.microsoft:message-not-found": 404,
    "amqp:invalid-field": 400,
    "amqp:not-implemented": 501,
    "com.microsoft:entity-already-exists": 409,
    "com.microsoft:session-lock-lost": 410,
    "amqp:not-allowed": 400,
}


def fault_response(request: Message, status: int, condition: str, *, cbs: bool = False) -> Message:
    """Build the response Service Bus sends for a failed request, as an injected fault's reply."""
    return _response(request, status, f"injected fault: {condition}", cbs=cbs, condition=condition)


def _string_keys(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    return {str(key): value for key, value in body.items()}


def _required_text(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if value is None:
        raise InvalidRequestError(f"the request has no {key!r}")
    return value.decode() if isinstance(value, bytes) else str(value)


def _longs(raw: Any) -> list[int]:
    elements = raw.elements if isinstance(raw, Array) else list(raw or [])
    return [int(element) for element in elements]


def _binary(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidRequestError(f"expected the encoded message as binary, got {type(value).__name__}")


def _lock_tokens(values: dict[str, Any]) -> list[uuid.UUID]:
    raw = values.get("lock-tokens")
    elements = raw.elements if isinstance(raw, Array) else list(raw or [])
    return [element if isinstance(element, uuid.UUID) else uuid.UUID(str(element)) for element in elements]


def _response(
    request: Message,
    status: int,
    description: str,
    *,
    body: Any = None,
    cbs: bool = False,
    condition: str | None = None,
) -> Message:
    code_key, description_key = (
        ("status-code", "status-description") if cbs else ("statusCode", "statusDescription")
    )
    properties: dict[str, Any] = {code_key: status, description_key: description}
    if condition:
        properties["errorCondition"] = symbol(condition)
    return Message(correlation_id=request.id, properties=properties, body=body)
