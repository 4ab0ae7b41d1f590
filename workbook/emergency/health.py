"""A health dashboard: one real check per component, each bounded by a timeout, as one table.

A check is a function that does real work against the component (an SDK round trip, a query, an
HTTP call) and returns a short detail. It runs in a daemon thread, so a component that hangs delays the
dashboard by at most the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pandas as pd
from azure.servicebus import ServiceBusClient

from workbook.config import mask_secrets
from workbook.emergency.errors import ComponentDownError, EmergencySettingError

logger = logging.getLogger(__name__)

HEALTH_COLUMNS = ("component", "kind", "status", "latency_ms", "detail")
UP, DOWN = "up", "down"
CHECK_TIMEOUT_SECONDS = 2.0
SDK_TIMEOUT_SECONDS = 1.5

T = TypeVar("T")
Probe = Callable[[], str]


@dataclass(frozen=True)
class ComponentHealth:
    """One component's health as one check saw it; `latency_ms` is the check's real duration."""

    component: str
    kind: str
    status: str
    latency_ms: int
    detail: str


def call_with_timeout(function: Callable[[], T], timeout: float) -> T:
    """Call `function` in a daemon thread and return its result, or raise TimeoutError after `timeout` s.

    The function's own exception is raised in the caller. NOTE: a call that times out keeps running
    in its thread until it returns by itself, so give the function its own timeouts as well.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller's thread, which raises it
            outcome["error"] = error

    worker = threading.Thread(target=run, name="health-check", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"timed out after {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def servicebus_probe(connection_string: str, queue: str, *, timeout: float = SDK_TIMEOUT_SECONDS) -> Probe:
    """Return a check that opens its own SDK client, peeks one message of `queue` and closes the client.

    Its own client, without retries, so a broken connection of the application's client cannot make a
    dead namespace look alive, and a dead one fails at the first attempt.
    """

    def probe() -> str:
        client = ServiceBusClient.from_connection_string(connection_string, retry_total=0)
        with client, client.get_queue_receiver(queue) as receiver:
            peeked = receiver.peek_messages(max_message_count=1, timeout=timeout)
        return f"peeked {queue}: {'a message waits' if peeked else 'empty'}"

    return probe


class HealthDashboard:
    """Named checks, run in registration order, each in its own thread with a timeout."""

    def __init__(self, *, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        if not timeout > 0:
            raise EmergencySettingError("timeout", timeout, "a number of seconds above 0")
        self.timeout = timeout
        self._checks: dict[str, tuple[str, Probe]] = {}

    def register(self, component: str, kind: str, probe: Probe) -> None:
        """Add or replace the check of `component`; `kind` groups components in the table."""
        self._checks[component] = (kind, probe)

    @property
    def components(self) -> list[str]:
        return list(self._checks)

    def check(self, component: str) -> ComponentHealth:
        """Run one component's check. A raised error or a timeout makes it "down", with the reason."""
        if component not in self._checks:
            raise EmergencySettingError("component", component, f"one of {self.components}")
        kind, probe = self._checks[component]
        started = time.perf_counter()
        try:
            detail, status = call_with_timeout(probe, self.timeout), UP
        except ComponentDownError as error:
            detail, status = mask_secrets(str(error)), DOWN
        except Exception as error:  # every failure of a check is a finding, shown in the table
            detail, status = f"{type(error).__name__}: {mask_secrets(str(error))}", DOWN
            logger.warning("health check of %s failed: %s", component, detail)
        latency = round((time.perf_counter() - started) * 1000)
        return ComponentHealth(component, kind, status, latency, detail)

    def table(self) -> pd.DataFrame:
        """Check every component and return one row each (HEALTH_COLUMNS)."""
        rows = [self.check(component) for component in self._checks]
        values = [[getattr(row, column) for column in HEALTH_COLUMNS] for row in rows]
        return pd.DataFrame(values, columns=list(HEALTH_COLUMNS))
