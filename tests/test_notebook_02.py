"""Notebook 02 through papermill on the shared Peppol corpus, as `workbook run` executes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from canary import assert_no_canary

from workbook.cli.main import main
from workbook.paths import peppol_corpus_dir

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

CORPUS_DOCUMENTS = 44
# Corpus documents with lines, from which the notebook derives a valid single-line variant each.
CORPUS_DOCUMENTS_WITH_LINES = 31
BROKEN_VARIANTS = 6
VARIANT_SOURCES = 2


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("runs")
    corpus = str(peppol_corpus_dir())
    status = main(["run", "--notebook", "02", "-p", "data_path", corpus, "--output-dir", str(output)])
    assert status == 0, f"workbook run exited with {status}; see the reports under {output}"
    (run_folder,) = [path for path in output.iterdir() if path.is_dir()]
    return run_folder


@pytest.fixture(scope="module")
def figures(corpus_run: Path) -> dict[str, Any]:
    run = json.loads((corpus_run / "run.json").read_text())
    (notebook,) = run["notebooks"]
    assert notebook["status"] == "passed"
    return {name: figure["value"] for name, figure in notebook["figures"].items()}


def test_corpus_run_round_trips_every_document(figures: dict[str, Any]):
    valid = CORPUS_DOCUMENTS + CORPUS_DOCUMENTS_WITH_LINES

    assert figures["documents"] == CORPUS_DOCUMENTS
    assert figures["documents_round_tripped"] == CORPUS_DOCUMENTS
    assert figures["round_trips_ok"] == valid
    assert figures["messages"] == valid + BROKEN_VARIANTS * VARIANT_SOURCES


def test_corpus_run_dead_letters_each_broken_variant(figures: dict[str, Any]):
    broken = BROKEN_VARIANTS * VARIANT_SOURCES

    assert figures["dead_lettered"] == broken
    assert figures["dead_lettered_as_expected"] == broken
    assert figures["rejected_before_send"] == broken


def test_corpus_run_shows_naive_failures(figures: dict[str, Any]):
    assert figures["naive_consumer_failures"] >= CORPUS_DOCUMENTS_WITH_LINES


def test_corpus_run_keeps_no_key_in_outputs(corpus_run: Path):
    assert_no_canary(corpus_run)
