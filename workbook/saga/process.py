"""The orchestrator as a process of its own, so a test can kill it and start it again.

    python -m workbook.saga.process --store sagas.sqlite --start 6 --run-seconds 60

The connection string is read from the environment variable WORKBOOK_SAGA_CONNECTION_STRING, never
from the command line, where other users of the machine could read it. The process starts the number of
sagas given by `--start` (skipping ids already stored, so a restart starts none twice), then processes
replies and deadlines until every saga is in a final status or `--run-seconds` pass.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from azure.servicebus import ServiceBusClient

from workbook.saga.definition import RetryPolicy, order_saga_definition
from workbook.saga.errors import SagaExistsError
from workbook.saga.orchestrator import Orchestrator
from workbook.saga.sqlite import SQLiteSagaStore

logger = logging.getLogger(__name__)

CONNECTION_VARIABLE = "WORKBOOK_SAGA_CONNECTION_STRING"
SAGA_ID_FORMAT = "order-{:04d}"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of the orchestrator process."""
    parser = argparse.ArgumentParser(
        prog="python -m workbook.saga.process", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--store", type=Path, required=True, help="SQLite file of the saga store")
    parser.add_argument("--start", type=int, default=0, help="number of order sagas to start (default: 0)")
    parser.add_argument("--step-timeout", type=float, default=30.0, help="seconds each step may take")
    parser.add_argument("--run-seconds", type=float, default=60.0, help="real seconds to run at most")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the orchestrator. Return 0 when every saga is final, 1 when time ran out, 2 with no connection."""
    arguments = parse_arguments(argv)
    connection_string = os.environ.get(CONNECTION_VARIABLE)
    if not connection_string:
        print(f"set {CONNECTION_VARIABLE} to the namespace's connection string", file=sys.stderr)
        return 2

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)

    definition = order_saga_definition(timeout=arguments.step_timeout, retry=RetryPolicy(first_backoff=0.2))
    store = SQLiteSagaStore(arguments.store)
    client = ServiceBusClient.from_connection_string(connection_string, retry_total=2)
    with client, Orchestrator(client, store, definition) as orchestrator:
        # Sent first: messages saved by a killed predecessor but never sent.
        logger.info("sent %d message(s) left in the outbox", orchestrator.send_outbox())
        _start_sagas(orchestrator, arguments.start)
        settled = orchestrator.run_until(orchestrator.settled, timeout=arguments.run_seconds)
    store.close()
    logger.info("orchestrator stopped: %s", "every saga final" if settled else "time ran out")
    return 0 if settled else 1


def _start_sagas(orchestrator: Orchestrator, count: int) -> None:
    for number in range(1, count + 1):
        saga_id = SAGA_ID_FORMAT.format(number)
        try:
            orchestrator.start(saga_id, {"order_id": saga_id, "amount": 100 + number})
        except SagaExistsError:
            logger.info("saga %s already stored, so it is not started again", saga_id)


if __name__ == "__main__":
    sys.exit(main())
