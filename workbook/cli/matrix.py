"""Parameter sweeps: a matrix file maps notebook ids to parameter lists, expanded into every combination."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from workbook.cli import CliError

MATRIX_FILE_HELP = """\
matrix file (--matrix FILE, YAML): maps a notebook id to its parameters, each with a list of values.
Every combination of one notebook's values runs once, for example:

    "03": {poison_rate: [0.1, 0.3]}
    "04": {writers: [2, 6]}

runs 03 twice and 04 twice. Quote the ids: YAML reads 03 as the number 3.
"""

# Characters kept as they are in an output file name. Any run of other characters becomes "-".
_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_VALUE_CHARACTERS = 40
_SCALAR_TYPES = (str, bool, int, float, type(None))


class MatrixError(CliError):
    """An invalid matrix file: the message names the key and what to write instead."""


@dataclass(frozen=True)
class SweepPoint:
    """One combination of a sweep: the notebook id and the value of each swept parameter."""

    notebook: str
    parameters: dict[str, Any]

    def label(self) -> str:
        """Describe the point for file names and reports, for example `poison_rate=0.1,writers=4`."""
        return point_label(self.parameters)


def load_matrix(path: Path) -> dict[str, dict[str, list[Any]]]:
    """Read and validate a matrix file. Raises MatrixError naming the first invalid key."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MatrixError(f"matrix file {str(path)!r} cannot be read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise MatrixError(f"matrix file {str(path)!r} is not valid YAML: {error}") from error
    return validate_matrix(content, where=f"matrix file {str(path)!r}")


def validate_matrix(content: object, *, where: str = "matrix") -> dict[str, dict[str, list[Any]]]:
    """Check the shape notebook id -> parameter name -> non-empty list of values, and return it."""
    if not isinstance(content, dict) or not content:
        raise MatrixError(
            f'{where} must map notebook ids to parameter lists, for example "03": {{poison_rate: [0.1, 0.3]}}'
        )

    matrix = {}
    for notebook, parameters in content.items():
        _check_notebook_key(notebook, where)
        matrix[notebook] = _checked_parameters(notebook, parameters, where)
    return matrix


def expand_matrix(matrix: dict[str, dict[str, list[Any]]]) -> list[SweepPoint]:
    """Return every combination of each notebook's values, in file order, the last parameter varying fastest.

    A value repeated in one list gives one point, not two identical runs.
    """
    points = []
    for notebook, parameters in validate_matrix(matrix).items():
        names = list(parameters)
        value_lists = [_unique(parameters[name]) for name in names]
        for values in itertools.product(*value_lists):
            points.append(SweepPoint(notebook, dict(zip(names, values, strict=True))))
    return points


def point_label(parameters: dict[str, Any]) -> str:
    """Join `name=value` pairs with commas, each value shortened and made safe for file names."""
    return ",".join(f"{name}={_file_safe(value)}" for name, value in parameters.items())


def _check_notebook_key(notebook: object, where: str) -> None:
    if isinstance(notebook, str) and notebook.strip():
        return
    hint = f'"{notebook:02d}"' if isinstance(notebook, int) and not isinstance(notebook, bool) else '"03"'
    raise MatrixError(f"notebook id {notebook!r} in {where} is not a string: quote it, for example {hint}")


def _checked_parameters(notebook: str, parameters: object, where: str) -> dict[str, list[Any]]:
    if not isinstance(parameters, dict) or not parameters:
        raise MatrixError(
            f"notebook {notebook!r} in {where} must map parameter names to lists of values, "
            f'for example "{notebook}": {{seed: [1, 2]}}'
        )

    checked = {}
    for name, values in parameters.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise MatrixError(
                f"parameter name {name!r} of notebook {notebook!r} in {where} is not a Python identifier: "
                "use the name from the notebook's parameters cell"
            )
        if not isinstance(values, list):
            raise MatrixError(
                f"parameter {name!r} of notebook {notebook!r} in {where} must be a list of values: "
                f"write {name}: [{_yaml_scalar(values)}]"
            )
        if not values:
            raise MatrixError(
                f"parameter {name!r} of notebook {notebook!r} in {where} has an empty list: "
                f"write at least one value, for example {name}: [1]"
            )
        for value in values:
            _check_value(notebook, name, value, where)
        checked[name] = values
    return checked


def _check_value(notebook: str, name: str, value: object, where: str) -> None:
    if _is_json_like(value):
        return
    raise MatrixError(
        f"parameter {name!r} of notebook {notebook!r} in {where} has a value of type {type(value).__name__}: "
        "use numbers, bools, strings, lists or mappings, and quote dates"
    )


def _is_json_like(value: object) -> bool:
    if isinstance(value, _SCALAR_TYPES):
        return True
    if isinstance(value, list):
        return all(_is_json_like(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json_like(item) for key, item in value.items())
    return False


def _unique(values: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for value in values:
        # `1 == True` in Python, so the type takes part in the comparison.
        if not any(type(seen) is type(value) and seen == value for seen in unique):
            unique.append(value)
    return unique


def _yaml_scalar(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _file_safe(value: object) -> str:
    text = _UNSAFE_FILE_CHARACTERS.sub("-", _yaml_scalar(value)).strip("-") or "empty"
    return text[:_MAX_VALUE_CHARACTERS]
