"""Message handlers that forward each order to another queue, slow and fast, and the lab that times them.

Every handler does the same work: it reads an order, marks it accepted and sends the result to the
outbound queue through the official SDK. They differ only in how they get a sender:

- `ClientPerMessageForwarder` opens a `ServiceBusClient` and a sender for every message and closes both,
  which is the cause of high processing latency that the lab reproduces;
- `PooledForwarder` borrows an open sender from a `ServiceBusSenderPool`;
- `BatchedForwarder` forwards a list of orders in as few batches as fit, through a pooled sender.

`LatencyLab` feeds an inbound queue, runs a consumer with one of these handlers, and returns the
per-message durations, the queue depth over the run, and profiles of the handler.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiver

from workbook.config import ServiceBusConnectionString
from workbook.observability.profiling import (
    CallTree,
    ProfileResult,
    call_tree,
    percentile_table,
    profile_calls,
)
from workbook.servicebus.errors import ServiceBusEmulatorError
from workbook.servicebus.pool import CLIENT_RETRY_TOTAL, ServiceBusSenderPool
from workbook.servicebus.target import ServiceBusTarget, fill_batch

logger = logging.getLogger(__name__)

INBOUND_QUEUE = "latency-inbound"
OUTBOUND_QUEUE = "latency-outbound"
PER_MESSAGE, POOLED, BATCHED = "per-message", "pooled", "batched"
MODES = (PER_MESSAGE, POOLED, BATCHED)
SEND_TIMEOUT_SECONDS = 10.0
RECEIVE_BATCH = 100
RECEIVE_WAIT_SECONDS = 1.0
# A run gives up after this many seconds per message. A client per message takes about 1 s.
RUN_SECONDS_PER_MESSAGE = 10.0
SAMPLE_COLUMNS = ["elapsed_s", "arrived", "processed", "queue_depth"]


class LatencyLabError(ServiceBusEmulatorError):
    """A run did not finish in time, or a mode or count is invalid."""


# -- handlers --------------------------------------------------------------------------------------


def accept_order(body: str) -> ServiceBusMessage:
    """Return the outbound message for an order: the order marked accepted, correlated by its id.

    Raises LatencyLabError when the body is not a JSON object with an ``order_id``.
    """
    try:
        order = json.loads(body)
        order_id = order["order_id"]
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise LatencyLabError(
            f"order {body[:80]!r} is invalid ({error}): send JSON with an order_id"
        ) from error
    accepted = {**order, "status": "accepted"}
    return ServiceBusMessage(json.dumps(accepted), correlation_id=order_id, content_type="application/json")


class ClientPerMessageForwarder:
    """The slow handler: a new client and sender for every message, closed again after the send.

    Each call pays a TCP connect, SASL, a CBS token, a link attach and the close handshake.
    """

    def __init__(self, connection: ServiceBusConnectionString, queue: str = OUTBOUND_QUEUE) -> None:
        self._connection = connection
        self.queue = queue

    def __repr__(self) -> str:
        return f"ClientPerMessageForwarder(queue={self.queue!r}, connection={self._connection.masked()})"

    def __call__(self, body: str) -> None:
        message = accept_order(body)
        client = ServiceBusClient.from_connection_string(
            self._connection.to_sdk_string(), retry_total=CLIENT_RETRY_TOTAL
        )
        with client, client.get_queue_sender(self.queue) as sender:
            sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)


class PooledForwarder:
    """The fixed handler: borrows an open sender from the pool for each message."""

    def __init__(self, pool: ServiceBusSenderPool) -> None:
        self.pool = pool

    def __call__(self, body: str) -> None:
        message = accept_order(body)
        with self.pool.sender() as sender:
            sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)


class BatchedForwarder:
    """Forwards a list of orders in as few batches as fit, through one pooled sender."""

    def __init__(self, pool: ServiceBusSenderPool) -> None:
        self.pool = pool

    def __call__(self, bodies: Sequence[str]) -> int:
        """Send every order of `bodies` and return the number of batches sent."""
        pending = [accept_order(body) for body in bodies]
        batches = 0
        with self.pool.sender() as sender:
            while pending:
                sender.send_messages(fill_batch(sender, pending), timeout=SEND_TIMEOUT_SECONDS)
                batches += 1
        return batches


# -- runs ------------------------------------------------------------------------------------------


@dataclass
class LatencyRun:
    """One run: per-message durations, seconds spent in the handler, and the run's real time (seconds).

    In batched mode each message's duration is that of its batch, so `handler_s` counts each batch once.
    """

    mode: str
    durations: list[float]
    handler_s: float
    elapsed_s: float

    @property
    def messages_per_s(self) -> float:
        """Messages forwarded per second of handler time (receives and completions left out)."""
        return len(self.durations) / self.handler_s if self.handler_s > 0 else 0.0


@dataclass
class BacklogRun:
    """A run while orders kept arriving: the latency run and the queue depth after each message."""

    run: LatencyRun
    samples: pd.DataFrame = field(repr=False)

    @property
    def max_depth(self) -> int:
        return int(self.samples["queue_depth"].max())


class LatencyLab:
    """An inbound and an outbound queue, the three handlers, and the consumer loop that times them.

    The lab owns a sender pool for the outbound queue, which closing the lab closes.
    """

    def __init__(
        self,
        target: ServiceBusTarget,
        *,
        inbound: str = INBOUND_QUEUE,
        outbound: str = OUTBOUND_QUEUE,
        pool_size: int = 2,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.inbound = inbound
        self.outbound = outbound
        self.pool = ServiceBusSenderPool(target.connection, outbound, size=pool_size)
        self.per_message = ClientPerMessageForwarder(target.connection, outbound)
        self.pooled = PooledForwarder(self.pool)
        self.batched = BatchedForwarder(self.pool)
        self._random = random.Random(seed)
        self._orders = 0
        self._inbound_receiver: ServiceBusReceiver | None = None

    def close(self) -> None:
        """Close the inbound receiver and the sender pool (the target stays open)."""
        if self._inbound_receiver is not None:
            self._inbound_receiver.close()
            self._inbound_receiver = None
        self.pool.close()

    def handler(self, mode: str) -> Callable[[str], None]:
        """Return the one-message handler of `mode` (per-message or pooled)."""
        handlers = {PER_MESSAGE: self.per_message, POOLED: self.pooled}
        if mode not in handlers:
            raise LatencyLabError(f"mode {mode!r} has no one-message handler: pass one of {list(handlers)}")
        return handlers[mode]

    # -- feeding and reading the queues ----------------------------------------------------------

    def send_orders(self, count: int) -> int:
        """Send `count` new orders to the inbound queue with the target's reused client."""
        messages = [
            ServiceBusMessage(self._next_order(), content_type="application/json") for _ in range(count)
        ]
        if messages:
            self.target.send(self.inbound, messages)
        return count

    def queue_depth(self, queue: str | None = None) -> int:
        """Return the active messages of a queue (default: the inbound one), locked ones included."""
        name = queue or self.inbound
        table = self.target.queue_table([name])
        return int(table["active"].iloc[0]) if len(table) else 0

    def purge(self) -> None:
        """Delete every message of the inbound and outbound queues, and close the inbound receiver."""
        # A receiver keeps the credit of a receive that returned short, so it may already have messages
        # that the purge deletes. Completing one later fails with a lost lock, so the next run opens another.
        if self._inbound_receiver is not None:
            self._inbound_receiver.close()
            self._inbound_receiver = None
        if self.target.emulator is not None:
            for name in (self.inbound, self.outbound):
                self.target.emulator.engine.purge(name)
        else:
            self.target.purge([self.inbound, self.outbound])

    # -- runs ------------------------------------------------------------------------------------

    def run_backlog(self, count: int, arrival_rate: float, *, mode: str = PER_MESSAGE) -> BacklogRun:
        """Handle `count` orders with `mode` while new orders arrive at `arrival_rate` per second.

        The queues start empty. Orders that arrived and were not handled stay on the inbound queue.
        """
        _check_count(count)
        if not 0 < arrival_rate <= 1000:
            raise LatencyLabError(
                f"arrival_rate {arrival_rate!r} is invalid: pass 0 to 1000 orders per second"
            )
        handler = self.handler(mode)
        self.purge()

        receiver = self._receiver()
        durations: list[float] = []
        samples = []
        arrived = 0
        started = time.perf_counter()
        deadline = started + count * RUN_SECONDS_PER_MESSAGE
        while len(durations) < count:
            # Orders that are due by now arrive before the consumer looks for its next one.
            due = int((time.perf_counter() - started) * arrival_rate) + 1
            arrived += self.send_orders(due - arrived)
            for message in receiver.receive_messages(max_message_count=1, max_wait_time=RECEIVE_WAIT_SECONDS):
                durations.append(_timed(handler, _body(message)))
                receiver.complete_message(message)
            elapsed = time.perf_counter() - started
            samples.append((elapsed, arrived, len(durations), self.queue_depth()))
            _check_deadline(deadline, len(durations), count)

        run = LatencyRun(mode, durations, sum(durations), time.perf_counter() - started)
        return BacklogRun(run, pd.DataFrame(samples, columns=SAMPLE_COLUMNS))

    def measure(self, mode: str, count: int) -> LatencyRun:
        """Send `count` orders to the empty inbound queue, then handle them all with `mode`.

        In batched mode every order of a received batch is forwarded in one send, and each order's
        duration is that of its batch.
        """
        _check_count(count)
        if mode not in MODES:
            raise LatencyLabError(f"mode {mode!r} is unknown: pass one of {list(MODES)}")
        self.purge()
        self.send_orders(count)

        receiver = self._receiver()
        durations: list[float] = []
        handler_s = 0.0
        started = time.perf_counter()
        deadline = started + count * RUN_SECONDS_PER_MESSAGE
        while len(durations) < count:
            messages = receiver.receive_messages(
                max_message_count=RECEIVE_BATCH, max_wait_time=RECEIVE_WAIT_SECONDS
            )
            handled = self._handle(mode, messages)
            durations += handled
            handler_s += handled[0] if mode == BATCHED and handled else sum(handled)
            for message in messages:
                receiver.complete_message(message)
            _check_deadline(deadline, len(durations), count)
        return LatencyRun(mode, durations, handler_s, time.perf_counter() - started)

    def profile(self, mode: str, count: int, *, top: int = 12) -> ProfileResult:
        """Receive `count` orders from the inbound queue and profile the handler of `mode` on them.

        Raises LatencyLabError when fewer than `count` orders are waiting.
        """
        return self._on_received(count, lambda bodies: profile_calls(self.handler(mode), bodies, top=top))

    def call_tree(self, mode: str, count: int) -> CallTree:
        """Receive `count` orders and record pyinstrument's call tree of the handler of `mode` on them."""
        return self._on_received(count, lambda bodies: call_tree(self.handler(mode), bodies))

    @staticmethod
    def percentiles(*runs: LatencyRun) -> pd.DataFrame:
        """Return the p50, p95, p99 and max latency (ms) of each run, one row per run."""
        return percentile_table({run.mode: run.durations for run in runs})

    # -- internals -------------------------------------------------------------------------------

    def _handle(self, mode: str, messages: Sequence) -> list[float]:
        bodies = [_body(message) for message in messages]
        if not bodies:
            return []
        if mode == BATCHED:
            return [_timed(self.batched, bodies)] * len(bodies)
        handler = self.handler(mode)
        return [_timed(handler, body) for body in bodies]

    def _on_received(self, count: int, work: Callable[[list[str]], object]):
        _check_count(count)
        receiver = self._receiver()
        messages: list = []
        # One receive returns what has arrived by then, so it is repeated until a receive comes back empty.
        while len(messages) < count:
            received = receiver.receive_messages(
                max_message_count=min(count - len(messages), RECEIVE_BATCH),
                max_wait_time=RECEIVE_WAIT_SECONDS,
            )
            if not received:
                break
            messages += received
        if len(messages) < count:
            for message in messages:
                receiver.abandon_message(message)
            raise LatencyLabError(
                f"only {len(messages)} of {count} orders wait on {self.inbound!r}: send more first"
            )
        result = work([_body(message) for message in messages])
        for message in messages:
            receiver.complete_message(message)
        return result

    def _receiver(self) -> ServiceBusReceiver:
        # One receiver for the lab's lifetime: opening one costs what the slow handler pays per message.
        if self._inbound_receiver is None:
            self._inbound_receiver = self.target.client.get_queue_receiver(self.inbound)
        return self._inbound_receiver

    def _next_order(self) -> str:
        self._orders += 1
        quantity = self._random.randint(1, 20)
        return json.dumps({"order_id": f"ORD-{self._orders:05d}", "quantity": quantity})


def _timed(handler: Callable[[object], object], argument: object) -> float:
    started = time.perf_counter()
    handler(argument)
    return time.perf_counter() - started


def _body(message: object) -> str:
    return b"".join(message.body).decode("utf-8")  # type: ignore[attr-defined]


def _check_count(count: int) -> None:
    if not isinstance(count, int) or count < 1:
        raise LatencyLabError(f"count {count!r} is invalid: pass 1 or more messages")


def _check_deadline(deadline: float, handled: int, count: int) -> None:
    if time.perf_counter() > deadline:
        raise LatencyLabError(
            f"only {handled} of {count} orders were handled within {count * RUN_SECONDS_PER_MESSAGE:g} s: "
            "check the emulator's fault rules and the machine's load"
        )
