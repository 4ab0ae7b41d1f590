"""Entry point of the `workbook` command."""

from __future__ import annotations

import argparse
import logging
import sys

import workbook
from workbook.cli import CliError, doctor, emulator, history, run

logger = logging.getLogger(__name__)

# Exit status for invalid input found before anything ran, the same status argparse uses for usage errors.
EXIT_INVALID_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="workbook",
        description="Run the troubleshooting notebooks, report on past runs, check the environment.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {workbook.__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more: -v for info, -vv for debug"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run.add_parser(subparsers)
    history.add_parser(subparsers)
    doctor.add_parser(subparsers)
    emulator.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)

    try:
        return args.handler(args)
    except CliError as error:
        print(f"workbook {args.command}: error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT


def _configure_logging(verbosity: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
