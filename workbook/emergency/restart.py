"""Restart a saga participant: stop its worker and health endpoint, then serve again.

Commands that arrive while the participant is stopped wait on its queue, and its next poll handles
them: the queue, not the worker, keeps the work in flight.
"""

from __future__ import annotations

import logging

from workbook.saga.health import HealthChecker
from workbook.saga.participants import Participant

logger = logging.getLogger(__name__)


def stop_participant(participant: Participant) -> None:
    """Stop the worker thread (if any), close its links and its health endpoint.

    A failure that ended the worker thread is logged, not raised, because a crashed worker is the usual
    reason to restart it.
    """
    try:
        participant.stop()
    except Exception as error:  # the worker thread's own failure, kept by Participant.stop
        logger.warning("participant %s had stopped on %s: %s", participant.name, type(error).__name__, error)
        participant.error = None
    logger.warning("participant %s stopped", participant.name)


def start_participant(participant: Participant, health: HealthChecker, *, threaded: bool = False) -> str:
    """Serve the health endpoint again, register its new URL, and start the worker thread if `threaded`.

    Returns the health URL. Without `threaded` the caller polls the participant, as the saga runner does.
    """
    url = participant.start_health_server()
    health.register(participant.name, url)
    if threaded:
        participant.start()
    logger.warning("participant %s started", participant.name)
    return url


def restart_participant(participant: Participant, health: HealthChecker, *, threaded: bool = False) -> str:
    """Stop and start a participant (see stop_participant and start_participant); return its health URL."""
    stop_participant(participant)
    return start_participant(participant, health, threaded=threaded)
