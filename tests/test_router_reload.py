"""Reloading routing rules from their YAML file while routing, with real files in a temporary folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from workbook.esb import ReloadingRouter, RoutableMessage, RoutingRuleError, RulesFile

ORDER = RoutableMessage(body={"document_type": "Order"}, properties={}, message_id="m-1")


def rules_text(destination: str, route: str = "orders") -> str:
    routes = [
        {"name": route, "destination": destination, "when": {"field": "document_type", "equals": "Order"}}
    ]
    return yaml.safe_dump({"version": 1, "routes": routes})


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(rules_text("orders"), encoding="utf-8")
    return path


def test_change_applies_before_routing(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)
    assert router.route(ORDER).destinations == ("orders",)

    rules_path.write_text(rules_text("orders-v2"), encoding="utf-8")

    assert router.route(ORDER).destinations == ("orders-v2",)
    assert router.reloads == 1
    assert router.last_reload_error is None


def test_unchanged_file_is_not_reloaded(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)

    router.route(ORDER)
    rules_path.write_text(rules_text("orders"), encoding="utf-8")
    router.route(ORDER)

    assert router.reloads == 0
    assert router.router.reloads == 0


def test_same_size_rewrite_is_detected(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)

    rules_path.write_text(rules_text("orders-b"), encoding="utf-8")
    router.refresh()
    rules_path.write_text(rules_text("orders-c"), encoding="utf-8")

    assert router.route(ORDER).destinations == ("orders-c",)
    assert router.reloads == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("routes:\n  - name: [unclosed\n", "invalid YAML"),
        (rules_text("bad name!"), "invalid destination"),
        ("routes: 3\n", "expected a list of routes"),
        (b"\xff\xfe", "invalid YAML"),
    ],
    ids=["yaml syntax", "invalid destination", "routes not a list", "not utf-8"],
)
def test_invalid_file_keeps_last_good_rules(
    rules_path: Path, content: str | bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    router = ReloadingRouter(rules_path)

    if isinstance(content, bytes):
        rules_path.write_bytes(content)
    else:
        rules_path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="workbook.esb.reload"):
        decision = router.route(ORDER)

    assert decision.destinations == ("orders",)
    assert isinstance(router.last_reload_error, RoutingRuleError)
    assert problem in str(router.last_reload_error)
    assert str(rules_path) in str(router.last_reload_error)
    assert router.failed_reloads == 1
    assert router.reloads == 0
    assert len(caplog.records) == 1


def test_invalid_file_is_logged_once(rules_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    router = ReloadingRouter(rules_path)
    rules_path.write_text("routes: 3\n", encoding="utf-8")

    with caplog.at_level(logging.ERROR, logger="workbook.esb.reload"):
        for _ in range(5):
            router.route(ORDER)

    assert len(caplog.records) == 1
    assert router.failed_reloads == 1


def test_fixed_file_clears_the_error(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)
    rules_path.write_text("routes: 3\n", encoding="utf-8")
    router.refresh()

    rules_path.write_text(rules_text("orders-fixed"), encoding="utf-8")

    assert router.route(ORDER).destinations == ("orders-fixed",)
    assert router.last_reload_error is None
    assert router.reloads == 1


def test_reverted_file_clears_error(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)
    good = rules_path.read_text(encoding="utf-8")
    rules_path.write_text("routes: 3\n", encoding="utf-8")
    router.refresh()

    rules_path.write_text(good, encoding="utf-8")

    assert router.refresh() is False
    assert router.last_reload_error is None
    assert router.reloads == 0


def test_deleted_file_keeps_rules(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)

    rules_path.unlink()
    first = router.route(ORDER)
    router.route(ORDER)
    error = router.last_reload_error
    rules_path.write_text(rules_text("orders-back"), encoding="utf-8")

    assert first.destinations == ("orders",)
    assert error is not None
    assert "cannot read the rules file" in str(error)
    assert router.failed_reloads == 1
    assert router.route(ORDER).destinations == ("orders-back",)
    assert router.last_reload_error is None


def test_reload_keeps_route_statistics_by_name(rules_path: Path) -> None:
    router = ReloadingRouter(rules_path)
    router.route(ORDER)

    text = yaml.safe_load(rules_text("orders-v2"))
    text["routes"].append({"name": "extra", "destination": "extra", "when": {"field": "x", "exists": True}})
    rules_path.write_text(yaml.safe_dump(text), encoding="utf-8")
    router.route(ORDER)
    by_route = router.statistics().by_route

    assert by_route["orders"].evaluated == 2
    assert by_route["orders"].matched == 2
    assert by_route["orders"].destination == "orders-v2"
    assert by_route["extra"].evaluated == 0


def test_invalid_file_at_start_raises(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes: 3\n", encoding="utf-8")

    with pytest.raises(RoutingRuleError, match="expected a list of routes"):
        ReloadingRouter(path)


def test_missing_file_at_start_raises(tmp_path: Path) -> None:
    with pytest.raises(RoutingRuleError, match="cannot read the rules file"):
        ReloadingRouter(tmp_path / "absent.yaml")


def test_rules_file_digest_follows_content(rules_path: Path) -> None:
    rules_file = RulesFile(rules_path)

    _, first = rules_file.read()
    rules_path.write_text(rules_text("other"), encoding="utf-8")
    _, second = rules_file.read()

    assert first != second
    assert len(first) == 64
