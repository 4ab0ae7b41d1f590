"""Tests of matrix files: validation, expansion into sweep points, and the labels in output names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbook.cli.matrix import (
    MatrixError,
    SweepPoint,
    expand_matrix,
    load_matrix,
    point_label,
    validate_matrix,
)


def test_expansion_is_cartesian_product_in_file_order() -> None:
    matrix = {"03": {"poison_rate": [0.1, 0.3], "order_count": [10, 20]}, "04": {"writers": [2, 6]}}

    points = expand_matrix(matrix)

    assert points == [
        SweepPoint("03", {"poison_rate": 0.1, "order_count": 10}),
        SweepPoint("03", {"poison_rate": 0.1, "order_count": 20}),
        SweepPoint("03", {"poison_rate": 0.3, "order_count": 10}),
        SweepPoint("03", {"poison_rate": 0.3, "order_count": 20}),
        SweepPoint("04", {"writers": 2}),
        SweepPoint("04", {"writers": 6}),
    ]


def test_single_value_gives_one_point() -> None:
    assert expand_matrix({"01": {"seed": [7]}}) == [SweepPoint("01", {"seed": 7})]


def test_repeated_value_runs_once() -> None:
    points = expand_matrix({"04": {"writers": [2, 2, 6]}})

    assert [point.parameters["writers"] for point in points] == [2, 6]


def test_equal_values_of_other_types_stay_apart() -> None:
    # 1 == True == 1.0 in Python, but each is a different notebook parameter.
    points = expand_matrix({"01": {"flag": [1, True, 1.0]}})

    assert [type(point.parameters["flag"]) for point in points] == [int, bool, float]


def test_list_and_mapping_values_are_kept() -> None:
    points = expand_matrix({"02": {"variants": [["malformed_xml"], {"a": 1}]}})

    assert [point.parameters["variants"] for point in points] == [["malformed_xml"], {"a": 1}]


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([1, 2], 'for example "03": {poison_rate: [0.1, 0.3]}'),
        ({}, "must map notebook ids to parameter lists"),
        ({3: {"seed": [1]}}, 'notebook id 3 in matrix is not a string: quote it, for example "03"'),
        ({"03": [0.1, 0.3]}, "notebook '03' in matrix must map parameter names to lists of values"),
        ({"03": {}}, "notebook '03' in matrix must map parameter names"),
        ({"03": {"poison_rate": 0.1}}, "'poison_rate' of notebook '03' in matrix must be a list"),
        ({"03": {"poison_rate": 0.1}}, "write poison_rate: [0.1]"),
        ({"03": {"poison_rate": "high"}}, "write poison_rate: [high]"),
        ({"03": {"poison_rate": []}}, "'poison_rate' of notebook '03' in matrix has an empty list"),
        ({"03": {"poison_rate": []}}, "write at least one value"),
        ({"03": {"2fast": [1]}}, "parameter name '2fast' of notebook '03' in matrix is not"),
        ({"03": {"day": [object()]}}, "'day' of notebook '03' in matrix has a value of type object"),
    ],
)  # fmt: skip
def test_invalid_matrix_names_key_and_fix(matrix: object, message: str) -> None:
    with pytest.raises(MatrixError, match=re.escape(message)):
        validate_matrix(matrix)


def test_matrix_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text('"03": {poison_rate: [0.1, 0.3]}\n"04":\n  writers: [2, 6]\n', encoding="utf-8")

    assert load_matrix(path) == {"03": {"poison_rate": [0.1, 0.3]}, "04": {"writers": [2, 6]}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("03: {poison_rate: [0.1]}\n", "notebook id 3 in matrix file"),
        ('"03": {poison_rate: [0.1\n', "is not valid YAML"),
        ('"03": {day: [2024-01-31]}\n', "has a value of type date"),
        ("", "must map notebook ids to parameter lists"),
    ],
)
def test_invalid_matrix_file_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(MatrixError, match=re.escape(message)):
        load_matrix(path)


def test_missing_matrix_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="cannot be read"):
        load_matrix(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("parameters", "label"),
    [
        ({"poison_rate": 0.1}, "poison_rate=0.1"),
        ({"writers": 6, "data_path": "../shared/data"}, "writers=6,data_path=..-shared-data"),
        ({"flag": True, "nothing": None}, "flag=true,nothing=null"),
        ({"variants": ["a b", "c"]}, "variants=a-b-c"),
        ({"text": "x" * 100}, "text=" + "x" * 40),
        ({"text": ""}, "text=empty"),
    ],
)
def test_point_label_is_file_safe(parameters: dict, label: str) -> None:
    assert point_label(parameters) == label
    assert SweepPoint("01", parameters).label() == label
