"""The `workbook` command: run notebooks with papermill, write the run report, check the environment."""


class CliError(Exception):
    """Invalid command-line input, found before any notebook ran.

    The message names the value and what to change.
    """
