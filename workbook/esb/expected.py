"""The destinations each document should reach, written independently of data/routes.yaml.

Notebooks and tests compare the router's decisions with this table, so a mistake in the YAML rules
shows up as a difference instead of being copied into the expectation.
"""

from __future__ import annotations

from workbook.esb.ubl import CanonicalMessage

UNROUTED = "unrouted"
AUDIT = "order-audit"

# (document type, transaction) -> main destination; None matches any transaction.
_MAIN_DESTINATIONS: dict[tuple[str, str | None], str] = {
    ("Order", "order"): "orders",
    ("OrderChange", None): "order-changes",
    ("OrderCancellation", None): "order-cancellations",
    ("OrderResponse", "order_response"): "order-responses",
    ("OrderResponse", "order_response_advanced"): "order-responses",
    ("OrderResponse", "order_agreement"): "order-agreements",
    ("DespatchAdvice", None): "despatch-advices",
    ("Catalogue", "catalogue"): "catalogues",
    ("Catalogue", "punch_out"): "punch-outs",
    ("ApplicationResponse", "catalogue_response"): "application-responses",
    ("ApplicationResponse", "invoice_response"): "application-responses",
    ("ApplicationResponse", "mlr"): "application-responses",
}
_AUDITED_DOCUMENT_TYPES = frozenset({"Order", "OrderChange", "OrderCancellation"})


def expected_destinations(message: CanonicalMessage) -> frozenset[str]:
    """Return the destinations the project's routing rules must send `message` to.

    Orders, order changes and cancellations also go to the audit queue, whatever their transaction.
    A message with no main destination goes to "unrouted", next to its audit copy if it has one.
    """
    main = _MAIN_DESTINATIONS.get((message.document_type, message.transaction))
    if main is None:
        main = _MAIN_DESTINATIONS.get((message.document_type, None))

    destinations = {main or UNROUTED}
    if message.document_type in _AUDITED_DOCUMENT_TYPES:
        destinations.add(AUDIT)
    return frozenset(destinations)
