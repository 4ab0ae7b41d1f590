"""Emergency procedures: a health dashboard of every component, route switches, queue drains and restarts.

This package sits beside `widgets` and `cli`: it uses the domain packages (servicebus, esb, saga,
eventstore) and none of them imports it.
"""

from workbook.emergency.accounting import ACCOUNT_COLUMNS, MessageAccount
from workbook.emergency.drain import EMERGENCY_DRAIN, DrainReport, drain_queue, replay_drained
from workbook.emergency.errors import EmergencyError, EmergencySettingError
from workbook.emergency.health import (
    HEALTH_COLUMNS,
    ComponentHealth,
    HealthDashboard,
    call_with_timeout,
    servicebus_probe,
)
from workbook.emergency.restart import restart_participant, start_participant, stop_participant
from workbook.emergency.routes import ROUTE_CHANGE_COLUMNS, RouteChange, RouteSwitch

__all__ = [
    "ACCOUNT_COLUMNS",
    "EMERGENCY_DRAIN",
    "HEALTH_COLUMNS",
    "ROUTE_CHANGE_COLUMNS",
    "ComponentHealth",
    "DrainReport",
    "EmergencyError",
    "EmergencySettingError",
    "HealthDashboard",
    "MessageAccount",
    "RouteChange",
    "RouteSwitch",
    "call_with_timeout",
    "drain_queue",
    "replay_drained",
    "restart_participant",
    "servicebus_probe",
    "start_participant",
    "stop_participant",
]
