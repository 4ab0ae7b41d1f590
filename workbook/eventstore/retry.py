"""Append with optimistic concurrency and retries: reload the stream, decide again, append again."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from workbook.clock import get_clock
from workbook.eventstore.errors import ConcurrencyError, InvalidEventError, RetryLimitError
from workbook.eventstore.events import NewEvent, RecordedEvent
from workbook.eventstore.store import EventStore

logger = logging.getLogger(__name__)

# Decides the new events from the stream's events so far; an empty result means nothing to append.
Decider = Callable[[list[RecordedEvent]], Sequence[NewEvent]]

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_FIRST_WAIT = 0.05  # seconds, the scale of the first backoff
DEFAULT_MAX_WAIT = 2.0  # seconds, the cap of one backoff


def append_with_retry(
    store: EventStore,
    stream_id: str,
    decide: Decider,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    first_wait: float = DEFAULT_FIRST_WAIT,
    max_wait: float = DEFAULT_MAX_WAIT,
) -> list[RecordedEvent]:
    """Read `stream_id`, append what `decide` returns at the version read, and retry on ConcurrencyError.

    Each retry reloads the stream and calls `decide` again, so a decision made on stale state is never stored.
    Waits grow exponentially with full jitter and pass on the package clock, so a VirtualClock makes them
    instant. Returns the recorded events ([] when `decide` returns none). Raises RetryLimitError after
    `max_attempts` rejected appends.
    """
    if max_attempts < 1:
        raise InvalidEventError(
            f"max_attempts {max_attempts!r} is invalid: pass 1 or more.", stream_id=stream_id
        )

    retrying = Retrying(
        stop=stop_after_attempt(max_attempts),
        wait=wait_random_exponential(multiplier=first_wait, max=max_wait),
        retry=retry_if_exception_type(ConcurrencyError),
        sleep=_sleep_on_package_clock,
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(_decide_and_append, store, stream_id, decide)
    except ConcurrencyError as error:
        raise RetryLimitError(stream_id, error.expected, error.actual, max_attempts) from error


def _decide_and_append(store: EventStore, stream_id: str, decide: Decider) -> list[RecordedEvent]:
    history = store.read_stream(stream_id)
    version = history[-1].stream_version if history else 0

    new_events = list(decide(history))
    if not new_events:
        return []
    return store.append(stream_id, new_events, expected_version=version)


def _sleep_on_package_clock(seconds: float) -> None:
    # Read at each sleep, so a clock set after the call started still applies.
    get_clock().sleep(seconds)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.info("Attempt %d failed (%s); retrying in %.3f s", state.attempt_number, error, wait)
