"""Run one piece of work on several threads started together, as the store contract suites' races do."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_threads(count: int, work: Callable[[int], object], *, timeout: float) -> list[object]:
    """Run `work(index)` on `count` threads started together; return each result or raised error.

    Fails when a thread is still running `timeout` seconds after the joins began.
    """
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait(timeout=timeout)
        try:
            results[index] = work(index)
        except Exception as error:  # noqa: BLE001 - the test inspects each thread's error
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), f"a thread ran longer than {timeout} s"
    return results
