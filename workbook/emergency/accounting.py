"""Count every message of an emergency run by where it is, so that a lost one shows as a difference."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

ACCOUNT_COLUMNS = ("sent", "completed", "dead_lettered", "archived", "parked", "waiting", "unaccounted")


@dataclass(frozen=True)
class MessageAccount:
    """Locations of the messages sent to the destinations, counted now.

    `sent` counts one per message and destination. `completed` counts the consumer's first completions,
    `dead_lettered` the destinations' dead-letter queues, `archived` the dead-letter archive, `parked`
    the parked queue and `waiting` the destinations' active messages. `duplicates` counts completions
    of a message the consumer had completed before.
    """

    sent: int
    completed: int
    dead_lettered: int
    archived: int
    parked: int
    waiting: int
    duplicates: int = 0

    @property
    def accounted(self) -> int:
        return self.completed + self.dead_lettered + self.archived + self.parked + self.waiting

    @property
    def unaccounted(self) -> int:
        """Messages sent but found nowhere: lost when positive, created from nothing when negative."""
        return self.sent - self.accounted

    def to_frame(self) -> pd.DataFrame:
        values = {column: getattr(self, column) for column in ACCOUNT_COLUMNS}
        return pd.DataFrame([values], columns=list(ACCOUNT_COLUMNS))
