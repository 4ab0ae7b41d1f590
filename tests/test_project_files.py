"""Project files that no command checks: conda cannot run here, so its environment is compared by reading."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_ONLY = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, f"unreadable requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(_split(requirement) for requirement in requirements)


def _conda_requirements() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    entries = [entry for entry in environment["dependencies"] if isinstance(entry, str)]
    pairs = dict(_split(entry) for entry in entries)
    return {name: version for name, version in pairs.items() if name not in CONDA_ONLY}


def test_environment_names_same_packages_as_pyproject():
    assert set(_conda_requirements()) == set(_pyproject_requirements())


def test_environment_pins_same_versions_as_pyproject():
    conda, pyproject = _conda_requirements(), _pyproject_requirements()

    different = {name: (conda[name], pyproject[name]) for name in conda if conda[name] != pyproject.get(name)}

    assert different == {}


def test_environment_installs_the_package_itself():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict))

    assert "--editable ." in pip_section


def test_environment_uses_conda_forge_only():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())

    assert environment["channels"] == ["conda-forge"]


def test_emulator_config_names_every_routing_destination():
    from workbook.esb import RoutingRules
    from workbook.servicebus import load_config

    queues = set(load_config(ROOT / "data" / "servicebus-config.json").queue_names())
    destinations = set(RoutingRules.load(ROOT / "data" / "routes.yaml").destinations())

    assert destinations <= queues


NOTEBOOK_SETTINGS = re.compile(r"load_settings\((.*?)\)")
NOTEBOOK_PATHS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code_of(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda path: path.stem)
def test_notebook_settings_follow_target_parameter(path: Path):
    # A notebook that reads the settings without its target would follow WORKBOOK_TARGET from the
    # environment, and could reach Azure while its target parameter is local.
    for arguments in NOTEBOOK_SETTINGS.findall(_code_of(path)):
        assert '"WORKBOOK_TARGET": ' in arguments, f"{path.name}: load_settings({arguments})"
