"""Tests of metrics.json and of `workbook report`, on run folders written from in-memory run results."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from workbook.cli import CliError
from workbook.cli.history import load_history
from workbook.cli.history_html import CROSSED_MARK, render_history_html
from workbook.cli.main import EXIT_INVALID_INPUT, main
from workbook.cli.metrics import (
    METRICS_FILE,
    MetricsError,
    metrics_from_run,
    read_metrics,
    write_metrics,
)
from workbook.cli.report import NotebookFailure, NotebookResult, NotebookStatus, RunResult
from workbook.cli.thresholds import THRESHOLDS, Threshold

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SWEEP_THRESHOLDS = {"03_dead_letter_overflow": {"dlq_after_fix": Threshold(maximum=0)}}
TARGET = {"target": "emulator", "servicebus_connection_string": "Endpoint=sb://localhost;SharedAccessKey=***"}


def figure(value: object, unit: str | None = None) -> dict:
    return {"value": value, "unit": unit, "note": None}


def notebook_result(
    rate: float, dlq_after_fix: int, *, failure: NotebookFailure | None = None, swept: bool = True
) -> NotebookResult:
    label = f"03_dead_letter_overflow__poison_rate={rate}"
    return NotebookResult(
        notebook_id="03",
        source=Path("/repo/notebooks/03_dead_letter_overflow.ipynb"),
        output=f"{label}.ipynb",
        status=NotebookStatus.FAILED if failure else NotebookStatus.PASSED,
        duration_s=12.3456,
        parameters={"poison_rate": rate, "seed": 7},
        default_parameters={"poison_rate": "0.2", "seed": "0"},
        figures={
            "dlq_after_fix": {"name": "dlq_after_fix", **figure(dlq_after_fix)},
            "lag": {"name": "lag", **figure(1.5, "s")},
            "backend": {"name": "backend", **figure("sqlite")},
        },
        failure=failure,
        sweep={"poison_rate": rate} if swept else {},
    )


def write_run(runs_dir: Path, run_id: str, results: list[NotebookResult]) -> Path:
    folder = runs_dir / run_id
    folder.mkdir(parents=True)
    started = f"2026-01-0{run_id[-1]}T00:00:00+00:00"
    run = RunResult(run_id, folder, "emulator", started, started, 600, results, target_settings=TARGET)
    return write_metrics(metrics_from_run(run), folder)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """Three runs of a two-point sweep; the third run's poison_rate=0.3 point leaves 2 messages in the DLQ."""
    runs = tmp_path / "runs"
    failure = NotebookFailure("AssertionError", "the DLQ still holds 2 messages", 14, 16, "abc123", "nb.html")
    write_run(runs, "20260101T000000Z-1", [notebook_result(0.1, 0), notebook_result(0.3, 0)])
    write_run(runs, "20260102T000000Z-2", [notebook_result(0.1, 0), notebook_result(0.3, 0)])
    write_run(runs, "20260103T000000Z-3", [notebook_result(0.1, 0), notebook_result(0.3, 2, failure=failure)])
    return runs


# metrics.json


def test_metrics_round_trip_keeps_values(tmp_path: Path) -> None:
    failure = NotebookFailure("ZeroDivisionError", "division by zero", 3, 4, "903d7caf", "02_failing.html")
    results = [notebook_result(0.1, 0), notebook_result(0.3, 2, failure=failure)]
    run = RunResult("20260101T000000Z", tmp_path, "emulator", "start", "end", 600, results, TARGET)
    written = metrics_from_run(run)

    path = write_metrics(written, tmp_path)
    read_back = read_metrics(path)

    assert path.name == METRICS_FILE
    assert read_back == written
    assert read_back.target == TARGET
    assert read_back.notebooks[1].failure == failure
    assert read_back.notebooks[1].sweep == {"poison_rate": 0.3}
    assert read_back.notebooks[0].figures["lag"] == {"value": 1.5, "unit": "s", "note": None}
    assert read_back.notebooks[0].notebook == "03_dead_letter_overflow"
    assert read_back.notebooks[0].duration_s == 12.346


def test_metrics_keep_int_and_float_types(tmp_path: Path) -> None:
    run = RunResult("r", tmp_path, "local", "s", "e", 600, [notebook_result(0.1, 0)])
    figures = read_metrics(write_metrics(metrics_from_run(run), tmp_path)).notebooks[0].figures

    assert type(figures["dlq_after_fix"]["value"]) is int
    assert type(figures["lag"]["value"]) is float


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": 99}', "is not a metrics file of format 1"),
        ('{"format": 1, "run_id": "x"}', "KeyError"),
    ],
)
def test_invalid_metrics_file_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text(content, encoding="utf-8")

    with pytest.raises(MetricsError, match=re.escape(message)):
        read_metrics(path)


# history


def test_history_orders_runs_by_start(runs_dir: Path) -> None:
    (runs_dir / "not-a-run").mkdir()

    history = load_history(runs_dir)

    assert [run.metrics.run_id for run in history.runs] == [
        "20260101T000000Z-1",
        "20260102T000000Z-2",
        "20260103T000000Z-3",
    ]
    assert history.skipped == ["not-a-run: no metrics.json"]
    assert history.notebooks() == ["03_dead_letter_overflow"]


def test_unreadable_metrics_folder_is_skipped(runs_dir: Path) -> None:
    broken = runs_dir / "20260104T000000Z"
    broken.mkdir()
    (broken / METRICS_FILE).write_text("{", encoding="utf-8")

    history = load_history(runs_dir)

    assert len(history.runs) == 3
    assert history.skipped[0].startswith("20260104T000000Z: ")


def test_crossing_found_only_where_value_exceeds(runs_dir: Path) -> None:
    crossings = load_history(runs_dir).crossings(SWEEP_THRESHOLDS)

    assert [(c.run_id, c.sweep, c.figure, c.value) for c in crossings] == [
        ("20260103T000000Z-3", "poison_rate=0.3", "dlq_after_fix", 2)
    ]
    assert crossings[0].describe() == (
        "run 20260103T000000Z-3, 03_dead_letter_overflow [poison_rate=0.3]: "
        "dlq_after_fix = 2 (expected at most 0)"
    )


def test_missing_runs_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="runs folder .* not found"):
        load_history(tmp_path / "missing")


def test_folder_without_metrics_rejected(tmp_path: Path) -> None:
    (tmp_path / "20260101T000000Z").mkdir()

    with pytest.raises(CliError, match="no run folder with metrics.json"):
        load_history(tmp_path)


# HTML page


def page_of(runs_dir: Path) -> str:
    return render_history_html(load_history(runs_dir), runs_dir, SWEEP_THRESHOLDS)


def test_page_marks_only_crossed_cell(runs_dir: Path) -> None:
    page = page_of(runs_dir)

    crossed = re.findall(r'<td class="crossed"[^>]*>([^<]*)</td>', page)
    assert crossed == [f"{CROSSED_MARK} 2"]
    assert 'title="outside the threshold: expected at most 0"' in page


def test_page_has_row_per_run_and_point(runs_dir: Path) -> None:
    page = page_of(runs_dir)
    section = page[page.index('<section id="03_dead_letter_overflow">') :]

    assert section.count("<td>poison_rate=0.1</td>") == 3
    assert section.count("<td>poison_rate=0.3</td>") == 3
    assert "<td>1.5 s</td>" in section
    assert "<td>sqlite</td>" in section


def test_page_embeds_trend_png(runs_dir: Path) -> None:
    page = page_of(runs_dir)

    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1
    assert base64.b64decode(images[0]).startswith(PNG_SIGNATURE)


def test_page_links_failing_cell_in_its_run_folder(runs_dir: Path) -> None:
    page = page_of(runs_dir)

    assert '<a class="failing-cell" href="20260103T000000Z-3/nb.html#cell-id=abc123">' in page
    assert "the DLQ still holds 2 messages" in page


def test_page_shows_target_of_each_run(runs_dir: Path) -> None:
    page = page_of(runs_dir)

    assert page.count("target: <code>emulator</code>") == 3
    assert "SharedAccessKey=***" in page
    assert '<a href="20260101T000000Z-1/report.html">' in page


def test_page_escapes_values(tmp_path: Path) -> None:
    result = notebook_result(0.1, 0)
    result.figures["backend"]["value"] = "<script>x</script>"
    write_run(tmp_path, "20260101T000000Z-1", [result])

    page = page_of(tmp_path)

    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_package_thresholds_name_recorded_figures() -> None:
    # A misspelt figure name would never be checked, so each one must appear in its notebook's record calls.
    notebooks = Path(__file__).parents[1] / "notebooks"
    checked = 0
    for notebook, limits in THRESHOLDS.items():
        path = notebooks / f"{notebook}.ipynb"
        if not path.is_file():
            continue  # a threshold of a notebook this checkout lacks is never applied
        checked += 1
        text = path.read_text(encoding="utf-8")
        for name in limits:
            assert f'record(\\"{name}\\"' in text, f"{notebook} records no figure {name!r}"
    assert checked >= 2, "the thresholds of notebooks 03 and 04 were not checked"


@pytest.mark.parametrize(
    ("threshold", "value", "crossed"),
    [
        (Threshold(maximum=0), 0, False),
        (Threshold(maximum=0), 1, True),
        (Threshold(maximum=0), 0.5, True),
        (Threshold(minimum=1), 0, True),
        (Threshold(minimum=1, maximum=5), 5, False),
        (Threshold(maximum=0), "3", False),
        (Threshold(maximum=0), True, False),
    ],
)
def test_threshold_crossing(threshold: Threshold, value: object, crossed: bool) -> None:
    assert threshold.crossed(value) is crossed


# the command


def test_report_command_writes_page(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exit_status = main(["report", str(runs_dir)])
    output = capsys.readouterr().out

    assert exit_status == 0
    assert (runs_dir / "history.html").is_file()
    assert "runs: 3, skipped folders: 0" in output
    assert f"report: {runs_dir / 'history.html'}" in output


def test_report_command_fails_on_crossing_when_asked(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(runs_dir)]) == 0
    assert main(["report", str(runs_dir), "--fail-on-crossing"]) == 1
    assert "threshold crossed: run 20260103T000000Z-3" in capsys.readouterr().out


def test_report_command_passes_without_crossing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "20260101T000000Z-1", [notebook_result(0.1, 0)])

    assert main(["report", str(runs), "--fail-on-crossing"]) == 0


def test_run_with_p_values_has_its_own_label(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "20260101T000000Z-1", [notebook_result(0.5, 0, swept=False)])
    page = page_of(runs)
    section = page[page.index('<section id="03_dead_letter_overflow">') :]

    assert "<td>poison_rate=0.5,seed=7</td>" in section


def test_report_command_output_elsewhere_links_back(runs_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "site" / "trends.html"

    assert main(["report", str(runs_dir), "--output", str(output)]) == 0
    assert '<a href="../runs/20260101T000000Z-1/report.html">' in output.read_text(encoding="utf-8")


def test_report_command_rejects_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exit_status = main(["report", str(tmp_path)])

    assert exit_status == EXIT_INVALID_INPUT
    assert "no run folder with metrics.json" in capsys.readouterr().err


def test_metrics_json_is_plain_json(runs_dir: Path) -> None:
    content = json.loads((runs_dir / "20260101T000000Z-1" / METRICS_FILE).read_text(encoding="utf-8"))

    assert content["format"] == 1
    assert content["target"]["target"] == "emulator"
    assert content["notebooks"][0]["figures"]["dlq_after_fix"] == {"value": 0, "unit": None, "note": None}
