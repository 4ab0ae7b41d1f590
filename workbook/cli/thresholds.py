"""Thresholds of recorded figures: the value beyond which a notebook's fix no longer holds.

The trend report marks a run whose figure crossed its threshold. Thresholds live here, keyed by the
notebook's file name without `.ipynb`, rather than in the `record` calls: a changed threshold then
applies to every past run in the report, and the notebooks need no edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Threshold:
    """Allowed range of a numeric figure: `maximum` and `minimum` are inclusive, None means unbounded."""

    maximum: float | None = None
    minimum: float | None = None

    def crossed(self, value: Any) -> bool:
        """Return True when a numeric value lies outside the range; text values never cross."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.maximum is not None and value > self.maximum:
            return True
        return self.minimum is not None and value < self.minimum

    def describe(self) -> str:
        """Describe the range, for example `at most 0` or `between 1 and 5`."""
        if self.maximum is not None and self.minimum is not None:
            return f"between {self.minimum:g} and {self.maximum:g}"
        if self.maximum is not None:
            return f"at most {self.maximum:g}"
        if self.minimum is not None:
            return f"at least {self.minimum:g}"
        return "any value"


Thresholds = Mapping[str, Mapping[str, Threshold]]

NONE_ALLOWED = Threshold(maximum=0)
ONE_PER_FLOW = Threshold(maximum=1)

# Each entry is a figure that the notebook's Verify section asserts, so a run that crosses it also failed.
# Figures recorded before the fix describe the failure itself and have no threshold.
THRESHOLDS: Thresholds = {
    "03_dead_letter_overflow": {
        "dlq_after_fix": NONE_ALLOWED,
        "double_effects_after_fix": NONE_ALLOWED,
    },
    "04_concurrency_conflicts": {
        "lost_updates_after_fix": NONE_ALLOWED,
        "lost_updates_free_running": NONE_ALLOWED,
    },
    "05_projection_lag": {
        "lag_after_fix": NONE_ALLOWED,
        "rows_differing_from_rebuild": NONE_ALLOWED,
    },
    "06_event_deserialization": {"quarantined_after_fix": NONE_ALLOWED},
    "07_stuck_sagas": {
        "stuck_after_fix": NONE_ALLOWED,
        "compensations_applied_twice": NONE_ALLOWED,
    },
    "08_compensation_failures": {"compensations_applied_twice": NONE_ALLOWED},
    "09_broken_traces": {
        "traces_per_flow_after": ONE_PER_FLOW,
        "roots_per_flow_after": ONE_PER_FLOW,
    },
    "11_monitoring_and_debugging": {
        "messages_unaccounted": NONE_ALLOWED,
        "secret_occurrences_in_logs": NONE_ALLOWED,
    },
    "12_emergency_procedures": {
        "messages_unaccounted": NONE_ALLOWED,
        "components_down_after": NONE_ALLOWED,
    },
}
