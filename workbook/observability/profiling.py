"""Profile a message handler and summarise per-message latencies.

`profile_calls` runs a handler over a list of messages under cProfile and returns the top functions by
cumulative time. `call_tree` does the same with pyinstrument, an optional dependency, and returns the
reason it skipped when pyinstrument is missing. `time_calls` and `latency_percentiles` give p50, p95 and p99.
"""

from __future__ import annotations

import cProfile
import math
import pstats
import re
import sysconfig
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROFILE_COLUMNS = ["function", "location", "calls", "total_s", "cumulative_s", "share"]
PERCENTILE_COLUMNS = ["mode", "messages", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
DEFAULT_PERCENTILES = (50.0, 95.0, 99.0)
DEFAULT_TOP = 15
PYINSTRUMENT_INTERVAL_SECONDS = 0.001
_BUILTIN_PATTERNS = (
    re.compile(r"^<method '(?P<name>\w+)' of '(?P<owner>[\w.]+)' objects>$"),
    re.compile(r"^<built-in method (?P<name>[\w.]+)>$"),
)


class ProfilingError(ValueError):
    """Invalid input to a profiling or percentile function; the message names the value."""


@dataclass(frozen=True)
class ProfileResult:
    """The top functions of one cProfile run, and the total time of the profiled calls (seconds)."""

    table: pd.DataFrame
    total_seconds: float
    messages: int

    def share_of(self, functions: Iterable[str]) -> float:
        """Return the largest share of the total time spent under any of the named functions.

        The largest, not the sum, because a function's cumulative time includes its callees.
        Returns 0.0 when no row of the table matches.
        """
        requested = set(functions)
        shares = self.table.loc[self.table["function"].isin(requested), "share"]
        return float(shares.max()) if len(shares) else 0.0


@dataclass(frozen=True)
class CallTree:
    """pyinstrument's call tree as text, or the reason it was not recorded."""

    text: str | None
    skipped_reason: str | None = None

    def __str__(self) -> str:
        return self.text if self.text is not None else f"call tree skipped: {self.skipped_reason}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def profile_calls(
    handler: Callable[[Any], object], messages: Sequence[Any], *, top: int = DEFAULT_TOP
) -> ProfileResult:
    """Call ``handler(message)`` for each message under cProfile and return the top functions.

    The table has one row per function, sorted by cumulative time. Its columns are the function name, its
    file and line (the path inside site-packages, the standard library or the repository), and the calls.
    Then come the time in the function itself (``total_s``), with its callees (``cumulative_s``), and
    ``share``, the cumulative time as a fraction of the total.
    Raises ProfilingError when `messages` is empty or `top` is below 1.
    """
    _check_messages(messages)
    if top < 1:
        raise ProfilingError(f"top {top!r} is invalid: pass 1 or more rows")

    profiler = cProfile.Profile()
    started = time.perf_counter()
    for message in messages:
        profiler.runcall(handler, message)
    total = time.perf_counter() - started

    table = _top_functions(pstats.Stats(profiler), total, top)
    return ProfileResult(table, total, len(messages))


def call_tree(
    handler: Callable[[Any], object],
    messages: Sequence[Any],
    *,
    interval: float = PYINSTRUMENT_INTERVAL_SECONDS,
) -> CallTree:
    """Call ``handler(message)`` for each message under pyinstrument and return its call tree as text.

    pyinstrument samples the stack by wall-clock time, so time spent sleeping or waiting on a socket shows.
    Returns a CallTree with a skipped reason, and calls nothing, when pyinstrument is not installed.
    """
    _check_messages(messages)
    try:
        from pyinstrument import Profiler
    except ImportError:
        return CallTree(None, "pyinstrument is not installed; run `.venv/bin/pip install pyinstrument`")

    # The handlers are synchronous, and async mode would attribute time to an event loop that is not there.
    profiler = Profiler(interval=interval, async_mode="disabled")
    profiler.start()
    try:
        for message in messages:
            handler(message)
    finally:
        profiler.stop()
    return CallTree(_portable_tree(profiler.output_text(unicode=False, color=False)))


def _portable_tree(text: str) -> str:
    # The header's clock time and this machine's absolute paths differ on every run and machine.
    text = re.sub(r"Recorded: \d\d:\d\d:\d\d\s*", "", text)
    for root in _library_roots():
        text = text.replace(f"{root.as_posix()}/", "")
    return text


def time_calls(handler: Callable[[Any], object], messages: Sequence[Any]) -> list[float]:
    """Call ``handler(message)`` for each message and return each call's duration in seconds."""
    durations = []
    for message in messages:
        started = time.perf_counter()
        handler(message)
        durations.append(time.perf_counter() - started)
    return durations


def latency_percentiles(
    durations: Sequence[float], percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> dict[str, float]:
    """Return the given percentiles of per-message durations, keyed ``p50``, ``p95``, ``p99``.

    Percentiles interpolate linearly between the two nearest durations (numpy's default), so with
    fewer than 100 durations the p99 lies between the two largest. Units are those of `durations`.
    Raises ProfilingError for no durations, a negative or non-finite one, or a percentile outside 0-100.
    """
    values = _checked_durations(durations)
    for percentile in percentiles:
        if not 0.0 <= percentile <= 100.0:
            raise ProfilingError(f"percentile {percentile!r} is invalid: pass a number from 0 to 100")
    points = np.percentile(values, list(percentiles))
    return {f"p{percentile:g}": float(point) for percentile, point in zip(percentiles, points, strict=True)}


def percentile_table(runs: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Return one row per mode: the message count and p50, p95, p99 and max latency in milliseconds.

    `runs` maps a mode name to its per-message durations in seconds.
    """
    rows = []
    for mode, durations in runs.items():
        points = latency_percentiles(durations)
        rows.append(
            (
                mode,
                len(durations),
                points["p50"] * 1000,
                points["p95"] * 1000,
                points["p99"] * 1000,
                max(durations) * 1000,
            )
        )
    return pd.DataFrame(rows, columns=PERCENTILE_COLUMNS)


# -- cProfile rows ---------------------------------------------------------------------------------


def _top_functions(stats: pstats.Stats, total: float, top: int) -> pd.DataFrame:
    rows = []
    # pstats keeps its rows in this undocumented but long-stable mapping, the source of print_stats().
    for (filename, line, name), (_, calls, self_time, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        function, location = _readable_name(filename, line, name)
        share = cumulative / total if total > 0 else 0.0
        rows.append((function, location, calls, self_time, cumulative, share))

    table = pd.DataFrame(rows, columns=PROFILE_COLUMNS)
    table = table.sort_values(["cumulative_s", "function"], ascending=[False, True], kind="stable")
    return table.head(top).reset_index(drop=True)


def _readable_name(filename: str, line: int, name: str) -> tuple[str, str]:
    # cProfile files built-in functions under "~" with the name in angle brackets.
    if filename == "~":
        return _builtin_name(name), "built-in"
    return name, f"{_short_path(filename)}:{line}"


def _builtin_name(name: str) -> str:
    for pattern in _BUILTIN_PATTERNS:
        match = pattern.match(name)
        if match is None:
            continue
        owner = match.groupdict().get("owner")
        return f"{owner}.{match['name']}" if owner else match["name"]
    return name


def _short_path(filename: str) -> str:
    path = Path(filename)
    for root in _library_roots():
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def _library_roots() -> list[Path]:
    # Deepest path first, so site-packages wins over the standard library folder that contains it.
    names = ("purelib", "platlib", "stdlib", "platstdlib")
    roots = {Path(path) for name in names if (path := sysconfig.get_paths().get(name))}
    # An editable install leaves the workbook package outside site-packages.
    roots.add(Path(__file__).resolve().parents[2])
    return sorted(roots, key=lambda root: len(root.parts), reverse=True)


# -- input checks ----------------------------------------------------------------------------------


def _check_messages(messages: Sequence[Any]) -> None:
    if len(messages) == 0:
        raise ProfilingError("messages is empty: pass at least one message to profile")


def _checked_durations(durations: Sequence[float]) -> list[float]:
    values = [float(duration) for duration in durations]
    if not values:
        raise ProfilingError("durations is empty: measure at least one message first")
    invalid = [value for value in values if not math.isfinite(value) or value < 0]
    if invalid:
        raise ProfilingError(
            f"durations {invalid[:5]} are invalid: pass finite, non-negative seconds per message"
        )
    return values
