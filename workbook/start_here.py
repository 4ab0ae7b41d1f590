"""Notebook 00: the active target, whether it is reachable, how to switch targets, and the quick reference.

The quick reference is a data structure, so a test can check it against the notebooks folder both ways.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from azure.servicebus.exceptions import ServiceBusError

from workbook.config import (
    COSMOS_ENDPOINT_VARIABLE,
    COSMOS_KEY_VARIABLE,
    SERVICEBUS_VARIABLE,
    TARGET_VARIABLE,
    ConfigError,
    Settings,
    Target,
    load_settings,
    mask_secrets,
)
from workbook.emergency.health import call_with_timeout, servicebus_probe
from workbook.paths import data_dir, project_root
from workbook.servicebus.emulator import LocalServiceBusEmulator

REACHABILITY_TIMEOUT_SECONDS = 5.0
PROBE_QUEUE = "orders"
QUICK_REFERENCE_COLUMNS = ("symptom", "quick check", "quick fix", "notebook")


@dataclass(frozen=True)
class QuickReference:
    """One row of the quick reference: the symptom, the first check, the first fix, and the notebook."""

    number: str
    topic: str
    symptom: str
    quick_check: str
    quick_fix: str
    notebook: str  # file name in notebooks/


QUICK_REFERENCE: tuple[QuickReference, ...] = (
    QuickReference(
        "01",
        "messages not routed",
        "messages sent but never arrive; nothing in the logs",
        "queue counts, then a per-condition trace of every routing rule",
        "correct the rule or the message format",
        "01_messages_not_routed.ipynb",
    ),
    QuickReference(
        "02",
        "transformation failures",
        "documents dead-lettered or arriving in the wrong format",
        "schema validation errors per JSON path; dead-letter reasons",
        "validate against the schema before sending; transform from the schema",
        "02_transformation_failures.ipynb",
    ),
    QuickReference(
        "03",
        "dead-letter overflow",
        "the dead-letter count keeps rising; high delivery counts",
        "dead-letter counts over time, reasons and delivery counts",
        "renew locks, idempotent handlers, then drain with DeadLetterProcessor",
        "03_dead_letter_overflow.ipynb",
    ),
    QuickReference(
        "04",
        "concurrency conflicts",
        "ConcurrencyError or HTTP 412 on save; lost updates",
        "version numbers: replay the stream",
        "append at the expected version; reload and retry",
        "04_concurrency_conflicts.ipynb",
    ),
    QuickReference(
        "05",
        "projection lag",
        "queries show old data; the read model falls behind",
        "checkpoint position against the head of the log",
        "batches and more projection workers, each with its checkpoint",
        "05_projection_lag.ipynb",
    ),
    QuickReference(
        "06",
        "event deserialization",
        "a projection stops or skips events after a deployment",
        "the quarantine: event id, type and decoding error",
        "an alias or an upcaster, then replay the quarantine",
        "06_event_deserialization.ipynb",
    ),
    QuickReference(
        "07",
        "stuck sagas",
        "sagas stay RUNNING; orders neither complete nor roll back",
        "participant health and the sagas past their deadline",
        "step deadlines and a timeout sweep that compensates",
        "07_stuck_sagas.ipynb",
    ),
    QuickReference(
        "08",
        "compensation failures",
        "a rollback half done; sagas stuck at COMPENSATING",
        "idempotency: the compensation log",
        "retries with backoff, then manual intervention",
        "08_compensation_failures.ipynb",
    ),
    QuickReference(
        "09",
        "broken traces",
        "a saga's flow cannot be followed across services",
        "traceparent on every message and request",
        "propagate W3C trace context; continue traces as child spans",
        "09_broken_traces.ipynb",
    ),
    QuickReference(
        "10",
        "processing latency",
        "slow processing; queue depth grows; timeouts",
        "profile the handler: top functions by cumulative time",
        "reuse connections through a pool",
        "10_processing_latency.ipynb",
    ),
    QuickReference(
        "11",
        "monitoring and debugging",
        "no idea what happened to a message",
        "structured logs of every component at the right level",
        "debug mode that logs each message's flow",
        "11_monitoring_and_debugging.ipynb",
    ),
    QuickReference(
        "12",
        "emergency procedures",
        "a service is completely down",
        "the health of every component at once",
        "disable the route, drain, restart, replay, then count",
        "12_emergency_procedures.ipynb",
    ),
)


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def quick_reference_frame(*, links: bool = False) -> pd.DataFrame:
    """Return the quick reference (QUICK_REFERENCE_COLUMNS); `links` makes the notebook a Markdown link."""
    rows = [
        (entry.symptom, entry.quick_check, entry.quick_fix, _link(entry) if links else entry.notebook)
        for entry in QUICK_REFERENCE
    ]
    return pd.DataFrame(rows, columns=list(QUICK_REFERENCE_COLUMNS))


def quick_reference_markdown() -> str:
    """Return the quick reference as a Markdown table whose links work from the notebooks folder."""
    lines = ["| " + " | ".join(QUICK_REFERENCE_COLUMNS) + " |", "|---|---|---|---|"]
    for entry in QUICK_REFERENCE:
        lines.append(f"| {entry.symptom} | {entry.quick_check} | {entry.quick_fix} | {_link(entry)} |")
    return "\n".join(lines)


def reference_mismatches(folder: Path | None = None) -> dict[str, list[str]]:
    """Compare the table with the NN_*.ipynb files of `folder` (default notebooks/), both ways.

    Returns the files that the table links but the folder lacks (`missing`). It also returns the
    numbered notebooks that the folder has but the table does not list (`unlisted`), except notebook 00.
    """
    folder = folder or notebooks_dir()
    present = {path.name for path in folder.glob("[0-9][0-9]_*.ipynb") if not path.name.startswith("00_")}
    listed = {entry.notebook for entry in QUICK_REFERENCE}
    return {"missing": sorted(listed - present), "unlisted": sorted(present - listed)}


def _link(entry: QuickReference) -> str:
    return f"[{entry.number} {entry.topic}]({entry.notebook})"


# -- the target ---------------------------------------------------------------------------------------


def target_summary(settings: Settings) -> pd.DataFrame:
    """Return the settings in use, one row each, with every key masked."""
    described = settings.describe()
    sources = described.pop("sources", {})
    rows = [(name, mask_secrets(str(value))) for name, value in described.items()]
    rows.append(("read from", ", ".join(f"{key}: {value}" for key, value in sources.items()) or "defaults"))
    return pd.DataFrame(rows, columns=["setting", "value"])


def check_reachable(
    settings: Settings, *, queue: str = PROBE_QUEUE, timeout: float = REACHABILITY_TIMEOUT_SECONDS
) -> pd.DataFrame:
    """Peek one message of `queue` on the target with the official SDK, within `timeout` seconds.

    On `local` the check starts the package's emulator for the duration of the check. Returns one row:
    target, reachable, detail (the reason when not reachable, with secrets masked).
    """
    emulator = None
    try:
        if settings.target is Target.LOCAL:
            emulator = LocalServiceBusEmulator(data_dir() / "servicebus-config.json").start()
            connection_string = emulator.connection_string
        elif settings.servicebus_connection_string is None:
            return _reachability(settings, False, f"{SERVICEBUS_VARIABLE} is not set")
        else:
            connection_string = settings.servicebus_connection_string.to_sdk_string()
        probe = servicebus_probe(connection_string, queue, timeout=timeout)
        detail = call_with_timeout(probe, timeout)
    except (ServiceBusError, TimeoutError, OSError) as error:
        return _reachability(settings, False, f"{type(error).__name__}: {mask_secrets(str(error))}")
    finally:
        if emulator is not None:
            emulator.stop()
    return _reachability(settings, True, detail)


def _reachability(settings: Settings, reachable: bool, detail: str) -> pd.DataFrame:
    return pd.DataFrame(
        [(settings.target.value, reachable, detail)], columns=["target", "reachable", "detail"]
    )


def switching_table() -> pd.DataFrame:
    """Return what to set for each target; example values carry placeholders, never a key."""
    rows = [
        (Target.LOCAL.value, TARGET_VARIABLE, "local (the default: nothing else to set)"),
        (Target.EMULATOR.value, TARGET_VARIABLE, "emulator"),
        (
            Target.EMULATOR.value,
            SERVICEBUS_VARIABLE,
            "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=<key>;UseDevelopmentEmulator=true",
        ),
        (Target.EMULATOR.value, COSMOS_ENDPOINT_VARIABLE, "https://localhost:8081/ (optional)"),
        (Target.EMULATOR.value, COSMOS_KEY_VARIABLE, "<the emulator's key> (optional)"),
        (Target.AZURE.value, TARGET_VARIABLE, "azure"),
        (
            Target.AZURE.value,
            SERVICEBUS_VARIABLE,
            "Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<policy>;SharedAccessKey=<key>",
        ),
        (
            Target.AZURE.value,
            COSMOS_ENDPOINT_VARIABLE,
            "https://<account>.documents.azure.com:443/ (optional)",
        ),
        (Target.AZURE.value, COSMOS_KEY_VARIABLE, "<the account's primary key> (optional)"),
    ]
    return pd.DataFrame(rows, columns=["target", "variable", "value"])


def load_target_settings(target: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load the settings, with `target` (when given) in place of WORKBOOK_TARGET.

    Raises ConfigError listing every problem, such as a missing connection string for `azure`.
    """
    environment = dict(os.environ if environ is None else environ)
    if target:
        environment[TARGET_VARIABLE] = target
    return load_settings(environment)


__all__ = [
    "QUICK_REFERENCE",
    "QUICK_REFERENCE_COLUMNS",
    "ConfigError",
    "QuickReference",
    "check_reachable",
    "load_target_settings",
    "quick_reference_frame",
    "quick_reference_markdown",
    "reference_mismatches",
    "switching_table",
    "target_summary",
]
