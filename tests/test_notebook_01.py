"""Notebook 01 through papermill on the shared Peppol corpus, as `workbook run` executes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from canary import assert_no_canary

from workbook.cli.main import main
from workbook.paths import peppol_corpus_dir

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]

CORPUS_DOCUMENTS = 44


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("runs")
    corpus = str(peppol_corpus_dir())
    status = main(["run", "--notebook", "01", "-p", "data_path", corpus, "--output-dir", str(output)])
    assert status == 0, f"workbook run exited with {status}; see the reports under {output}"
    (run_folder,) = [path for path in output.iterdir() if path.is_dir()]
    return run_folder


def test_corpus_run_routes_every_document(corpus_run: Path):
    run = json.loads((corpus_run / "run.json").read_text())
    (notebook,) = run["notebooks"]
    figures = {name: figure["value"] for name, figure in notebook["figures"].items()}

    assert notebook["status"] == "passed"
    assert figures["documents"] == CORPUS_DOCUMENTS
    assert figures["routed_documents"] == CORPUS_DOCUMENTS
    assert figures["unrouted_documents"] == 0


def test_corpus_run_report_says_so(corpus_run: Path):
    report = (corpus_run / "report.md").read_text()

    assert "routed_documents" in report
    assert "44" in report
    assert (corpus_run / "report.html").exists()


def test_corpus_run_keeps_no_key_in_outputs(corpus_run: Path):
    assert_no_canary(corpus_run)
