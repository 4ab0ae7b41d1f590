"""`workbook doctor`: check the Python version, key packages, the Jupyter kernel and the target settings."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from workbook.config import (
    EMULATOR_KEY,
    EMULATOR_KEY_VARIABLE,
    TARGET_VARIABLE,
    ConfigError,
    Target,
    emulator_key,
    load_settings,
    mask_secrets,
)

DISTRIBUTION = "workbook"
KEY_PACKAGES = [
    "azure-servicebus",
    "azure-cosmos",
    "python-qpid-proton",
    "papermill",
    "nbval",
    "jupyterlab",
    "ipywidgets",
    "pandas",
]
KERNEL_NAME = "python3"
TEST_EXTRA = "test"


class CheckStatus(StrEnum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One row of the doctor table. `format_table` masks secrets in `detail`."""

    name: str
    status: CheckStatus
    detail: str


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `doctor` subcommand."""
    parser = subparsers.add_parser(
        "doctor",
        help="check Python, packages, the Jupyter kernel and the target settings",
        description="Check the environment the notebooks need. Exits 1 when a check fails.",
    )
    parser.add_argument(
        "--target",
        choices=[target.value for target in Target],
        help=f"target to check instead of the one set by {TARGET_VARIABLE} or the .env file",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="file of WORKBOOK_* variables read after the environment (default: .env if present)",
    )
    parser.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    """Print the doctor table and return 1 when any check failed, else 0."""
    checks = run_checks(target=args.target, env_file=args.env_file)
    print(format_table(checks))
    return 1 if any(check.status is CheckStatus.FAIL for check in checks) else 0


def run_checks(target: str | None = None, env_file: Path | None = None) -> list[Check]:
    """Run every check; `target` overrides the configured target."""
    return [
        check_python(),
        *check_packages(KEY_PACKAGES),
        check_kernel(KERNEL_NAME),
        *check_target(target, env_file),
    ]


def check_python() -> Check:
    """Compare the running Python with the package's Requires-Python."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    required = _requires_python()
    if required is None:
        return Check("python", CheckStatus.OK, f"{version} ({sys.executable})")
    if not required.contains(version):
        return Check(
            "python", CheckStatus.FAIL, f"{version} installed, {required} required: install a newer Python"
        )
    return Check("python", CheckStatus.OK, f"{version} ({sys.executable}), {required} required")


def check_packages(names: Iterable[str]) -> list[Check]:
    """Compare each package's installed version with the versions that workbook requires."""
    requirements = _declared_requirements()
    return [_check_package(name, requirements.get(_normalise(name))) for name in names]


def check_kernel(name: str) -> Check:
    """Check that the Jupyter kernel spec `name` exists and that its interpreter can be found."""
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return Check(
            f"kernel {name}",
            CheckStatus.FAIL,
            f"no kernel spec named {name!r}: run `python -m ipykernel install --user --name {name}`",
        )

    interpreter = _kernel_interpreter(spec.argv)
    if not (shutil.which(interpreter) or os.path.isfile(interpreter)):
        detail = (
            f"interpreter {interpreter!r} of kernel spec {spec.resource_dir} not found: reinstall the spec"
        )
        return Check(f"kernel {name}", CheckStatus.FAIL, detail)
    return Check(f"kernel {name}", CheckStatus.OK, f"{spec.resource_dir} (runs {interpreter})")


def check_target(target: str | None, env_file: Path | None = None) -> list[Check]:
    """Load the settings of the target, which validates its connection settings, and list them masked."""
    environ = dict(os.environ)
    if target is not None:
        environ[TARGET_VARIABLE] = target

    try:
        settings = load_settings(environ=environ, env_file=env_file)
    except ConfigError as error:
        heading = str(error).splitlines()[0]
        problems = error.problems or [heading]
        return [
            Check("settings", CheckStatus.FAIL, heading),
            *(Check("  problem", CheckStatus.FAIL, p) for p in problems),
        ]

    checks = [Check("target", CheckStatus.OK, settings.target.value)]
    for key, value in settings.describe().items():
        if key != "target":
            checks.append(Check(f"  {key}", CheckStatus.INFO, _describe_value(value)))

    if settings.target is Target.LOCAL:
        checks.append(_check_emulator_key())
    return checks


def _check_emulator_key() -> Check:
    """Check WORKBOOK_EMULATOR_KEY, which the local emulator reads when a notebook starts it."""
    try:
        key = emulator_key()
    except ConfigError as error:
        return Check("local emulator", CheckStatus.FAIL, str(error))

    key_source = (
        "the published development key" if key == EMULATOR_KEY else f"your own key ({EMULATOR_KEY_VARIABLE})"
    )
    return Check(
        "local emulator", CheckStatus.OK, f"started on demand when a notebook asks for a client; {key_source}"
    )


def format_table(checks: list[Check]) -> str:
    """Format the checks as an aligned text table with secrets masked.

    A multi-line detail continues under the detail column.
    """
    name_width = max([len("check"), *(len(check.name) for check in checks)])
    status_width = max([len("status"), *(len(status) for status in CheckStatus)])

    lines = [f"{'check':<{name_width}}  {'status':<{status_width}}  detail"]
    for check in checks:
        first, *rest = mask_secrets(check.detail).splitlines() or [""]
        lines.append(f"{check.name:<{name_width}}  {check.status:<{status_width}}  {first}")
        indent = " " * (name_width + status_width + 4)
        lines += [f"{indent}{line}" for line in rest]
    return "\n".join(lines)


def _check_package(name: str, requirement: Requirement | None) -> Check:
    is_test_only = requirement is not None and requirement.marker is not None
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        if is_test_only:
            return Check(
                name, CheckStatus.WARN, f"not installed, needed for tests: pip install -e '.[{TEST_EXTRA}]'"
            )
        return Check(name, CheckStatus.FAIL, f"not installed: pip install -e . (or pip install {name})")

    if requirement is None or not requirement.specifier:
        return Check(name, CheckStatus.OK, version)
    if not requirement.specifier.contains(version, prereleases=True):
        return Check(
            name, CheckStatus.FAIL, f"{version} installed, {requirement.specifier} required: upgrade it"
        )
    return Check(name, CheckStatus.OK, f"{version} ({requirement.specifier} required)")


def _declared_requirements() -> dict[str, Requirement]:
    """Return the requirements of the installed workbook distribution by normalised name."""
    try:
        texts = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return {}

    requirements = {}
    for text in texts:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        requirements[_normalise(requirement.name)] = requirement
    return requirements


def _requires_python() -> SpecifierSet | None:
    try:
        text = importlib.metadata.metadata(DISTRIBUTION).get("Requires-Python")
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        return SpecifierSet(text) if text else None
    except InvalidSpecifier:
        return None


def _kernel_interpreter(argv: list[str]) -> str:
    """Return the interpreter that jupyter_client 8 starts for a kernel spec's argv."""
    interpreter = argv[0] if argv else ""
    # jupyter_client replaces these names with the running interpreter (KernelManager.format_kernel_cmd).
    major, minor = sys.version_info[:2]
    if interpreter in {"python", f"python{major}", f"python{major}.{minor}"}:
        return sys.executable
    return interpreter


def _describe_value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}: {item}" for key, item in value.items()) or "none"
    return str(value)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
