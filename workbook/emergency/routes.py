"""An emergency switch per route: stop sending to a route's destination at run time, and resume.

Setting `enabled: false` in the routing rules would change the routing itself: the route's messages
would fall through to the next route or to the unrouted queue. The switch keeps the routing and stops
the delivery instead. The Dispatcher parks the route's messages in the parked queue with reason
"destination disabled", and re-enabling the route replays them. Each switch is logged with who
switched it and why, and kept in an audit table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from workbook.clock import get_clock
from workbook.emergency.errors import EmergencySettingError
from workbook.esb.dispatch import Dispatcher
from workbook.esb.routing import RoutableMessage, Router
from workbook.esb.ubl import CanonicalMessage

logger = logging.getLogger(__name__)

DISABLED, ENABLED = "disabled", "enabled"
ROUTE_CHANGE_COLUMNS = ("at", "action", "route", "destination", "by", "reason", "replayed")


@dataclass(frozen=True)
class RouteChange:
    """One switch of a route: time (package clock), action, operator, reason, and parked messages replayed."""

    at: datetime
    action: str
    route: str
    destination: str
    by: str
    reason: str
    replayed: int = 0


class RouteSwitch:
    """Route messages with `router` and send them with `dispatcher`, with routes switchable at run time.

    A disabled route's destination goes into `dispatcher.disabled_destinations`. NOTE: the Dispatcher
    disables destinations, not routes, so two routes with one destination are held together while either
    is disabled.
    """

    def __init__(self, router: Router, dispatcher: Dispatcher) -> None:
        self.router = router
        self.dispatcher = dispatcher
        self._disabled: dict[str, RouteChange] = {}
        self._changes: list[RouteChange] = []

    def attach(self, dispatcher: Dispatcher) -> None:
        """Send through `dispatcher` from now on, such as one opened after a restart, keeping the switches."""
        dispatcher.disabled_destinations |= {change.destination for change in self._disabled.values()}
        self.dispatcher = dispatcher

    def dispatch(self, messages: Iterable[RoutableMessage | CanonicalMessage]) -> pd.DataFrame:
        """Route every message and send it; return the Dispatcher's outcome per send."""
        return self.dispatcher.dispatch(self.router.route_all(messages))

    def disable(self, route: str, *, by: str, reason: str) -> RouteChange:
        """Park every later message of `route` instead of sending it. Raises on a route already disabled."""
        _check_who_and_why(by, reason)
        destination = self._destination(route)
        if route in self._disabled:
            earlier = self._disabled[route]
            raise EmergencySettingError(
                "route", route, f"an enabled route (disabled by {earlier.by!r} already)"
            )
        change = self._record(DISABLED, route, destination, by, reason)
        self._disabled[route] = change
        self.dispatcher.disabled_destinations.add(destination)
        logger.warning("route %s (destination %s) disabled by %s: %s", route, destination, by, reason)
        return change

    def enable(self, route: str, *, by: str, reason: str) -> tuple[RouteChange, pd.DataFrame]:
        """Send `route`'s messages again and replay the parked ones; return the change and the replay rows.

        The replay sends on every parked message whose destination is not disabled, not only this route's.
        """
        _check_who_and_why(by, reason)
        destination = self._destination(route)
        if route not in self._disabled:
            raise EmergencySettingError("route", route, f"a disabled route, one of {sorted(self._disabled)}")
        del self._disabled[route]
        if destination not in {change.destination for change in self._disabled.values()}:
            self.dispatcher.disabled_destinations.discard(destination)
        replay = self.dispatcher.replay_parked()
        change = self._record(ENABLED, route, destination, by, reason, replayed=len(replay))
        logger.warning(
            "route %s (destination %s) enabled by %s: %s; %d parked message(s) replayed",
            route,
            destination,
            by,
            reason,
            len(replay),
        )
        return change, replay

    def disabled_routes(self) -> list[str]:
        """Return the names of the routes disabled now, in the order they were disabled."""
        return list(self._disabled)

    def changes_frame(self) -> pd.DataFrame:
        """Return the audit table of every switch so far (ROUTE_CHANGE_COLUMNS)."""
        rows = [[getattr(change, column) for column in ROUTE_CHANGE_COLUMNS] for change in self._changes]
        return pd.DataFrame(rows, columns=list(ROUTE_CHANGE_COLUMNS))

    def _destination(self, route: str) -> str:
        destinations = {known.name: known.destination for known in self.router.rules.routes}
        if route not in destinations:
            raise EmergencySettingError(
                "route", route, f"a route of the rules, one of {sorted(destinations)}"
            )
        return destinations[route]

    def _record(
        self, action: str, route: str, destination: str, by: str, reason: str, *, replayed: int = 0
    ) -> RouteChange:
        change = RouteChange(
            get_clock().now(), action, route, destination, by.strip(), reason.strip(), replayed
        )
        self._changes.append(change)
        return change


def _check_who_and_why(by: str, reason: str) -> None:
    # An emergency switch without a name and a reason cannot be audited, so both are required.
    for name, value in (("by", by), ("reason", reason)):
        if not isinstance(value, str) or not value.strip():
            raise EmergencySettingError(name, value, "a non-empty text, such as 'on-call: alice'")
