"""Participant health checks over HTTP: each participant serves GET /health on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from workbook.observability.http import http_client_span, record_response

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 0.5
HEALTH_COLUMNS = ("participant", "healthy", "detail")


@dataclass(frozen=True)
class HealthResult:
    """One participant's health as a check saw it."""

    participant: str
    healthy: bool
    detail: str


class HealthChecker:
    """Call each participant's health endpoint with a short timeout.

    A participant with no registered endpoint is treated as healthy, because no check can fail for it.
    A refused connection, a timeout or any status but 200 counts as unhealthy.
    """

    def __init__(
        self, endpoints: Mapping[str, str] | None = None, *, timeout: float = HEALTH_TIMEOUT_SECONDS
    ):
        self.endpoints = dict(endpoints or {})
        self.timeout = timeout

    def register(self, participant: str, url: str) -> None:
        """Add or replace the health URL of `participant`."""
        self.endpoints[participant] = url

    def check(self, participant: str) -> HealthResult:
        """Call `participant`'s health endpoint once and return what it showed."""
        url = self.endpoints.get(participant)
        if url is None:
            return HealthResult(participant, True, "no health endpoint registered: treated as healthy")
        with http_client_span("GET", url) as (span, headers):
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http on 127.0.0.1)
                    record_response(span, response.status)
                    status = json.loads(response.read() or b"{}").get("status", "")
                    return HealthResult(participant, True, f"HTTP {response.status} {status}".strip())
            except urllib.error.HTTPError as error:
                record_response(span, error.code)
                return HealthResult(participant, False, f"HTTP {error.code} {error.reason}")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                record_response(span, None, type(error).__name__)
                logger.info("health check of %s failed: %s", participant, reason)
                return HealthResult(participant, False, f"unreachable: {reason}")

    def table(self, participants: list[str] | None = None) -> pd.DataFrame:
        """Check every registered participant (or the ones named) and return HEALTH_COLUMNS."""
        names = participants if participants is not None else sorted(self.endpoints)
        rows = [self.check(name) for name in names]
        return pd.DataFrame(
            [(r.participant, r.healthy, r.detail) for r in rows], columns=list(HEALTH_COLUMNS)
        )
