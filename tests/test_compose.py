"""docker-compose.yml: Microsoft's emulators, and the Service Bus emulator's Config.json.

Docker is not run here: the tests parse the compose file and the Config.json it mounts, compare the
entities with those the package's local emulator loads, and check the limits of Microsoft's emulator.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from workbook.paths import data_dir, project_root
from workbook.servicebus.entities import EmulatorConfig, load_config, parse_duration

COMPOSE_FILE = project_root() / "docker-compose.yml"
LOCAL_CONFIG = data_dir() / "servicebus-config.json"
EMULATOR_CONFIG_PATH = "/ServiceBus_Emulator/ConfigFiles/Config.json"
SERVICEBUS_IMAGE = "mcr.microsoft.com/azure-messaging/servicebus-emulator"
SQL_EDGE_IMAGE = "mcr.microsoft.com/azure-sql-edge"
COSMOS_IMAGE = "mcr.microsoft.com/cosmosdb/linux/azure-cosmos-emulator"

# Limits of Microsoft's Service Bus emulator, from ServiceBus-Emulator/Schema/Config-schema.json in
# github.com/Azure/azure-service-bus-emulator-installer.
MAX_QUEUES_AND_TOPICS = 50
NAMESPACE_NAME = "sbemulatorns"
MAX_DELIVERY_COUNT = range(1, 11)
QUEUE_LOCK = (timedelta(seconds=5), timedelta(minutes=5))
SUBSCRIPTION_LOCK = (timedelta(minutes=1), timedelta(minutes=5))
TIME_TO_LIVE = (timedelta(minutes=5), timedelta(hours=1))
DUPLICATE_WINDOW = (timedelta(seconds=5), timedelta(minutes=5))
QUEUE_PROPERTIES = {
    "DeadLetteringOnMessageExpiration",
    "DefaultMessageTimeToLive",
    "DuplicateDetectionHistoryTimeWindow",
    "ForwardDeadLetteredMessagesTo",
    "ForwardTo",
    "LockDuration",
    "MaxDeliveryCount",
    "RequiresDuplicateDetection",
    "RequiresSession",
}
TOPIC_PROPERTIES = {
    "DefaultMessageTimeToLive",
    "DuplicateDetectionHistoryTimeWindow",
    "RequiresDuplicateDetection",
}
SUBSCRIPTION_PROPERTIES = QUEUE_PROPERTIES - {
    "DuplicateDetectionHistoryTimeWindow",
    "RequiresDuplicateDetection",
}
FILTER_TYPES = {"Sql", "Correlation"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def emulator_config_file(compose: dict[str, Any]) -> Path:
    """The host file that compose mounts as the Service Bus emulator's Config.json."""
    volumes = compose["services"]["servicebus-emulator"]["volumes"]
    sources = [volume.split(":")[0] for volume in volumes if volume.split(":")[1] == EMULATOR_CONFIG_PATH]
    assert len(sources) == 1, f"expected one volume mounted at {EMULATOR_CONFIG_PATH}: {volumes}"
    return (COMPOSE_FILE.parent / sources[0]).resolve()


@pytest.fixture(scope="module")
def emulator_config(emulator_config_file: Path) -> dict[str, Any]:
    return json.loads(emulator_config_file.read_text(encoding="utf-8"))


def entity_names(config: dict[str, Any]) -> dict[str, Any]:
    """Name every entity of a raw Config.json: queues, and each topic's subscriptions and their rules."""
    (namespace,) = config["UserConfig"]["Namespaces"]
    return {
        "queues": sorted(queue["Name"] for queue in namespace.get("Queues", [])),
        "topics": {
            topic["Name"]: {
                subscription["Name"]: sorted(rule["Name"] for rule in subscription.get("Rules", []))
                for subscription in topic.get("Subscriptions", [])
            }
            for topic in namespace.get("Topics", [])
        },
    }


def loaded_names(config: EmulatorConfig) -> dict[str, Any]:
    """Name every entity the local emulator loaded, in the shape of `entity_names`."""
    return {
        "queues": sorted(config.queue_names()),
        "topics": {
            topic.name: {
                subscription.subscription: sorted(rule.name for rule in subscription.rules)
                for subscription in topic.subscriptions
            }
            for topic in config.topics
        },
    }


def in_range(text: str, limits: tuple[timedelta, timedelta]) -> bool:
    return limits[0] <= parse_duration(text) <= limits[1]


def property_problems(where: str, properties: dict[str, Any], allowed: set[str], lock: tuple) -> list[str]:
    problems = [
        f"{where}: property {name} is not in Microsoft's schema" for name in set(properties) - allowed
    ]
    if "MaxDeliveryCount" in properties and properties["MaxDeliveryCount"] not in MAX_DELIVERY_COUNT:
        problems.append(f"{where}: MaxDeliveryCount {properties['MaxDeliveryCount']} is not 1 to 10")
    checks = [("LockDuration", lock), ("DefaultMessageTimeToLive", TIME_TO_LIVE)]
    checks.append(("DuplicateDetectionHistoryTimeWindow", DUPLICATE_WINDOW))
    for name, limits in checks:
        if name in properties and not in_range(properties[name], limits):
            problems.append(f"{where}: {name} {properties[name]} is outside {limits[0]} to {limits[1]}")
    return problems


def microsoft_limit_problems(config: dict[str, Any]) -> list[str]:
    """List every setting of a Config.json that Microsoft's emulator rejects or caps."""
    namespaces = config["UserConfig"]["Namespaces"]
    problems = [] if len(namespaces) == 1 else [f"{len(namespaces)} namespaces, the emulator takes one"]
    namespace = namespaces[0]
    if namespace["Name"] != NAMESPACE_NAME:
        problems.append(f"namespace {namespace['Name']!r} is not {NAMESPACE_NAME!r}")
    if "Type" not in config["UserConfig"].get("Logging", {}):
        problems.append("UserConfig.Logging.Type is missing")

    queues, topics = namespace.get("Queues", []), namespace.get("Topics", [])
    if len(queues) + len(topics) > MAX_QUEUES_AND_TOPICS:
        problems.append(f"{len(queues) + len(topics)} queues and topics, more than {MAX_QUEUES_AND_TOPICS}")
    for queue in queues:
        problems += property_problems(
            f"queue {queue['Name']}", queue["Properties"], QUEUE_PROPERTIES, QUEUE_LOCK
        )
    for topic in topics:
        problems += property_problems(
            f"topic {topic['Name']}", topic["Properties"], TOPIC_PROPERTIES, QUEUE_LOCK
        )
        for subscription in topic["Subscriptions"]:
            where = f"subscription {topic['Name']}/{subscription['Name']}"
            properties = subscription.get("Properties", {})
            problems += property_problems(where, properties, SUBSCRIPTION_PROPERTIES, SUBSCRIPTION_LOCK)
            for rule in subscription.get("Rules", []):
                if rule["Properties"]["FilterType"] not in FILTER_TYPES:
                    problems.append(
                        f"{where}: rule {rule['Name']} has FilterType {rule['Properties']['FilterType']}"
                    )
    return problems


def test_compose_runs_microsoft_emulators(compose: dict[str, Any]) -> None:
    services = compose["services"]

    assert services["servicebus-emulator"]["image"].startswith(SERVICEBUS_IMAGE + ":")
    assert services["sqledge"]["image"].startswith(SQL_EDGE_IMAGE + ":")
    assert services["cosmosdb-emulator"]["image"].startswith(COSMOS_IMAGE + ":")


def test_servicebus_emulator_uses_sql_edge(compose: dict[str, Any]) -> None:
    emulator = compose["services"]["servicebus-emulator"]
    database = compose["services"][emulator["environment"]["SQL_SERVER"]]

    assert emulator["depends_on"] == [emulator["environment"]["SQL_SERVER"]]
    assert emulator["environment"]["MSSQL_SA_PASSWORD"] == database["environment"]["MSSQL_SA_PASSWORD"]
    assert set(emulator["networks"]) & set(database["networks"])


def test_emulator_ports_match_workbook_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]

    # Endpoint=sb://localhost means AMQP on port 5672, and the Cosmos DB gateway is https://localhost:8081/.
    assert "5672:5672" in services["servicebus-emulator"]["ports"]
    assert "8081:8081" in services["cosmosdb-emulator"]["ports"]


def test_licence_and_password_come_from_environment(compose: dict[str, Any]) -> None:
    for name in ["servicebus-emulator", "sqledge"]:
        environment = compose["services"][name]["environment"]

        assert environment["ACCEPT_EULA"].startswith("${ACCEPT_EULA:?")
        assert environment["MSSQL_SA_PASSWORD"].startswith("${MSSQL_SA_PASSWORD:?")


def test_emulator_config_is_the_local_config(emulator_config_file: Path) -> None:
    assert emulator_config_file == LOCAL_CONFIG.resolve()


def test_emulator_config_names_local_entities(emulator_config: dict[str, Any]) -> None:
    names = entity_names(emulator_config)

    assert names == loaded_names(load_config(LOCAL_CONFIG))
    assert "order-processing" in names["queues"]
    assert "all-documents" in names["topics"]["documents"]


def test_emulator_config_within_microsoft_limits(emulator_config: dict[str, Any]) -> None:
    assert microsoft_limit_problems(emulator_config) == []


def first_queue(namespace: dict[str, Any]) -> dict[str, Any]:
    return namespace["Queues"][0]["Properties"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda ns: first_queue(ns).update(MaxDeliveryCount=20), "MaxDeliveryCount 20 is not 1 to 10"),
        (lambda ns: first_queue(ns).update(LockDuration="PT10M"), "LockDuration PT10M is outside"),
        (lambda ns: first_queue(ns).update(MaxMessageSizeInKilobytes=512), "not in Microsoft's schema"),
        (lambda ns: ns.update(Name="other"), "namespace 'other' is not 'sbemulatorns'"),
        (lambda ns: ns["Queues"].extend({"Name": f"q{i}", "Properties": {}} for i in range(50)), "than 50"),
    ],
)  # fmt: skip
def test_limit_check_finds_violations(emulator_config: dict[str, Any], change: Any, problem: str) -> None:
    config = json.loads(json.dumps(emulator_config))
    change(config["UserConfig"]["Namespaces"][0])

    assert any(problem in found for found in microsoft_limit_problems(config)), microsoft_limit_problems(
        config
    )
