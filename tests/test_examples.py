"""The scheduling examples: a crontab line, a GitHub Actions workflow and an Azure Pipelines file.

Each must run the notebooks nightly, write the trend report, and keep the folder `workbook run` writes to.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from workbook.cli.matrix import expand_matrix, load_matrix
from workbook.cli.run import DEFAULT_OUTPUT_DIR, REPOSITORY_ROOT, plan_sweep

EXAMPLES = REPOSITORY_ROOT / "examples"
RUNS_FOLDER = DEFAULT_OUTPUT_DIR.relative_to(REPOSITORY_ROOT).as_posix()
RUN_COMMANDS = ("make run", "workbook run")
REPORT_COMMAND = f"workbook report {RUNS_FOLDER}"

# Allowed values of the five cron fields: minute, hour, day of month, month, day of week.
CRON_FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
CRON_ITEM = re.compile(r"^(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?$")


def cron_problems(expression: str) -> list[str]:
    """List what is wrong with a five-field cron expression of numbers, ranges, lists and steps."""
    fields = expression.split()
    if len(fields) != len(CRON_FIELD_RANGES):
        return [f"{expression!r} has {len(fields)} fields, not 5"]

    problems = []
    for text, (low, high) in zip(fields, CRON_FIELD_RANGES, strict=True):
        for item in text.split(","):
            match = CRON_ITEM.match(item)
            numbers = [int(group) for group in match.groups()[1:3] if group] if match else []
            if match is None or any(not low <= number <= high for number in numbers):
                problems.append(f"{item!r} is not a cron item within {low}-{high}")
    return problems


def load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))


def normalised(path: str) -> str:
    return path.strip().rstrip("/")


@pytest.mark.parametrize(
    ("expression", "valid"),
    [("15 2 * * *", True), ("*/10 0-6 1,15 * 1-5", True), ("60 2 * * *", False), ("15 2 * *", False)],
)
def test_cron_check_tells_valid_from_invalid(expression: str, valid: bool) -> None:
    assert (cron_problems(expression) == []) is valid


# crontab


def crontab_entries() -> list[str]:
    lines = (EXAMPLES / "crontab.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_crontab_has_one_valid_entry() -> None:
    (entry,) = crontab_entries()

    assert cron_problems(" ".join(entry.split()[:5])) == []


def test_crontab_runs_notebooks_then_report() -> None:
    (entry,) = crontab_entries()
    command = " ".join(entry.split()[5:])

    assert any(run in command for run in RUN_COMMANDS)
    assert REPORT_COMMAND in command
    assert command.index("make run") < command.index(REPORT_COMMAND)
    shlex.split(command)  # balanced quotes, as the shell that cron starts needs


# GitHub Actions


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load_yaml("github-actions-nightly.yml")


def workflow_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_workflow_runs_on_valid_schedule(workflow: dict[str, Any]) -> None:
    # YAML 1.1 reads the key `on` as the boolean True.
    triggers = workflow.get("on", workflow.get(True))
    (schedule,) = triggers["schedule"]

    assert cron_problems(schedule["cron"]) == []


def test_workflow_runs_notebooks_and_report(workflow: dict[str, Any]) -> None:
    scripts = [step["run"] for step in workflow_steps(workflow) if "run" in step]

    assert any(run in script for script in scripts for run in RUN_COMMANDS)
    assert any(REPORT_COMMAND in script for script in scripts)


def test_workflow_uploads_runs_folder_always(workflow: dict[str, Any]) -> None:
    uploads = [
        step
        for step in workflow_steps(workflow)
        if step.get("uses", "").startswith("actions/upload-artifact@")
    ]

    assert len(uploads) == 1
    assert normalised(uploads[0]["with"]["path"]) == RUNS_FOLDER
    assert uploads[0]["if"] == "always()"


def test_workflow_keeps_runs_between_nights(workflow: dict[str, Any]) -> None:
    caches = {
        step["uses"].split("@")[0]: step
        for step in workflow_steps(workflow)
        if "cache" in step.get("uses", "")
    }

    assert normalised(caches["actions/cache/restore"]["with"]["path"]) == RUNS_FOLDER
    assert normalised(caches["actions/cache/save"]["with"]["path"]) == RUNS_FOLDER
    assert caches["actions/cache/save"]["if"] == "always()"


def test_workflow_passes_settings_from_secrets(workflow: dict[str, Any]) -> None:
    (job,) = workflow["jobs"].values()

    assert (
        job["env"]["WORKBOOK_SERVICEBUS_CONNECTION_STRING"]
        == "${{ secrets.WORKBOOK_SERVICEBUS_CONNECTION_STRING }}"
    )
    assert job["env"]["WORKBOOK_COSMOS_KEY"] == "${{ secrets.WORKBOOK_COSMOS_KEY }}"


# Azure Pipelines


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return load_yaml("azure-pipelines-nightly.yml")


def test_pipeline_runs_on_valid_schedule(pipeline: dict[str, Any]) -> None:
    (schedule,) = pipeline["schedules"]

    assert cron_problems(schedule["cron"]) == []
    assert schedule["always"] is True
    assert pipeline["trigger"] == "none"


def test_pipeline_runs_notebooks_and_report(pipeline: dict[str, Any]) -> None:
    scripts = [step["script"] for step in pipeline["steps"] if "script" in step]

    assert any(run in script for script in scripts for run in RUN_COMMANDS)
    assert any(REPORT_COMMAND in script for script in scripts)


def test_pipeline_publishes_runs_folder_always(pipeline: dict[str, Any]) -> None:
    tasks = {step["task"]: step for step in pipeline["steps"] if "task" in step}
    publish = tasks["PublishPipelineArtifact@1"]

    assert normalised(publish["inputs"]["targetPath"]) == RUNS_FOLDER
    assert publish["condition"] == "always()"
    assert normalised(tasks["Cache@2"]["inputs"]["path"]) == RUNS_FOLDER


def test_sweep_example_plans_on_the_notebooks() -> None:
    points = expand_matrix(load_matrix(EXAMPLES / "sweep.yaml"))
    plans = plan_sweep(points, REPOSITORY_ROOT / "notebooks", {})

    assert len(plans) == 4
    assert {plan.notebook_id for plan in plans} == {"03", "04"}
