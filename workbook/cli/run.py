"""`workbook run`: execute notebooks with papermill and write the run report."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from jupyter_client.kernelspec import NoSuchKernel
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError
from tqdm import tqdm

from workbook.cli import CliError
from workbook.cli.matrix import MATRIX_FILE_HELP, SweepPoint, expand_matrix, load_matrix
from workbook.cli.metrics import metrics_from_run, write_metrics
from workbook.cli.report import NotebookFailure, NotebookResult, NotebookStatus, RunResult, write_reports
from workbook.cli.targets import describe_target
from workbook.config import TARGET_VARIABLE, Target
from workbook.figures import FigureError, read_figures

logger = logging.getLogger(__name__)

# NOTE: assumes a source checkout or an editable install, where the package sits in the repository.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NOTEBOOKS_DIR = REPOSITORY_ROOT / "notebooks"
DEFAULT_OUTPUT_DIR = REPOSITORY_ROOT / "runs"
DEFAULT_CELL_TIMEOUT_S = 600
# ipykernel warns on every start that its local TCP transport is unencrypted, so an unattended run
# printed that line between its progress lines once per notebook. Kernel errors still show.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
KERNEL_NAME = "python3"
KERNEL_START_TIMEOUT_S = 60
RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"
PER_NOTEBOOK_KEY = "notebooks"

PARAMETER_FILE_HELP = """\
parameter file (--parameters FILE, YAML): a mapping whose keys are notebook parameters applied to
every notebook, plus an optional key `notebooks` that maps a notebook id to the parameters of that
notebook only. Ids are quoted strings resolved like --notebook, for example:

    seed: 7
    notebooks:
      "01": {data_path: ../shared/data/peppol}

Per-notebook values override shared ones, and -p overrides both. Every name must be a parameter in
the notebook's cell tagged `parameters`, so `notebooks` cannot be used as a parameter name there.
"""

# Separates a notebook's name from its sweep point in an output file name, for example
# 03_dead_letter_overflow__poison_rate=0.1.ipynb.
SWEEP_SEPARATOR = "__"

# Cells that papermill adds to the executed notebook, so they have no position in the source notebook.
_PAPERMILL_CELL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}
_SCALAR_TYPES = (str, bool, int, float, type(None))


class NotebookNotFoundError(CliError):
    """A `--notebook` value or a parameter-file id that matches no notebook."""

    def __init__(self, request: str, available: list[str]) -> None:
        listing = ", ".join(available) if available else "none"
        super().__init__(f"notebook {request!r} not found; available notebooks: {listing}")
        self.request = request
        self.available = available


class ParameterError(CliError):
    """Invalid parameters: a malformed parameter file or names missing from a notebook's parameters cell."""


@dataclass(frozen=True)
class NotebookPlan:
    """One notebook to execute with the parameters papermill injects into it."""

    source: Path
    notebook_id: str
    parameters: dict[str, Any]
    default_parameters: dict[str, str]
    sweep: dict[str, Any] = field(default_factory=dict)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `run` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="execute notebooks with papermill and write a run report",
        description=(
            "Execute notebooks with papermill and write the executed notebooks, report.md, report.html\n"
            "run.json and metrics.json into a new folder <output dir>/<UTC start time>/. Exits 0 when\n"
            "every notebook passes, 1 when any fails and 2 on invalid input."
        ),
        epilog=PARAMETER_FILE_HELP + "\n" + MATRIX_FILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--notebook",
        dest="notebooks",
        action="append",
        metavar="ID",
        help="notebook to run: a number such as 01, a file name or a path, repeatable (default: all)",
    )
    parser.add_argument(
        "-p",
        dest="parameters",
        action="append",
        nargs=2,
        metavar=("NAME", "VALUE"),
        default=[],
        help="set a notebook parameter, VALUE read as a YAML scalar (7, 0.5, true, text), repeatable",
    )
    parser.add_argument(
        "--parameters",
        dest="parameter_file",
        type=Path,
        metavar="FILE",
        help="YAML file of parameters for every notebook or per notebook id (format below)",
    )
    parser.add_argument(
        "--matrix",
        dest="matrix_file",
        type=Path,
        metavar="FILE",
        help="YAML file of parameter lists per notebook id: run every combination (format below). "
        "With it, --notebook adds notebooks that run once",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int_of("workers"),
        default=1,
        metavar="N",
        help="number of notebooks executed at the same time, each in its own kernel process (default: 1)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        metavar="DIR",
        help="folder that receives one run folder per run (default: runs/ in the repository)",
    )
    parser.add_argument(
        "--notebooks-dir",
        type=Path,
        default=DEFAULT_NOTEBOOKS_DIR,
        metavar="DIR",
        help="folder of the NN_topic.ipynb notebooks (default: notebooks/ in the repository)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=_positive_int_of("seconds"),
        default=DEFAULT_CELL_TIMEOUT_S,
        metavar="SECONDS",
        help=f"maximum run time of one cell in seconds (default: {DEFAULT_CELL_TIMEOUT_S})",
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the notebooks selected on the command line and print the run folder."""
    overrides = {name: parse_parameter_value(value) for name, value in args.parameters}
    file_parameters = load_parameter_file(args.parameter_file) if args.parameter_file else ({}, {})
    plans = []
    if args.matrix_file is not None:
        points = expand_matrix(load_matrix(args.matrix_file))
        plans += plan_sweep(points, args.notebooks_dir, overrides, *file_parameters)
    if args.matrix_file is None or args.notebooks:
        notebooks = select_notebooks(args.notebooks or [], args.notebooks_dir)
        plans += plan_notebooks(notebooks, args.notebooks_dir, overrides, *file_parameters)

    run = run_notebooks(plans, args.output_dir, cell_timeout_s=args.cell_timeout, workers=args.workers)

    for result in run.notebooks:
        failure = f" at {result.failure.location()}: {result.failure.ename}" if result.failure else ""
        print(f"{result.status}: {result.label} ({result.duration_s:.1f} s){failure}")
    print(f"run folder: {run.folder}")
    return 0 if run.passed else 1


def discover_notebooks(folder: Path) -> list[Path]:
    """Return the notebooks of a folder sorted by file name, so NN_ prefixes give the order.

    Returns an empty list when the folder does not exist.
    """
    if not folder.is_dir():
        return []
    return sorted(folder.resolve().glob("*.ipynb"))


def notebook_id(path: Path) -> str:
    """Return the id of a notebook: the NN of NN_topic.ipynb, else the file name without .ipynb."""
    prefix, separator, _ = path.stem.partition("_")
    if separator and prefix.isdigit():
        return prefix
    return path.stem


def resolve_notebook(request: str, notebooks: list[Path]) -> Path:
    """Find one notebook by id ("01"), file name, name without .ipynb, or path of an existing file."""
    matches = [path for path in notebooks if request in {notebook_id(path), path.name, path.stem}]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(path.name for path in matches)
        raise CliError(f"notebook {request!r} is ambiguous because it matches {names}: pass the file name")

    candidate = Path(request)
    if candidate.suffix == ".ipynb" and candidate.is_file():
        return candidate.resolve()
    raise NotebookNotFoundError(request, [path.name for path in notebooks])


def select_notebooks(requests: list[str], notebooks_dir: Path) -> list[Path]:
    """Return the requested notebooks in the order given, without repeats; all notebooks when none."""
    available = discover_notebooks(notebooks_dir)
    if not requests:
        if not available:
            raise CliError(f"no notebooks (*.ipynb) found in {str(notebooks_dir)!r}: pass --notebooks-dir")
        return available

    selected: list[Path] = []
    for request in requests:
        path = resolve_notebook(request, available)
        if path not in selected:
            selected.append(path)
    return selected


def parse_parameter_value(text: str) -> Any:
    """Read a `-p` value as a YAML scalar: "7" is an int, "true" a bool, "null" None, "abc" a str.

    Text that YAML reads as a list, a mapping or a date stays a string.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, _SCALAR_TYPES) else text


def load_parameter_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a parameter file into shared parameters and per-notebook parameters keyed by notebook id."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ParameterError(f"parameter file {str(path)!r} cannot be read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ParameterError(f"parameter file {str(path)!r} is not valid YAML: {error}") from error

    content = {} if content is None else content
    _check_parameter_mapping(content, f"parameter file {str(path)!r}")

    per_notebook_content = content.pop(PER_NOTEBOOK_KEY, None) or {}
    if not isinstance(per_notebook_content, dict):
        raise ParameterError(f"{PER_NOTEBOOK_KEY!r} in {str(path)!r} must map notebook ids to parameters")

    per_notebook = {}
    for key, parameters in per_notebook_content.items():
        if not isinstance(key, str):
            raise ParameterError(
                f'notebook id {key!r} in {str(path)!r} is not a string: quote it, for example "01"'
            )
        parameters = {} if parameters is None else parameters
        _check_parameter_mapping(parameters, f"parameters of notebook {key!r} in {str(path)!r}")
        per_notebook[key] = parameters
    return content, per_notebook


def plan_notebooks(
    notebooks: list[Path],
    notebooks_dir: Path,
    overrides: dict[str, Any],
    shared: dict[str, Any] | None = None,
    per_notebook: dict[str, dict[str, Any]] | None = None,
) -> list[NotebookPlan]:
    """Merge the parameters of each notebook and check them against its parameters cell.

    Raises ParameterError naming every unknown parameter of every notebook before anything runs.
    """
    per_notebook_paths = _resolve_per_notebook(per_notebook or {}, notebooks, notebooks_dir)

    plans = []
    problems = []
    for path in notebooks:
        parameters = {**(shared or {}), **per_notebook_paths.get(path, {}), **overrides}
        declared = {name: info["default"] for name, info in papermill.inspect_notebook(str(path)).items()}

        unknown = [name for name in parameters if name not in declared]
        if unknown:
            known = ", ".join(declared) if declared else "none (no cell tagged 'parameters')"
            problems.append(f"{path.name}: unknown parameter {', '.join(unknown)} (its parameters: {known})")
        plans.append(NotebookPlan(path, notebook_id(path), parameters, declared))

    if problems:
        raise ParameterError("invalid parameters, nothing was run:\n  " + "\n  ".join(problems))
    return plans


def plan_sweep(
    points: list[SweepPoint],
    notebooks_dir: Path,
    overrides: dict[str, Any],
    shared: dict[str, Any] | None = None,
    per_notebook: dict[str, dict[str, Any]] | None = None,
) -> list[NotebookPlan]:
    """Plan one run per sweep point, whose values override those of the parameter file.

    Raises ParameterError naming every swept parameter that a notebook lacks or that `-p` also sets,
    before anything runs.
    """
    available = discover_notebooks(notebooks_dir)
    paths = [resolve_notebook(point.notebook, available) for point in points]
    unique_paths = list(dict.fromkeys(paths))
    base_plans = plan_notebooks(unique_paths, notebooks_dir, overrides, shared, per_notebook)
    base_by_path = {plan.source: plan for plan in base_plans}

    plans = []
    problems: set[str] = set()
    for point, path in zip(points, paths, strict=True):
        base = base_by_path[path]
        problems.update(_sweep_problems(point, base, overrides))
        parameters = {**base.parameters, **point.parameters}
        plans.append(replace(base, parameters=parameters, sweep=dict(point.parameters)))

    if problems:
        raise ParameterError("invalid sweep, nothing was run:\n  " + "\n  ".join(sorted(problems)))
    return plans


def _sweep_problems(point: SweepPoint, base: NotebookPlan, overrides: dict[str, Any]) -> list[str]:
    problems = []
    name = base.source.name
    unknown = [parameter for parameter in point.parameters if parameter not in base.default_parameters]
    if unknown:
        known = ", ".join(base.default_parameters) or "none (no cell tagged 'parameters')"
        problems.append(f"{name}: unknown swept parameter {', '.join(unknown)} (its parameters: {known})")

    conflicting = [parameter for parameter in point.parameters if parameter in overrides]
    if conflicting:
        problems.append(
            f"{name}: {', '.join(conflicting)} is swept by the matrix and also set with -p: remove one"
        )
    return problems


def run_notebooks(
    plans: list[NotebookPlan], output_dir: Path, *, cell_timeout_s: int, workers: int = 1
) -> RunResult:
    """Execute the notebooks into a new run folder, up to `workers` at a time, and write the reports there.

    Each notebook runs in its own kernel process, so parallel runs share no state but the machine. A
    failing notebook is recorded and the others still run. Results keep the order of `plans`.
    """
    started = datetime.now(UTC)
    folder = _create_run_folder(output_dir, started)
    outputs = [folder / name for name in _output_names(plans)]
    target_settings = describe_target(REPOSITORY_ROOT)

    with _kernel_environment():
        results = _execute_all(plans, outputs, cell_timeout_s, workers)

    run = RunResult(
        run_id=folder.name,
        folder=folder,
        target=target_settings.get("target", os.environ.get(TARGET_VARIABLE, Target.LOCAL.value)),
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        cell_timeout_s=cell_timeout_s,
        notebooks=results,
        target_settings=target_settings,
        workers=workers,
    )
    write_reports(run)
    write_metrics(metrics_from_run(run), folder)
    return run


def _execute_all(
    plans: list[NotebookPlan], outputs: list[Path], cell_timeout_s: int, workers: int
) -> list[NotebookResult]:
    progress = tqdm(total=len(plans), desc="notebooks", unit="notebook", file=sys.stderr)
    results: list[NotebookResult | None] = [None] * len(plans)

    # Threads suffice: each papermill call waits on its own kernel process, which does the work.
    with progress, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notebook") as executor:
        futures = {
            executor.submit(_execute, plan, output, cell_timeout_s): index
            for index, (plan, output) in enumerate(zip(plans, outputs, strict=True))
        }
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            progress.set_postfix_str(result.label)
            progress.update()
    return [result for result in results if result is not None]


def _execute(plan: NotebookPlan, output: Path, cell_timeout_s: int) -> NotebookResult:
    started = time.monotonic()
    failure = None
    try:
        papermill.execute_notebook(
            str(plan.source),
            str(output),
            parameters=plan.parameters,
            kernel_name=KERNEL_NAME,
            progress_bar=False,
            log_output=False,
            start_timeout=KERNEL_START_TIMEOUT_S,
            execution_timeout=cell_timeout_s,
            cwd=str(REPOSITORY_ROOT),
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except PapermillExecutionError as error:
        cell = _locate_failed_cell(output)
        failure = NotebookFailure(error.ename, error.evalue, cell.index, error.exec_count, cell.cell_id)
    except (CellTimeoutError, DeadKernelError, NoSuchKernel, RuntimeError, TimeoutError) as error:
        # A cell timed out, or the kernel died or did not start. The saved output shows how far it got.
        cell = _locate_failed_cell(output)
        failure = NotebookFailure(
            type(error).__name__, str(error), cell.index, cell.execution_count, cell.cell_id
        )
    duration_s = time.monotonic() - started

    if failure is not None:
        logger.warning(
            "notebook %s failed at %s: %s: %s",
            output.name,
            failure.location(),
            failure.ename,
            failure.evalue,
        )
        failure = replace(failure, notebook_html=export_html(output))
    return NotebookResult(
        notebook_id=plan.notebook_id,
        source=plan.source,
        output=output.name,
        status=NotebookStatus.FAILED if failure else NotebookStatus.PASSED,
        duration_s=duration_s,
        parameters=plan.parameters,
        default_parameters=plan.default_parameters,
        figures=_read_figures_of(output),
        failure=failure,
        sweep=plan.sweep,
    )


@dataclass(frozen=True)
class _CellLocation:
    index: int | None = None
    execution_count: int | None = None
    cell_id: str | None = None


def _locate_failed_cell(output: Path) -> _CellLocation:
    """Return the source-notebook position, execution count and id of the cell that started last.

    Execution stops at the failing cell, so that cell started last. Every field is None when no cell
    started or the executed notebook cannot be read.
    """
    try:
        executed = nbformat.read(output, as_version=4)
    except (OSError, ValueError) as error:
        logger.warning("executed notebook %s cannot be read to locate the failed cell: %s", output, error)
        return _CellLocation()

    source_index = 0
    located = _CellLocation()
    for cell in executed.cells:
        if _PAPERMILL_CELL_TAGS & set(cell.metadata.get("tags", [])):
            continue
        if cell.metadata.get("papermill", {}).get("start_time"):
            located = _CellLocation(source_index, cell.get("execution_count"), cell.get("id"))
        source_index += 1
    return located


def export_html(notebook: Path) -> str | None:
    """Render an executed notebook as HTML beside it, where each cell has the anchor `cell-id=<id>`.

    Returns the HTML file's name, or None when the notebook cannot be read or rendered (logged).
    """
    # Imported here because nbconvert takes about a second to import and only failures need it.
    from jinja2 import TemplateError
    from nbconvert import HTMLExporter

    target = notebook.with_suffix(".html")
    try:
        body, _ = HTMLExporter(template_name="lab").from_filename(str(notebook))
        target.write_text(body, encoding="utf-8")
    except (OSError, ValueError, LookupError, TemplateError) as error:
        logger.warning("executed notebook %s cannot be rendered as HTML: %s", notebook, error)
        return None
    return target.name


def _read_figures_of(output: Path) -> dict[str, dict[str, Any]]:
    if not output.is_file():
        return {}
    try:
        return read_figures(output)
    except (FigureError, OSError, ValueError) as error:
        logger.warning("figures of %s cannot be read: %s", output, error)
        return {}


def _create_run_folder(output_dir: Path, started: datetime) -> Path:
    """Create output_dir/<UTC time>, adding -2, -3 ... when a run started in the same second."""
    output_dir.mkdir(parents=True, exist_ok=True)
    run_id = started.strftime(RUN_ID_FORMAT)

    for attempt in range(1, 1000):
        folder = output_dir / (run_id if attempt == 1 else f"{run_id}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise CliError(f"too many run folders named {run_id}* in {str(output_dir)!r}: remove old runs")


def _output_names(plans: list[NotebookPlan]) -> list[str]:
    """Name each executed notebook after its source and sweep point, adding a number for a repeated name."""
    names: list[str] = []
    for plan in plans:
        stem = plan.source.stem
        if plan.sweep:
            stem += SWEEP_SEPARATOR + SweepPoint(plan.notebook_id, plan.sweep).label()
        name = f"{stem}.ipynb"
        number = 2
        while name in names:
            name = f"{stem}-{number}.ipynb"
            number += 1
        names.append(name)
    return names


def _resolve_per_notebook(
    per_notebook: dict[str, dict[str, Any]], notebooks: list[Path], notebooks_dir: Path
) -> dict[Path, dict[str, Any]]:
    """Key per-notebook parameters by path; entries for notebooks not selected in this run are dropped."""
    available = discover_notebooks(notebooks_dir)
    candidates = available + [path for path in notebooks if path not in available]

    resolved = {}
    for key, parameters in per_notebook.items():
        path = resolve_notebook(key, candidates)
        if path in notebooks:
            resolved[path] = parameters
    return resolved


def _check_parameter_mapping(content: object, where: str) -> None:
    if not isinstance(content, dict):
        raise ParameterError(f"{where} must be a mapping of parameter names to values")

    for name, value in content.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ParameterError(f"{where}: parameter name {name!r} is not a Python identifier")
        if name != PER_NOTEBOOK_KEY and not _is_json_like(value):
            raise ParameterError(
                f"{where}: parameter {name!r} has a value of type {type(value).__name__}. "
                "Use a number, bool, string, list or mapping, and quote dates."
            )


def _is_json_like(value: object) -> bool:
    if isinstance(value, _SCALAR_TYPES):
        return True
    if isinstance(value, list):
        return all(_is_json_like(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json_like(item) for key, item in value.items())
    return False


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """Set PYTHONHASHSEED=0 for the kernels started inside, so sets print in the same order every run."""
    previous = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = previous


def _positive_int_of(unit: str) -> Any:
    """Return an argparse type that reads a positive whole number of `unit`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {unit}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of {unit}")
        return value

    return parse
