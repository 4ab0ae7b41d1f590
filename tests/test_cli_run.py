"""Tests of the `workbook` command, with real papermill runs of the tiny notebooks in notebooks_fixture/."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workbook.cli import CliError
from workbook.cli.main import EXIT_INVALID_INPUT, main
from workbook.cli.report import (
    NotebookFailure,
    NotebookResult,
    NotebookStatus,
    RunResult,
    render_html,
    render_markdown,
)
from workbook.cli.run import (
    REPOSITORY_ROOT,
    NotebookNotFoundError,
    ParameterError,
    load_parameter_file,
    parse_parameter_value,
    resolve_notebook,
    select_notebooks,
)

FIXTURE_NOTEBOOKS = Path(__file__).parent / "notebooks_fixture"
FIXTURE_NAMES = ["01_passing.ipynb", "02_failing.ipynb", "03_slow.ipynb"]
WORKBOOK_COMMAND = REPOSITORY_ROOT / ".venv" / "bin" / "workbook"
COMMAND_TIMEOUT_S = 60
RUN_ID_PATTERN = re.compile(r"\d{8}T\d{6}Z")
HASH_SEED_AT_IMPORT = os.environ.get("PYTHONHASHSEED")

# A made-up key with the shape of an Azure shared access key: 32 bytes, 44 base64 characters.
FAKE_KEY = base64.b64encode(b"doctor test key, not a real one!").decode("ascii")
FAKE_CONNECTION_STRING = (
    "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
    f"SharedAccessKey={FAKE_KEY}"
)
SETTINGS_VARIABLES = [
    "WORKBOOK_TARGET",
    "WORKBOOK_SERVICEBUS_CONNECTION_STRING",
    "WORKBOOK_COSMOS_ENDPOINT",
    "WORKBOOK_COSMOS_KEY",
]


@dataclass(frozen=True)
class CommandRun:
    exit_status: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def folder(self) -> Path:
        folders = [path for path in self.output_dir.iterdir() if path.is_dir()]
        assert len(folders) == 1, f"expected one run folder in {self.output_dir}, found {folders}"
        return folders[0]

    @property
    def run_json(self) -> dict[str, Any]:
        return json.loads((self.folder / "run.json").read_text(encoding="utf-8"))

    def notebook(self, notebook_id: str) -> dict[str, Any]:
        entries = [entry for entry in self.run_json["notebooks"] if entry["id"] == notebook_id]
        assert len(entries) == 1, f"expected one entry for notebook {notebook_id} in run.json"
        return entries[0]

    def report(self, name: str) -> str:
        return (self.folder / name).read_text(encoding="utf-8")


def run_command(*args: str, output_dir: Path) -> CommandRun:
    """Call `workbook run` in process on the fixture notebooks, capturing stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["run", "--notebooks-dir", str(FIXTURE_NOTEBOOKS), "--output-dir", str(output_dir), *args]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_status = main(argv)
    return CommandRun(exit_status, stdout.getvalue(), stderr.getvalue(), output_dir)


@pytest.fixture(scope="module")
def passing_run(tmp_path_factory: pytest.TempPathFactory) -> CommandRun:
    output_dir = tmp_path_factory.mktemp("passing")
    return run_command(
        "--notebook", "01", "-p", "rate", "2.5", "-p", "backend", "sqlite", output_dir=output_dir
    )


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> CommandRun:
    """Run 02 then 01 with a parameter file whose per-notebook value makes 02 divide by zero."""
    output_dir = tmp_path_factory.mktemp("mixed")
    parameter_file = output_dir.parent / "mixed-parameters.yaml"
    parameter_file.write_text('seed: 7\nnotebooks:\n  "02": {divisor: 0}\n', encoding="utf-8")

    return run_command(
        "--notebook", "02", "--notebook", "01", "--parameters", str(parameter_file), output_dir=output_dir
    )


@pytest.fixture(scope="module")
def timeout_run(tmp_path_factory: pytest.TempPathFactory) -> CommandRun:
    output_dir = tmp_path_factory.mktemp("timeout")
    return run_command(
        "--notebook", "03", "-p", "sleep_s", "30", "--cell-timeout", "1", output_dir=output_dir
    )


# workbook run: passing notebook


def test_run_passes_and_writes_reports(passing_run: CommandRun) -> None:
    assert passing_run.exit_status == 0, passing_run.stderr
    assert RUN_ID_PATTERN.fullmatch(passing_run.folder.name)
    assert {path.name for path in passing_run.folder.iterdir()} == {
        "01_passing.ipynb",
        "report.md",
        "report.html",
        "run.json",
        "metrics.json",
    }
    assert f"run folder: {passing_run.folder}" in passing_run.stdout


def test_run_json_records_status_and_target(passing_run: CommandRun) -> None:
    run_json = passing_run.run_json
    entry = passing_run.notebook("01")

    assert run_json["status"] == "passed"
    assert run_json["target"] == os.environ.get("WORKBOOK_TARGET", "local")
    assert run_json["run_id"] == passing_run.folder.name
    assert entry["status"] == "passed"
    assert entry["failure"] is None
    assert entry["duration_s"] > 0


def test_reports_list_recorded_figures(passing_run: CommandRun) -> None:
    figures = passing_run.notebook("01")["figures"]

    assert figures["routed_documents"] == {
        "name": "routed_documents",
        "value": 44,
        "unit": None,
        "note": None,
    }
    assert "| routed_documents | 44 |" in passing_run.report("report.md")
    assert "<td>routed_documents</td><td>44</td>" in passing_run.report("report.html")


def test_p_values_are_injected_as_yaml_scalars(passing_run: CommandRun) -> None:
    entry = passing_run.notebook("01")

    assert entry["parameters"] == {"rate": 2.5, "backend": "sqlite"}
    assert entry["figures"]["rate"]["value"] == 2.5
    assert entry["figures"]["backend"]["value"] == "sqlite"
    assert entry["figures"]["seed"]["value"] == 42
    assert "| rate | 2.5 | 0.5 |" in passing_run.report("report.md")


def test_kernel_cwd_and_hash_seed(passing_run: CommandRun) -> None:
    figures = passing_run.notebook("01")["figures"]

    assert figures["python_hash_seed"]["value"] == "0"
    assert figures["working_directory"]["value"] == str(REPOSITORY_ROOT)


def test_run_restores_caller_hash_seed(passing_run: CommandRun) -> None:
    assert passing_run.exit_status == 0
    assert os.environ.get("PYTHONHASHSEED") == HASH_SEED_AT_IMPORT


# workbook run: failing notebook and parameter file


def test_failing_notebook_exits_1_and_others_still_run(mixed_run: CommandRun) -> None:
    assert mixed_run.exit_status == 1
    assert mixed_run.run_json["status"] == "failed"
    assert [entry["id"] for entry in mixed_run.run_json["notebooks"]] == ["02", "01"]
    assert mixed_run.notebook("02")["status"] == "failed"
    assert mixed_run.notebook("01")["status"] == "passed"
    assert f"run folder: {mixed_run.folder}" in mixed_run.stdout


def test_failure_records_cell_and_error(mixed_run: CommandRun) -> None:
    failure = mixed_run.notebook("02")["failure"]

    # The failing cell is cell 3 of the source notebook. It ran as In [4] because papermill's injected
    # cell ran as In [2].
    assert failure == {
        "cell_index": 3,
        "execution_count": 4,
        "ename": "ZeroDivisionError",
        "evalue": "division by zero",
        "cell_id": "903d7caf",
        "link": "02_failing.html#cell-id=903d7caf",
    }


@pytest.mark.parametrize("report_name", ["report.md", "report.html"])
def test_report_names_failed_cell_and_error(mixed_run: CommandRun, report_name: str) -> None:
    report = mixed_run.report(report_name)

    assert "cell index 3 (In [4])" in report
    assert "ZeroDivisionError" in report
    assert "division by zero" in report


def test_parameter_file_values_injected(mixed_run: CommandRun) -> None:
    failing, passing = mixed_run.notebook("02"), mixed_run.notebook("01")

    assert failing["parameters"] == {"seed": 7, "divisor": 0}
    assert passing["parameters"] == {"seed": 7}
    assert passing["figures"]["seed"]["value"] == 7


def test_figures_recorded_before_failure_are_kept(mixed_run: CommandRun) -> None:
    figures = mixed_run.notebook("02")["figures"]

    assert figures["before_failure"]["value"] == 7
    assert "after_failure" not in figures


def test_cell_timeout_fails_notebook(timeout_run: CommandRun) -> None:
    failure = timeout_run.notebook("03")["failure"]

    assert timeout_run.exit_status == 1
    assert failure["ename"] == "CellTimeoutError"
    assert failure["cell_index"] == 1
    assert failure["link"] == "03_slow.html#cell-id=" + failure["cell_id"]
    assert timeout_run.run_json["cell_timeout_s"] == 1


# workbook run: input rejected before anything runs


def test_unknown_parameter_rejected_before_running(tmp_path: Path) -> None:
    result = run_command("--notebook", "01", "-p", "sede", "7", output_dir=tmp_path)

    assert result.exit_status == EXIT_INVALID_INPUT
    assert list(tmp_path.iterdir()) == []
    assert "unknown parameter sede" in result.stderr
    assert "(its parameters: seed, backend, rate)" in result.stderr


def test_unknown_parameter_in_file_rejected(tmp_path: Path) -> None:
    parameter_file = tmp_path / "parameters.yaml"
    parameter_file.write_text('notebooks:\n  "03": {seed: 1}\n', encoding="utf-8")
    output_dir = tmp_path / "runs"

    result = run_command("--notebook", "03", "--parameters", str(parameter_file), output_dir=output_dir)

    assert result.exit_status == EXIT_INVALID_INPUT
    assert not output_dir.exists()
    assert "03_slow.ipynb: unknown parameter seed" in result.stderr


def test_unknown_notebook_rejected_listing_available(tmp_path: Path) -> None:
    result = run_command("--notebook", "99", output_dir=tmp_path)

    assert result.exit_status == EXIT_INVALID_INPUT
    assert list(tmp_path.iterdir()) == []
    assert "notebook '99' not found" in result.stderr
    assert ", ".join(FIXTURE_NAMES) in result.stderr


@pytest.mark.parametrize(
    "request_text",
    ["01", "01_passing", "01_passing.ipynb", str(FIXTURE_NOTEBOOKS / "01_passing.ipynb")],
)
def test_notebook_resolves_by_id_name_or_path(request_text: str) -> None:
    notebooks = select_notebooks([], FIXTURE_NOTEBOOKS)

    assert resolve_notebook(request_text, notebooks) == (FIXTURE_NOTEBOOKS / "01_passing.ipynb").resolve()


def test_notebooks_default_to_all_in_name_order() -> None:
    assert [path.name for path in select_notebooks([], FIXTURE_NOTEBOOKS)] == FIXTURE_NAMES


def test_repeated_notebook_selected_once() -> None:
    selected = select_notebooks(["02", "02_failing.ipynb", "01"], FIXTURE_NOTEBOOKS)

    assert [path.name for path in selected] == ["02_failing.ipynb", "01_passing.ipynb"]


def test_missing_notebooks_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="no notebooks"):
        select_notebooks([], tmp_path / "missing")


def test_unknown_notebook_error_carries_available_names() -> None:
    with pytest.raises(NotebookNotFoundError) as caught:
        select_notebooks(["routing"], FIXTURE_NOTEBOOKS)

    assert caught.value.request == "routing"
    assert caught.value.available == FIXTURE_NAMES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", 7),
        ("-3", -3),
        ("0.25", 0.25),
        ("true", True),
        ("false", False),
        ("null", None),
        ("sqlite", "sqlite"),
        ("'7'", "7"),
        ("[1, 2]", "[1, 2]"),
        ("a: b", "a: b"),
        ("2024-01-31", "2024-01-31"),
        ("{unclosed", "{unclosed"),
    ],
)
def test_parameter_value_parsed_as_yaml_scalar(text: str, expected: object) -> None:
    value = parse_parameter_value(text)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- 1\n- 2\n", "must be a mapping"),
        ("notebooks: [1, 2]\n", "must map notebook ids"),
        ("notebooks:\n  01: {seed: 1}\n", 'quote it, for example "01"'),
        ('notebooks:\n  "01": [1]\n', "must be a mapping"),
        ("2fast: 1\n", "not a Python identifier"),
        ("day: 2024-01-31\n", "quote dates"),
        ("seed: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_parameter_file_rejected(tmp_path: Path, content: str, message: str) -> None:
    parameter_file = tmp_path / "parameters.yaml"
    parameter_file.write_text(content, encoding="utf-8")

    with pytest.raises(ParameterError, match=re.escape(message)):
        load_parameter_file(parameter_file)


def test_parameter_file_splits_shared_and_per_notebook(tmp_path: Path) -> None:
    parameter_file = tmp_path / "parameters.yaml"
    parameter_file.write_text('seed: 7\nnotebooks:\n  "02": {divisor: 0}\n  "03":\n', encoding="utf-8")

    shared, per_notebook = load_parameter_file(parameter_file)

    assert shared == {"seed": 7}
    assert per_notebook == {"02": {"divisor": 0}, "03": {}}


def test_missing_parameter_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="cannot be read"):
        load_parameter_file(tmp_path / "missing.yaml")


# report rendering


def hostile_run(folder: Path) -> RunResult:
    failure = NotebookFailure(
        "ValueError", "<script>alert('x')</script> | ``` end", cell_index=2, execution_count=3
    )
    result = NotebookResult(
        notebook_id="<b>01</b>",
        source=folder / "01_x.ipynb",
        output="01_x.ipynb",
        status=NotebookStatus.FAILED,
        duration_s=1.5,
        parameters={"label": "<i>a|b</i>"},
        default_parameters={"label": "'x'"},
        figures={"tag": {"name": "tag", "value": "<img src=x>", "unit": None, "note": "a | b"}},
        failure=failure,
    )
    return RunResult("20260101T000000Z", folder, "<local>", "start", "end", 600, [result])


def test_html_report_escapes_every_value(tmp_path: Path) -> None:
    page = render_html(hostile_run(tmp_path))

    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>01</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;local&gt;" in page


def test_markdown_report_escapes_tables_and_code(tmp_path: Path) -> None:
    report = render_markdown(hostile_run(tmp_path))

    assert "<b>01</b>" not in report
    assert "| &lt;b&gt;01&lt;/b&gt; | failed |" in report
    assert "| tag | &lt;img src=x&gt; |  | a \\| b |" in report
    assert "````\n<script>alert('x')</script> | ``` end\n````" in report


# workbook doctor


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Clear the WORKBOOK_* variables and move to an empty folder, so no .env file is read."""
    for variable in SETTINGS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_doctor_passes_for_local_target_without_showing_key(
    clean_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_settings.setenv("WORKBOOK_TARGET", "local")
    clean_settings.setenv("WORKBOOK_SERVICEBUS_CONNECTION_STRING", FAKE_CONNECTION_STRING)

    exit_status = main(["doctor"])
    output = capsys.readouterr()

    assert exit_status == 0, output.out
    assert FAKE_KEY not in output.out + output.err
    assert "SharedAccessKey=***" in output.out
    assert re.search(r"^target\s+ok\s+local$", output.out, re.MULTILINE)
    assert re.search(r"^kernel python3\s+ok\s", output.out, re.MULTILINE)
    assert "started on demand" in output.out


def test_doctor_names_the_emulator_key_in_use(
    clean_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_settings.delenv("WORKBOOK_EMULATOR_KEY", raising=False)
    main(["doctor"])
    clean_settings.setenv("WORKBOOK_EMULATOR_KEY", FAKE_KEY)
    main(["doctor"])
    output = capsys.readouterr().out

    assert "the published development key" in output
    assert "your own key (WORKBOOK_EMULATOR_KEY)" in output
    assert FAKE_KEY not in output


def test_doctor_fails_for_invalid_emulator_key(
    clean_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_settings.setenv("WORKBOOK_EMULATOR_KEY", "not base64!")

    exit_status = main(["doctor"])
    output = capsys.readouterr().out

    assert exit_status == 1
    assert re.search(
        r"^local emulator\s+FAIL\s+WORKBOOK_EMULATOR_KEY is not valid base64", output, re.MULTILINE
    )
    assert "not base64!" not in output


@pytest.mark.parametrize("package", ["azure-servicebus", "azure-cosmos", "python-qpid-proton", "papermill"])
def test_doctor_lists_package_versions(
    clean_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], package: str
) -> None:
    main(["doctor"])

    assert re.search(rf"^{package}\s+ok\s+\d+\.\d+", capsys.readouterr().out, re.MULTILINE)


def test_doctor_fails_for_azure_target_without_settings(
    clean_settings: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The http scheme makes the connection string invalid, so its problem is printed next to the key.
    clean_settings.setenv(
        "WORKBOOK_SERVICEBUS_CONNECTION_STRING", FAKE_CONNECTION_STRING.replace("sb://", "http://")
    )

    exit_status = main(["doctor", "--target", "azure"])
    output = capsys.readouterr()

    assert exit_status == 1
    assert re.search(r"^settings\s+FAIL\s", output.out, re.MULTILINE)
    assert "scheme is 'http'" in output.out
    assert FAKE_KEY not in output.out + output.err


# console script and subcommands


def test_help_runs_as_console_script() -> None:
    completed = subprocess.run(
        [str(WORKBOOK_COMMAND), "--help"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "usage: workbook" in completed.stdout
    assert "run" in completed.stdout
    assert "doctor" in completed.stdout


def test_help_parameter_example_is_valid(tmp_path: Path) -> None:
    from workbook.cli.run import PARAMETER_FILE_HELP, load_parameter_file, plan_notebooks
    from workbook.paths import project_root

    example = PARAMETER_FILE_HELP.split("for example:\n", 1)[1].split("\n\n", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    notebooks_dir = project_root() / "notebooks"
    shared, per_notebook = load_parameter_file(path)

    (plan,) = plan_notebooks(
        [notebooks_dir / "01_messages_not_routed.ipynb"], notebooks_dir, {}, shared, per_notebook
    )

    assert plan.parameters["data_path"] == "../shared/data/peppol"
    assert plan.parameters["seed"] == 7


def test_kernel_start_warnings_stay_off_the_console(tmp_path: Path) -> None:
    # ipykernel warns on every start that its TCP transport is unencrypted; an unattended run's
    # console should hold only the progress and the results.
    command = [str(Path(sys.executable).with_name("workbook")), "run", "--notebook", "01"]
    command += ["--notebooks-dir", str(FIXTURE_NOTEBOOKS), "--output-dir", str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    assert completed.returncode == 0, completed.stderr
    # Only the start warnings: jupyter_client interrupts a kernel before it shuts it down, and a kernel
    # caught in a message handler then logs "KeyboardInterrupt caught in kernel" at ERROR.
    assert "[IPKernelApp] WARNING" not in completed.stderr
    assert "without encryption" not in completed.stderr
