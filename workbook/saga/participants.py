"""Saga participants (order, inventory, payment, shipping) as workers on their command queues.

Each participant receives commands with the SDK, applies or undoes its effect in the ledger, and sends
a reply to the replies queue. A failure mode switched on at run time makes it misbehave the way real
services do: down, slow, flaky at a seeded rate, failing permanently, or losing its reply. Each one
serves GET /health on 127.0.0.1, which reports 503 while the participant is down.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusSender
from azure.servicebus.exceptions import ServiceBusError

from workbook.clock import get_clock
from workbook.observability.http import http_server_span, record_response
from workbook.observability.propagation import continue_trace, inject_message_context
from workbook.saga.errors import InvalidSagaMessageError, SagaDefinitionError, SagaMessageError
from workbook.saga.ledger import EffectLedger
from workbook.saga.links import dead_letter, has_due_message, open_receiver, settle
from workbook.saga.messages import (
    KIND,
    MessageKind,
    Phase,
    ReplyOutcome,
    SagaQueues,
    SagaSignal,
    decode,
    reply_message,
)

logger = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 10.0
RECEIVE_WAIT_SECONDS = 0.1
THREAD_JOIN_SECONDS = 10.0
MAX_BATCH = 20
UNREADABLE_COMMAND = "UnreadableCommand"
ORDER_PARTICIPANTS = ("order", "inventory", "payment", "shipping")
TRACE_HOP = "participants"  # the hop name of their spans, as workbook.observability.set_propagation takes it


class FailureMode(StrEnum):
    """The failure a participant acts out."""

    HEALTHY = "healthy"  # applies the effect and replies
    DOWN = "down"  # receives nothing, and its health endpoint returns 503
    SLOW = "slow"  # works `seconds` on the package clock before applying and replying
    FLAKY = "flaky"  # at a seeded `rate`, replies a transient failure without applying
    PERMANENT = "permanent"  # replies a permanent failure without applying
    REPLY_LOST = "reply-lost"  # applies the effect but its reply never arrives


class Outcome(StrEnum):
    """The action a participant took on one command, as recorded in the ledger's deliveries."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # already applied: replied done again without applying
    NOTHING_TO_UNDO = "nothing to undo"  # a compensation of an effect that was never applied
    FAILED = "failed"
    PERMANENT = "permanent"
    REPLY_LOST = "reply lost"


@dataclass(frozen=True)
class Failure:
    """A failure mode with its settings; `phase` None covers commands and compensations alike.

    `sagas` None covers every saga; otherwise only the saga ids listed.
    """

    mode: FailureMode = FailureMode.HEALTHY
    rate: float = 1.0
    seconds: float = 0.0
    phase: Phase | None = None
    sagas: frozenset[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", FailureMode(self.mode))
        if self.sagas is not None:
            object.__setattr__(self, "sagas", frozenset(self.sagas))
        if not 0.0 <= self.rate <= 1.0:
            raise SagaDefinitionError("rate", self.rate, "a fraction from 0.0 to 1.0")
        if self.seconds < 0 or (self.mode is FailureMode.SLOW and self.seconds == 0):
            raise SagaDefinitionError("seconds", self.seconds, "0 or more, and more than 0 for a slow mode")

    def covers(self, signal: SagaSignal) -> bool:
        """Tell whether this failure applies to a command."""
        phase_matches = self.phase is None or self.phase is signal.phase
        return phase_matches and (self.sagas is None or signal.saga_id in self.sagas)


class Participant:
    """A worker on one participant's command queue. Drive it with `poll`, or run it in a thread with `start`.

    With `idempotent` (the default), a command whose effect is already applied gets a done reply
    without being applied again. Switch it off to show what duplicates do.
    """

    def __init__(
        self,
        name: str,
        client: ServiceBusClient,
        ledger: EffectLedger,
        *,
        queues: SagaQueues | None = None,
        idempotent: bool = True,
        seed: int = 0,
        receive_wait: float = RECEIVE_WAIT_SECONDS,
    ) -> None:
        self.name = name
        self.client = client
        self.ledger = ledger
        self.queues = queues or SagaQueues()
        self.queue = self.queues.participant_queue(name)
        self.idempotent = idempotent
        self.receive_wait = receive_wait
        self._failure = Failure()
        self.seed = seed
        self._random = random.Random(f"{seed}:{name}")
        self._lock = threading.Lock()
        self._receiver: ServiceBusReceiver | None = None
        self._sender: ServiceBusSender | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._health: ThreadingHTTPServer | None = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"Participant({self.name!r}, queue={self.queue!r}, failure={self.failure.mode})"

    # -- failure modes ----------------------------------------------------------------------------

    @property
    def failure(self) -> Failure:
        """The failure mode in force."""
        with self._lock:
            return self._failure

    def fail(self, mode: FailureMode | str, **settings: object) -> Failure:
        """Switch a failure mode on (settings as in Failure) and return it; it replaces the previous one."""
        failure = Failure(FailureMode(mode), **settings)  # type: ignore[arg-type]
        with self._lock:
            self._failure = failure
            # Reseeded at each switch, so the same failure draws the same sequence in every run.
            self._random = random.Random(f"{self.seed}:{self.name}")
        logger.info("participant %s: failure mode %s on", self.name, failure.mode)
        return failure

    def recover(self) -> None:
        """Switch the failure mode off."""
        with self._lock:
            self._failure = Failure()
        logger.info("participant %s: healthy again", self.name)

    @property
    def is_up(self) -> bool:
        """Tell whether the participant serves commands (every mode but DOWN)."""
        return self.failure.mode is not FailureMode.DOWN

    # -- receiving --------------------------------------------------------------------------------

    def poll(self, *, max_wait: float | None = None) -> int:
        """Handle one batch of waiting commands and return how many; a DOWN participant takes none."""
        if not self.is_up:
            return 0
        receiver = self._open_receiver()
        wait = self.receive_wait if max_wait is None else max_wait
        handled = 0
        while handled < MAX_BATCH and self.is_up and has_due_message(receiver):
            # One message per receive returns at once when a message waits; a larger batch waits for more.
            batch = receiver.receive_messages(max_message_count=1, max_wait_time=wait)
            if not batch:
                break
            self._handle(receiver, batch[0])
            handled += 1
        return handled

    def start(self) -> Participant:
        """Poll in a background thread until `stop`; a failure stops the thread and is kept in `error`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"participant-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = THREAD_JOIN_SECONDS) -> None:
        """Stop the thread (if started), the health server, and close the links; re-raise a thread failure."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("participant %s did not stop within %.1f s", self.name, timeout)
            self._thread = None
        self.stop_health_server()
        for link in (self._receiver, self._sender):
            if link is not None:
                link.close()
        self._receiver = self._sender = None
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll() == 0 and not self.is_up:
                    self._stop.wait(self.receive_wait)
            except ServiceBusError as error:
                # A worker outlives a broker hiccup: the message stays on the queue for the next poll.
                logger.warning("participant %s: poll failed, polling again: %s", self.name, error)
                self._stop.wait(self.receive_wait)
            except BaseException as error:  # kept for stop() to re-raise in the caller's thread
                logger.exception("participant %s stopped on an error", self.name)
                self.error = error
                return

    def _handle(self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
        try:
            command = decode(message)
            if command.kind is not MessageKind.COMMAND:
                raise InvalidSagaMessageError(
                    command.message_id,
                    f"{KIND!r} property",
                    str(command.kind),
                    f"{MessageKind.COMMAND!r} on the participant queue {self.queue!r} (replies go to "
                    f"{self.queues.replies!r}, deadlines and retries to {self.queues.timeouts!r})",
                )
        except (SagaMessageError, ValueError) as error:
            dead_letter(receiver, message, UNREADABLE_COMMAND, error)
            return

        attributes = {"saga.id": command.saga_id, "saga.step": command.step, "saga.participant": self.name}
        with continue_trace(
            f"saga.{command.phase} {command.step}",
            message.application_properties,
            hop=TRACE_HOP,
            correlation_id=command.saga_id,
            attributes=attributes,
        ):
            self._handle_command(receiver, message, command)

    def _handle_command(
        self, receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage, command: SagaSignal
    ) -> None:
        outcome, reply = self._act(command)
        self.ledger.record_delivery(
            self.name,
            command.saga_id,
            command.step,
            str(command.phase),
            command.attempt,
            command.message_id,
            str(outcome),
        )
        if reply is not None:
            reply_to = reply_message(command, reply[0], reply[1], self.name, get_clock().now())
            self._open_sender().send_messages(inject_message_context(reply_to), timeout=SEND_TIMEOUT_SECONDS)
        settle(receiver.complete_message, message)

    def _act(self, command: SagaSignal) -> tuple[Outcome, tuple[ReplyOutcome, str] | None]:
        failure = self.failure
        mode = failure.mode if failure.covers(command) else FailureMode.HEALTHY
        if mode is FailureMode.SLOW:
            get_clock().sleep(failure.seconds)
        if mode is FailureMode.PERMANENT:
            return Outcome.PERMANENT, (ReplyOutcome.PERMANENT, f"{command.subject} rejected by {self.name}")
        if mode is FailureMode.FLAKY and self._draw() < failure.rate:
            return Outcome.FAILED, (
                ReplyOutcome.FAILED,
                f"{command.subject} failed transiently at {self.name}",
            )

        outcome = self._apply(command)
        if mode is FailureMode.REPLY_LOST:
            return Outcome.REPLY_LOST, None
        return outcome, (ReplyOutcome.DONE, str(outcome))

    def _apply(self, command: SagaSignal) -> Outcome:
        if command.phase is Phase.COMPENSATE and not self.ledger.was_applied(
            self.name, command.saga_id, command.step, str(Phase.EXECUTE)
        ):
            # The step never took effect here (it failed or its command never arrived): nothing to undo.
            return Outcome.NOTHING_TO_UNDO
        applied = self.ledger.apply(
            self.name,
            command.saga_id,
            command.step,
            str(command.phase),
            command.message_id,
            once=self.idempotent,
        )
        return Outcome.APPLIED if applied else Outcome.DUPLICATE

    def _draw(self) -> float:
        with self._lock:
            return self._random.random()

    def _open_receiver(self) -> ServiceBusReceiver:
        if self._receiver is None:
            self._receiver = open_receiver(self.client, self.queue)
        return self._receiver

    def _open_sender(self) -> ServiceBusSender:
        if self._sender is None:
            self._sender = self.client.get_queue_sender(self.queues.replies).__enter__()
        return self._sender

    # -- health endpoint --------------------------------------------------------------------------

    def start_health_server(self) -> str:
        """Serve GET /health on 127.0.0.1 on a free port in a daemon thread; return its URL."""
        if self._health is None:
            self._health = ThreadingHTTPServer(("127.0.0.1", 0), _health_handler(self))
            threading.Thread(
                target=self._health.serve_forever, name=f"health-{self.name}", daemon=True
            ).start()
        return self.health_url or ""

    @property
    def health_url(self) -> str | None:
        """The URL of the health endpoint, or None when it is not serving."""
        if self._health is None:
            return None
        host, port = self._health.server_address[:2]
        return f"http://{host}:{port}/health"

    def stop_health_server(self) -> None:
        """Stop serving the health endpoint; later checks find the port closed."""
        if self._health is not None:
            self._health.shutdown()
            self._health.server_close()
            self._health = None


def _health_handler(participant: Participant) -> type[BaseHTTPRequestHandler]:
    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            with http_server_span("GET", self.path, self.headers) as span:
                status = self._respond()
                record_response(span, status)

        def _respond(self) -> int:
            if self.path != "/health":
                self.send_error(404, "only /health is served")
                return 404
            up = participant.is_up
            body = json.dumps({"participant": participant.name, "status": "up" if up else "down"}).encode()
            self.send_response(200 if up else 503, "OK" if up else "Service Unavailable")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return 200 if up else 503

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("health %s: " + format, participant.name, *args)

    return HealthHandler


def order_participants(
    client: ServiceBusClient, ledger: EffectLedger, *, seed: int = 0, **options: object
) -> dict[str, Participant]:
    """Return the four participants of the order saga, keyed by name, sharing one ledger."""
    return {name: Participant(name, client, ledger, seed=seed, **options) for name in ORDER_PARTICIPANTS}  # type: ignore[arg-type]
