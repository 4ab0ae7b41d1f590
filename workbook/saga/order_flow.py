"""An order from inbound document to completed saga, traced hop by hop, for notebook 09 and its panel.

A producer submits a UBL order to `inbound-documents`. The inbound pipeline transforms it and
routes it to `orders`, where the order intake starts an order saga from the transformed order.
The orchestrator and the four participants then run the saga over their queues. Every hop continues the
trace it received unless `workbook.observability.set_propagation` breaks it, and every span carries
the document's message id as its correlation id (the saga id is the same id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import pandas as pd
from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage

from workbook.esb.pipeline import INBOUND_QUEUE, InboundPipeline, inbound_message
from workbook.esb.pipeline import TRACE_HOP as PIPELINE_HOP
from workbook.esb.routing import Router
from workbook.esb.rules import RoutingRules
from workbook.observability.propagation import (
    Propagation,
    continue_trace,
    inject_message_context,
    reset_propagation,
    set_propagation,
    start_flow,
)
from workbook.observability.traceview import flows, span_frame
from workbook.paths import data_dir
from workbook.saga.errors import SagaDefinitionError
from workbook.saga.links import open_receiver, settle
from workbook.saga.notebook import LabSettings, SagaLab
from workbook.saga.orchestrator import TRACE_HOP as ORCHESTRATOR_HOP
from workbook.saga.orchestrator import Orchestrator
from workbook.saga.participants import TRACE_HOP as PARTICIPANTS_HOP

logger = logging.getLogger(__name__)

ORDERS_QUEUE = "orders"
INTAKE_HOP = "intake"
# The hops in the order a flow passes them; each takes a workbook.observability.Propagation mode.
HOPS = (PIPELINE_HOP, INTAKE_HOP, ORCHESTRATOR_HOP, PARTICIPANTS_HOP)
SEND_TIMEOUT_SECONDS = 10.0
RECEIVE_WAIT_SECONDS = 1.0
RUN_TIMEOUT_SECONDS = 60.0
ORDER_AMOUNT = 100


class OrderIntake:
    """A worker on the `orders` queue that starts one order saga per transformed order.

    The saga id is the order message's id, so the saga's spans share the document's correlation id.
    """

    def __init__(
        self, client: ServiceBusClient, orchestrator: Orchestrator, *, queue: str = ORDERS_QUEUE
    ) -> None:
        self.client = client
        self.orchestrator = orchestrator
        self.queue = queue

    def run(self, max_messages: int, *, max_wait: float = RECEIVE_WAIT_SECONDS) -> list[str]:
        """Start a saga for each order received, up to `max_messages`; return the saga ids started."""
        started = []
        with open_receiver(self.client, self.queue) as receiver:
            for _ in range(max_messages):
                batch = receiver.receive_messages(max_message_count=1, max_wait_time=max_wait)
                if not batch:
                    break
                started.append(self._start_saga(batch[0]))
                settle(receiver.complete_message, batch[0])
        return started

    def _start_saga(self, message: ServiceBusReceivedMessage) -> str:
        saga_id = str(message.message_id)
        with continue_trace(
            "order.intake", message.application_properties, hop=INTAKE_HOP, correlation_id=saga_id
        ):
            order = json.loads(b"".join(message.body))
            context = {"order_id": order.get("ID", saga_id), "amount": ORDER_AMOUNT}
            self.orchestrator.start(saga_id, context)
        return saga_id


class OrderFlowLab:
    """Submit orders and run them through pipeline, intake and saga, with a propagation mode per hop.

    Call `close`, or use it as a context manager; the client stays open for its owner.
    """

    def __init__(self, client: ServiceBusClient, *, seed: int = 0) -> None:
        self.client = client
        router = Router(RoutingRules.load(data_dir() / "routes.yaml"))
        self.pipeline = InboundPipeline(client, router)
        self.sagas = SagaLab(client, LabSettings(seed=seed))
        self.intake = OrderIntake(client, self.sagas.orchestrator)
        self.document = (data_dir() / "samples" / "order.xml").read_bytes()
        self.runs = 0

    def __enter__(self) -> OrderFlowLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, count: int = 1, *, modes: Mapping[str, Propagation | str] | None = None) -> list[str]:
        """Submit `count` orders, run each to its saga's end with the hops' `modes`; return the flow ids.

        Hops not named continue the trace. The modes hold for this run only. Raises ValueError on an
        unknown hop or mode, and SagaDefinitionError on a count below 1.
        """
        if count < 1:
            raise SagaDefinitionError("order count", count, "1 or more")
        unknown = sorted(set(modes or {}) - set(HOPS))
        if unknown:
            raise ValueError(f"hops {unknown} not found: pass hops from {list(HOPS)}")
        self.runs += 1
        flow_ids = [f"flow-{self.runs}-{number:02d}" for number in range(1, count + 1)]

        reset_propagation()
        try:
            for hop, mode in (modes or {}).items():
                set_propagation(hop, mode)
            self._submit(flow_ids)
            self.pipeline.run(max_messages=count)
            self.intake.run(count)
            self.sagas.run(
                until=lambda: self.sagas.orchestrator.settled(flow_ids), timeout=RUN_TIMEOUT_SECONDS
            )
        finally:
            reset_propagation()
        return flow_ids

    def flow_table(self, flow_ids: list[str]) -> pd.DataFrame:
        """Return the traces and root spans of each flow named (see workbook.observability.flows)."""
        table = flows(span_frame())
        return table[table["correlation_id"].isin(flow_ids)].reset_index(drop=True)

    def close(self) -> None:
        """Close the pipeline's links and the saga lab (participants, health servers, store)."""
        self.pipeline.close()
        self.sagas.close()

    def _submit(self, flow_ids: list[str]) -> None:
        with self.client.get_queue_sender(INBOUND_QUEUE) as sender:
            for flow_id in flow_ids:
                with start_flow("order.submit", flow_id):
                    message = inject_message_context(inbound_message(self.document, message_id=flow_id))
                    sender.send_messages(message, timeout=SEND_TIMEOUT_SECONDS)
