"""Orchestrated sagas on Service Bus: definitions, the state machine, the orchestrator, persistence,
timeouts, compensation and participants with switchable failure modes.

Modules:
- `definition`: steps, retry policies and statuses; `machine`: decisions without I/O.
- `records`, `store`, `sqlite` and `cosmos`: the saga store port and its SQLite and Cosmos DB adapters.
- `messages`: the protocol on the queues; `links`: shared SDK links.
- `orchestrator`, `timeouts` (stuck sagas and the sweep), `health` (HTTP health checks).
- `participants` and `ledger` (the effects they applied).
- `runner` (step-by-step runs for notebooks and tests) and `process` (the orchestrator as a process).
- `diagnostics`: failed compensations as tables (the compensation log, the manual-intervention queue).
"""

from workbook.saga.cosmos import CosmosSagaStore
from workbook.saga.definition import (
    ALLOWED_TRANSITIONS,
    FINAL_STATUSES,
    ORDER_SAGA,
    RetryPolicy,
    SagaDefinition,
    SagaStatus,
    SagaStep,
    check_transition,
    order_saga_definition,
)
from workbook.saga.diagnostics import (
    COMPENSATION_LOG_COLUMNS,
    ESCALATION_COLUMNS,
    ORDER_COLUMNS,
    CompensationFailures,
    compensation_log,
    escalation_table,
    inject_failures,
    read_manual_interventions,
    run_orders,
)
from workbook.saga.errors import (
    InvalidTransitionError,
    SagaConcurrencyError,
    SagaDefinitionError,
    SagaError,
    SagaExistsError,
    SagaMessageError,
    SagaNotFoundError,
    SagaStoreUnavailableError,
)
from workbook.saga.health import HEALTH_COLUMNS, HealthChecker, HealthResult
from workbook.saga.ledger import COUNT_COLUMNS, DELIVERY_COLUMNS, EFFECT_COLUMNS, EffectLedger
from workbook.saga.links import QueueLinks
from workbook.saga.machine import Decision, SagaMachine
from workbook.saga.messages import MessageKind, Phase, ReplyOutcome, SagaQueues, SagaSignal
from workbook.saga.orchestrator import (
    IGNORED_COLUMNS,
    SAGA_COLUMNS,
    TRANSITION_COLUMNS,
    Orchestrator,
)
from workbook.saga.participants import (
    ORDER_PARTICIPANTS,
    Failure,
    FailureMode,
    Outcome,
    Participant,
    order_participants,
)
from workbook.saga.records import Awaiting, OutboxEntry, OutgoingMessage, SagaRecord, Transition
from workbook.saga.runner import run_sagas
from workbook.saga.sqlite import SQLiteSagaStore
from workbook.saga.store import SagaStore
from workbook.saga.timeouts import STUCK_COLUMNS, SWEEP_COLUMNS, TimeoutSweeper, find_stuck_sagas

__all__ = [
    "ALLOWED_TRANSITIONS",
    "COMPENSATION_LOG_COLUMNS",
    "COUNT_COLUMNS",
    "DELIVERY_COLUMNS",
    "EFFECT_COLUMNS",
    "ESCALATION_COLUMNS",
    "FINAL_STATUSES",
    "HEALTH_COLUMNS",
    "IGNORED_COLUMNS",
    "ORDER_COLUMNS",
    "ORDER_PARTICIPANTS",
    "ORDER_SAGA",
    "SAGA_COLUMNS",
    "STUCK_COLUMNS",
    "SWEEP_COLUMNS",
    "TRANSITION_COLUMNS",
    "Awaiting",
    "CompensationFailures",
    "CosmosSagaStore",
    "Decision",
    "EffectLedger",
    "Failure",
    "FailureMode",
    "HealthChecker",
    "HealthResult",
    "InvalidTransitionError",
    "MessageKind",
    "Orchestrator",
    "OutboxEntry",
    "OutgoingMessage",
    "Outcome",
    "Participant",
    "Phase",
    "QueueLinks",
    "ReplyOutcome",
    "RetryPolicy",
    "SQLiteSagaStore",
    "SagaConcurrencyError",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaError",
    "SagaExistsError",
    "SagaMachine",
    "SagaMessageError",
    "SagaNotFoundError",
    "SagaQueues",
    "SagaRecord",
    "SagaSignal",
    "SagaStatus",
    "SagaStep",
    "SagaStore",
    "SagaStoreUnavailableError",
    "TimeoutSweeper",
    "Transition",
    "check_transition",
    "compensation_log",
    "escalation_table",
    "find_stuck_sagas",
    "inject_failures",
    "order_participants",
    "order_saga_definition",
    "read_manual_interventions",
    "run_orders",
    "run_sagas",
]
