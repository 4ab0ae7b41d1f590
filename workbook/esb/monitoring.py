"""A monitored run of the inbound pipeline for notebook 11 and its panel: waves of documents, some poison.

Each tick of the package clock sends one wave of messages to the inbound queue, lets the pipeline
process at most `capacity` of them, advances the clock by `tick` and samples the metrics. Message ids
(``msg-0001`` ...) and the choice of poison variants come from a counter and a seeded generator, so a
run prints the same ids every time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd
from azure.servicebus import ServiceBusMessage

from workbook.clock import VirtualClock
from workbook.esb.pipeline import (
    INBOUND_QUEUE,
    InboundPipeline,
    inbound_message,
    outcomes_frame,
    send_inbound,
)
from workbook.esb.routing import Router
from workbook.esb.rules import RoutingRules
from workbook.esb.variants import BROKEN_VARIANT_NAMES, ORIGINAL, DocumentVariant, make_variant
from workbook.observability.metrics import MetricsSampler
from workbook.paths import data_dir
from workbook.servicebus.target import ServiceBusTarget

logger = logging.getLogger(__name__)

# Real seconds a receive waits for one more message once the queue is empty, so a tick ends quickly.
RECEIVE_WAIT_SECONDS = 0.2
# Ticks a run may add after the last wave to work off the backlog before it stops.
MAX_DRAIN_TICKS = 50
SENT_COLUMNS = ("message_id", "wave", "document", "variant", "expected_reason")


class MonitoringLabError(ValueError):
    """Invalid setting of a monitored run, such as a wave with a negative count."""


@dataclass(frozen=True)
class Wave:
    """One tick's messages: `documents` valid ones and `poison` broken ones."""

    documents: int
    poison: int = 0

    def __post_init__(self) -> None:
        if self.documents < 0 or self.poison < 0:
            raise MonitoringLabError(
                f"wave ({self.documents} documents, {self.poison} poison) has a negative count: "
                "pass 0 or more"
            )


class MonitoringLab:
    """The inbound pipeline on a virtual clock, fed in waves, with a MetricsSampler per run.

    `documents` maps names to valid UBL documents. `capacity` is the messages the pipeline
    processes per tick of `tick` on the clock. Use it as a context manager, or call close.
    """

    def __init__(
        self,
        target: ServiceBusTarget,
        documents: Mapping[str, bytes],
        clock: VirtualClock,
        *,
        capacity: int = 4,
        tick: timedelta = timedelta(seconds=10),
        seed: int = 0,
    ) -> None:
        if not documents:
            raise MonitoringLabError(
                "MonitoringLab needs at least one document; check the data_path parameter"
            )
        if capacity < 1 or tick <= timedelta(0):
            raise MonitoringLabError(
                f"capacity {capacity!r} or tick {tick!r} is invalid: pass 1 or more messages per tick and "
                "a tick longer than 0 s"
            )
        self.target = target
        self.documents = dict(documents)
        self.clock = clock
        self.capacity = capacity
        self.tick = tick
        self.random = random.Random(seed)
        router = Router(RoutingRules.load(data_dir() / "routes.yaml"))
        self.pipeline = InboundPipeline(target.client, router)
        self.sampler: MetricsSampler | None = None
        self._sent: list[tuple] = []
        self._outcomes: list[pd.DataFrame] = []

    def run(self, waves: Sequence[Wave]) -> pd.DataFrame:
        """Send the waves one per tick, process until the inbound queue is empty, and return the outcomes.

        Starts a new MetricsSampler on the inbound queue (`self.sampler`) that samples after each tick.
        """
        self.sampler = MetricsSampler(self.target, [INBOUND_QUEUE])
        outcomes = []
        for number, wave in enumerate(waves, start=1):
            self.send_wave(wave, number)
            outcomes.append(self._tick())
        for _ in range(MAX_DRAIN_TICKS):
            if self.backlog() == 0:
                break
            outcomes.append(self._tick())
        if self.backlog():
            logger.warning(
                "the run stopped after %d drain ticks with %d messages left on %s",
                MAX_DRAIN_TICKS,
                self.backlog(),
                INBOUND_QUEUE,
            )
        run = pd.concat(outcomes, ignore_index=True)
        self._outcomes.append(run)
        return run

    def send_wave(self, wave: Wave, number: int) -> list[str]:
        """Send one wave to the inbound queue, poison variants drawn with the seed; return the message ids."""
        variants = self._draw(wave)
        messages = [self._message(variant, number) for variant in variants]
        send_inbound(self.target.sender(INBOUND_QUEUE), messages)
        return [str(message.message_id) for message in messages]

    def send_one(self, variant: str = ORIGINAL, document: str | None = None) -> str:
        """Send `variant` of `document` (default: the first) outside any wave, and return the message id."""
        source = document or next(iter(self.documents))
        message = self._message(make_variant(variant, self.documents[source], source), 0)
        send_inbound(self.target.sender(INBOUND_QUEUE), [message])
        return str(message.message_id)

    def process(self) -> pd.DataFrame:
        """Process what the inbound queue holds now, without a clock tick; return the outcomes."""
        outcomes = self.pipeline.run(max_wait=RECEIVE_WAIT_SECONDS)
        self._outcomes.append(outcomes)
        return outcomes

    def backlog(self) -> int:
        """Return the active messages of the inbound queue, as the admin view counts them."""
        return int(self.target.queue_table(INBOUND_QUEUE)["active"].iloc[0])

    def sent_table(self) -> pd.DataFrame:
        """Return every message sent so far (SENT_COLUMNS); messages sent outside a wave have wave 0."""
        return pd.DataFrame(self._sent, columns=list(SENT_COLUMNS))

    def outcome_table(self) -> pd.DataFrame:
        """Return the pipeline's outcome of every message processed so far, in order."""
        frames = [frame for frame in self._outcomes if not frame.empty]
        return pd.concat(frames, ignore_index=True) if frames else outcomes_frame([])

    def close(self) -> None:
        """Close the pipeline's links; the target stays open for its owner."""
        self.pipeline.close()

    def __enter__(self) -> MonitoringLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _tick(self) -> pd.DataFrame:
        outcomes = self.pipeline.run(max_messages=self.capacity, max_wait=RECEIVE_WAIT_SECONDS)
        self.clock.advance(self.tick)
        if self.sampler is not None:
            self.sampler.sample(outcomes)
        return outcomes

    def _draw(self, wave: Wave) -> list[DocumentVariant]:
        sources = sorted(self.documents)
        valid = [self.random.choice(sources) for _ in range(wave.documents)]
        drawn = [make_variant(ORIGINAL, self.documents[source], source) for source in valid]
        for _ in range(wave.poison):
            source = self.random.choice(sources)
            variant = self.random.choice(BROKEN_VARIANT_NAMES)
            drawn.append(make_variant(variant, self.documents[source], source))
        # Poison arrives between valid documents, as it does from real senders.
        self.random.shuffle(drawn)
        return drawn

    def _message(self, variant: DocumentVariant, wave: int) -> ServiceBusMessage:
        message_id = f"msg-{len(self._sent) + 1:04d}"
        message = inbound_message(
            variant.body,
            message_id=message_id,
            content_type=variant.content_type,
            document=variant.source,
            validate=False,
        )
        message.correlation_id = f"wave-{wave}"
        self._sent.append((message_id, wave, variant.source, variant.variant, variant.expected_reason))
        return message


def dead_letter_reasons(log: pd.DataFrame) -> pd.DataFrame:
    """Count the dead-letter warnings of a log table (read_log_lines) per reason, most first.

    Returns an empty table with the same shape when the log contains no dead-letter warning.
    NOTE: it parses the message text of workbook.esb.deadletter.dead_letter's warning, so a change of
    that text must change the pattern here.
    """
    warnings = log[(log["level"] == "WARNING") & log["message"].astype(str).str.startswith("dead-lettered")]
    reasons = warnings["message"].astype(str).str.extract(r" of [^:]+: (\w+):")[0]
    counts = reasons.value_counts().rename_axis("reason").rename("messages")
    return counts.to_frame()
