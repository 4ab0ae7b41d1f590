"""Measure routing decisions per second: the compiled Router against an interpretive router, side by side.

Both routers get the same 50 generated routes and the same generated messages, and must reach the same
decision with the same per-condition trace for every message. The peer, `InterpretiveRouter`, is the
straightforward design: it walks the rules' YAML dictionaries for every message, finding each leaf's
operator, reading its options and copying its expected value each time. The compiled Router does that
work once, when the rules are loaded. The ratio compiled / interpretive is the figure to watch.

Run ``make bench``, or ``.venv/bin/python benchmarks/router.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import random
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results_page import cpu_model, rewrite_section

from workbook.esb import ConditionResult, RoutableMessage, Router, RoutingDecision, RoutingRules
from workbook.esb.operators import evaluate
from workbook.esb.routing import resolve_field

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS / "README.md"
RESULTS_START = "<!-- router-results:start -->"
RESULTS_END = "<!-- router-results:end -->"
ROOT_PATH = "when"

DOCUMENT_TYPES = {
    "Order": ["order", "order_change"],
    "OrderChange": ["order_change"],
    "OrderCancellation": ["order_cancellation"],
    "OrderResponse": ["order_response", "order_response_advanced", "order_agreement"],
    "DespatchAdvice": ["despatch_advice"],
    "Catalogue": ["catalogue", "punch_out"],
    "Invoice": ["billing"],
    "CreditNote": ["billing"],
    "ApplicationResponse": ["mlr", "invoice_response"],
}
COUNTRIES = ["SE", "NO", "DK", "FI", "NL", "BE", "DE", "IT"]
SCHEMES = ["0088", "0192", "0007", "0184"]
CUSTOMER_PREFIXES = ["7399", "5790", "9908", "4000", "1234"]
CURRENCIES = ["EUR", "SEK", "NOK", "DKK"]


class BenchmarkError(RuntimeError):
    """The two routers disagreed on a decision, or the results page has no markers."""


# -- the peer: interpret the rules' dictionaries on every message --------------------------------------


class InterpretiveRouter:
    """The peer: evaluates the YAML dictionaries of the rules for each message, with no precomputation.

    It returns the same RoutingDecision as Router, trace included, and keeps no statistics.
    """

    def __init__(self, rules: Mapping[str, Any]) -> None:
        self.rules = rules

    def route(self, message: RoutableMessage) -> RoutingDecision:
        trace: list[ConditionResult] = []
        matched: list[Mapping[str, Any]] = []
        disabled: list[str] = []
        for route in self.rules["routes"]:
            if not route.get("enabled", True):
                disabled.append(route["name"])
                continue
            if self._matches(route["when"], message, route["name"], "", trace):
                matched.append(route)
                if not route.get("fan_out", False):
                    break

        routed = any(not route.get("fan_out", False) for route in matched)
        destinations = [route["destination"] for route in matched]
        if not routed:
            destinations.append(self.rules.get("unrouted", "unrouted"))
        return RoutingDecision(
            message=message,
            destinations=tuple(dict.fromkeys(destinations)),
            matched_routes=tuple(route["name"] for route in matched),
            routed=routed,
            trace=tuple(trace),
            disabled_routes=tuple(disabled),
        )

    def _matches(
        self, condition: Mapping[str, Any], message: RoutableMessage, route: str, path: str, trace: list
    ) -> bool:
        for kind in ("all", "any"):
            if kind in condition:
                results = []
                for index, child in enumerate(condition[kind]):
                    step = f"{kind}[{index}]"
                    child_path = f"{path}.{step}" if path else step
                    results.append(self._matches(child, message, route, child_path, trace))
                return all(results) if kind == "all" else any(results)

        field = condition["field"]
        operator = next(key for key in condition if key not in ("field", "case_sensitive"))
        expected = condition[operator]
        case_sensitive = condition.get("case_sensitive", True)
        pattern = None
        if operator == "regex":
            pattern = re.compile(expected, 0 if case_sensitive else re.IGNORECASE)
        actual = resolve_field(message, field)
        result = evaluate(operator, expected, actual, case_sensitive=case_sensitive, pattern=pattern)
        expected_copy = list(expected) if isinstance(expected, list) else expected
        trace.append(
            ConditionResult(route, path or ROOT_PATH, field, operator, expected_copy, actual, result)
        )
        return result


# -- generated rules and messages ----------------------------------------------------------------------


def generate_rules(count: int, seed: int) -> dict[str, Any]:
    """Generate `count` routes over document type, transaction, customer id and amount, as YAML data.

    The mix is what an integration team accumulates: a few fan-out copies first, then routes per
    document type and transaction, per customer, per amount band, some of them disabled.
    """
    rng = random.Random(seed)
    routes = []
    for index in range(count):
        kind = index % 5
        when = [_type_route, _customer_route, _amount_route, _country_route, _mixed_route][kind](rng)
        routes.append(
            {
                "name": f"route-{index:02d}",
                "destination": f"queue-{index % 17:02d}",
                "fan_out": index < 3,
                "enabled": rng.random() > 0.1,
                "when": when,
            }
        )
    return {"version": 1, "unrouted": "unrouted", "routes": routes}


def _type_route(rng: random.Random) -> dict[str, Any]:
    document_type = rng.choice(list(DOCUMENT_TYPES))
    transaction = rng.choice(DOCUMENT_TYPES[document_type])
    return {
        "all": [
            {"field": "document_type", "equals": document_type},
            {"field": "transaction", "in": [transaction, f"{transaction}_v2"]},
        ]
    }


def _customer_route(rng: random.Random) -> dict[str, Any]:
    prefix = rng.choice(CUSTOMER_PREFIXES) + str(rng.randrange(10))
    return {
        "all": [
            {"field": "buyer.id", "regex": f"^{prefix}"},
            {"field": "buyer.scheme", "equals": rng.choice(SCHEMES)},
            {"field": "properties.DocumentType", "not_in": ["ApplicationResponse"]},
        ]
    }


def _amount_route(rng: random.Random) -> dict[str, Any]:
    low = rng.choice([0, 1_000, 10_000, 50_000])
    high = low * 10 + 5_000
    return {
        "all": [
            {"field": "total_amount", "greater_than": low},
            {"field": "total_amount", "less_than": high},
            {"field": "currency", "equals": rng.choice(CURRENCIES).lower(), "case_sensitive": False},
        ]
    }


def _country_route(rng: random.Random) -> dict[str, Any]:
    return {
        "all": [
            {"field": "document_type", "equals": rng.choice(list(DOCUMENT_TYPES))},
            {
                "any": [
                    {"field": "buyer.country", "in": rng.sample(COUNTRIES, 2)},
                    {"field": "tags", "contains": "priority"},
                    {"field": "seller.id", "exists": False},
                ]
            },
        ]
    }


def _mixed_route(rng: random.Random) -> dict[str, Any]:
    document_type = rng.choice(list(DOCUMENT_TYPES))
    return {
        "all": [
            {"field": "properties.DocumentType", "equals": document_type},
            {
                "any": [
                    {"field": "line_count", "greater_than": rng.randrange(5, 50)},
                    {"field": "buyer.id", "regex": f"^{rng.choice(CUSTOMER_PREFIXES)}"},
                ]
            },
            {"field": "urgent", "equals": True},
        ]
    }


def generate_messages(count: int, seed: int) -> list[RoutableMessage]:
    """Generate `count` messages whose fields take the values the generated routes compare with."""
    rng = random.Random(seed)
    messages = []
    for number in range(count):
        document_type = rng.choice(list(DOCUMENT_TYPES))
        body = {
            "document_type": document_type,
            "transaction": rng.choice(DOCUMENT_TYPES[document_type]),
            "buyer": {
                "id": rng.choice(CUSTOMER_PREFIXES) + f"{rng.randrange(10**9):09d}",
                "scheme": rng.choice(SCHEMES),
                "country": rng.choice(COUNTRIES),
            },
            "seller": {"id": f"{rng.randrange(10**12):012d}"} if rng.random() > 0.2 else None,
            "total_amount": round(rng.uniform(0, 200_000), 2),
            "currency": rng.choice(CURRENCIES),
            "line_count": rng.randrange(1, 80),
            "urgent": rng.random() < 0.2,
            "tags": rng.sample(["priority", "medical", "bulk", "return"], rng.randrange(0, 3)),
        }
        properties = {"DocumentType": document_type, "Transaction": body["transaction"]}
        messages.append(RoutableMessage(body=body, properties=properties, message_id=f"m-{number}"))
    return messages


# -- measuring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """Decisions per second of both routers over the same messages, and how many leaves they evaluated."""

    rules: int
    messages: int
    leaves_per_message: float
    compiled_per_second: float
    traced_per_second: float
    interpretive_per_second: float

    @property
    def ratio(self) -> float:
        return self.compiled_per_second / self.interpretive_per_second

    @property
    def traced_ratio(self) -> float:
        return self.traced_per_second / self.interpretive_per_second


def measure(rule_count: int, message_count: int, seed: int) -> Measurement:
    """Route the same messages through both routers once each. Raises BenchmarkError if they disagree."""
    data = generate_rules(rule_count, seed)
    messages = generate_messages(message_count, seed + 1)
    compiled = Router(RoutingRules.from_dict(data))
    interpretive = InterpretiveRouter(data)

    # Agreement is checked in a pass of its own. The timed passes keep no decisions, as a running
    # router would not, so no pass pays for collecting the garbage of the passes before it.
    expected = [interpretive.route(message) for message in messages]
    decisions = [compiled.route(message) for message in messages]
    check_agreement(decisions, expected)

    interpretive_seconds = _timed(interpretive.route, messages)
    compiled_seconds = _timed(compiled.route, messages)
    traced_seconds = _timed(lambda message: len(compiled.route(message).trace), messages)

    leaves = sum(len(decision.trace) for decision in decisions)
    return Measurement(
        rules=rule_count,
        messages=message_count,
        leaves_per_message=leaves / message_count,
        compiled_per_second=message_count / compiled_seconds,
        traced_per_second=message_count / traced_seconds,
        interpretive_per_second=message_count / interpretive_seconds,
    )


def _timed(route: Callable[[RoutableMessage], Any], messages: Sequence[RoutableMessage]) -> float:
    gc.collect()
    started = time.perf_counter()
    for message in messages:
        route(message)
    return time.perf_counter() - started


def check_agreement(decisions: Sequence[RoutingDecision], expected: Sequence[RoutingDecision]) -> None:
    """Raise BenchmarkError naming the first message whose decision or trace differs."""
    for decision, reference in zip(decisions, expected, strict=True):
        if decision != reference:
            raise BenchmarkError(
                f"the routers disagree on message {decision.message_id}: compiled {decision.destinations} "
                f"with {len(decision.trace)} trace rows, interpretive {reference.destinations} with "
                f"{len(reference.trace)}. Fix the compiled router before timing it"
            )


# -- report ------------------------------------------------------------------------------------------


def report(measurement: Measurement, command: str) -> str:
    today = datetime.date.today().isoformat()
    return "\n".join(
        [
            f"Measured on {today} with `{command}` (from the repository root), one run.",
            "",
            f"- CPUs (nproc): {os.cpu_count()}",
            f"- CPU model: {cpu_model()}",
            f"- Python: {platform.python_version()}",
            "",
            f"{measurement.rules} routes, {measurement.messages:,} messages, "
            f"{measurement.leaves_per_message:.1f} leaf conditions evaluated per message.",
            "",
            "| router | decisions/s | / peer |",
            "|---|---:|---:|",
            f"| `InterpretiveRouter` (peer, builds every trace) | {measurement.interpretive_per_second:,.0f} "
            "| 1.00 |",
            f"| compiled `Router` | {measurement.compiled_per_second:,.0f} | {measurement.ratio:.2f} |",
            f"| compiled `Router`, every trace read | {measurement.traced_per_second:,.0f} "
            f"| {measurement.traced_ratio:.2f} |",
        ]
    )


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=50, help="number of generated routes")
    parser.add_argument("--messages", type=int, default=20_000, help="number of generated messages")
    parser.add_argument("--seed", type=int, default=7, help="seed of the rule and message generators")
    parser.add_argument("--readme", type=Path, default=README, help="results page to rewrite")
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parse_arguments(argv)
    measurement = measure(arguments.rules, arguments.messages, arguments.seed)
    section = report(measurement, shlex.join([".venv/bin/python", "benchmarks/router.py", *argv]))
    print(section)
    if not arguments.no_readme:
        rewrite_section(arguments.readme, section, RESULTS_START, RESULTS_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
