"""Shared parts of the benchmark scripts: the machine description and the rewrite of one results section.

Each script owns a pair of HTML comment markers in benchmarks/README.md and replaces only the text
between them, so the scripts can run in any order.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


class ResultsPageError(RuntimeError):
    """The results page lacks a script's markers."""


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or `platform.processor()`, or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_lines() -> list[str]:
    """Return the Markdown list items that describe this machine: CPU count, CPU model and Python."""
    return [
        f"- CPUs (nproc): {os.cpu_count()}",
        f"- CPU model: {cpu_model()}",
        f"- Python: {platform.python_version()}",
    ]


def rewrite_section(path: Path, section: str, start: str, end: str) -> None:
    """Replace the text between the `start` and `end` markers of the page at `path` with `section`.

    Raises ResultsPageError, and leaves the page unchanged, when either marker is missing or they are
    out of order.
    """
    text = path.read_text(encoding="utf-8")
    first = text.find(start)
    last = text.find(end)
    if first < 0 or last < first:
        raise ResultsPageError(f"{path} has no '{start}' ... '{end}' markers: add them where the results go")
    before = text[: first + len(start)]
    path.write_text(f"{before}\n{section}\n{text[last:]}", encoding="utf-8")
