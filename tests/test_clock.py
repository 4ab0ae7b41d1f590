"""The clock contract: the wall clock, the virtual clock, its listeners and the package-wide clock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from workbook.clock import (
    DEFAULT_START,
    Clock,
    InvalidTimeStepError,
    ListenerError,
    RealClock,
    VirtualClock,
    get_clock,
    set_clock,
    use_clock,
    virtual_to_wall,
    wall_to_virtual,
)

THREAD_TIMEOUT_SECONDS = 5


@pytest.fixture(autouse=True)
def restore_package_clock() -> Iterator[None]:
    previous = get_clock()
    yield
    set_clock(previous)


# --- RealClock ---------------------------------------------------------------------------------------


def test_real_clock_now_is_aware_utc() -> None:
    now = RealClock().now()

    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_real_clock_sleep_takes_wall_time() -> None:
    clock = RealClock()
    start = clock.monotonic()

    clock.sleep(0.02)

    assert clock.monotonic() - start >= 0.02


@pytest.mark.parametrize("seconds", [-1, -0.001, math.nan, math.inf])
def test_real_clock_sleep_rejects_invalid_seconds(seconds: float) -> None:
    with pytest.raises(InvalidTimeStepError) as raised:
        RealClock().sleep(seconds)

    assert isinstance(raised.value, ValueError)
    assert repr(seconds) in str(raised.value)


def test_clock_is_abstract() -> None:
    with pytest.raises(TypeError):
        Clock()  # type: ignore[abstract]


# --- VirtualClock: moving time -------------------------------------------------------------------------


def test_virtual_clock_starts_at_fixed_moment() -> None:
    clock = VirtualClock()

    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)
    assert clock.monotonic() == 0.0


def test_virtual_clock_converts_start_to_utc() -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))

    now = VirtualClock(start).now()

    assert now == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert now.tzinfo == UTC


def test_virtual_clock_rejects_naive_start() -> None:
    with pytest.raises(InvalidTimeStepError, match="has no timezone"):
        VirtualClock(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("delta", "expected_seconds"),
    [
        (30, 30.0),
        (0.25, 0.25),
        (timedelta(minutes=5), 300.0),
        (0, 0.0),
    ],
)
def test_advance_moves_clock_forward(delta: float | timedelta, expected_seconds: float) -> None:
    clock = VirtualClock()

    returned = clock.advance(delta)

    assert returned == DEFAULT_START + timedelta(seconds=expected_seconds)
    assert clock.now() == returned
    assert clock.monotonic() == expected_seconds


@pytest.mark.parametrize(
    ("delta", "shown"),
    [
        (-1, "-1"),
        (-0.5, "-0.5"),
        (timedelta(seconds=-3), "timedelta(days=-1, seconds=86397)"),
        (math.nan, "nan"),
        (math.inf, "inf"),
    ],
)
def test_advance_rejects_invalid_step(delta: float | timedelta, shown: str) -> None:
    clock = VirtualClock()

    with pytest.raises(ValueError) as raised:
        clock.advance(delta)

    assert isinstance(raised.value, InvalidTimeStepError)
    assert shown in str(raised.value)
    assert raised.value.value is delta
    assert clock.now() == DEFAULT_START


def test_sleep_advances_virtual_time_without_blocking() -> None:
    clock = VirtualClock()
    wall_start = time.monotonic()

    clock.sleep(3600)

    assert clock.now() == DEFAULT_START + timedelta(hours=1)
    assert clock.monotonic() == 3600.0
    assert time.monotonic() - wall_start < 1


def test_sleep_rejects_negative_seconds() -> None:
    clock = VirtualClock()

    with pytest.raises(InvalidTimeStepError, match="-2"):
        clock.sleep(-2)

    assert clock.now() == DEFAULT_START


def test_set_moves_clock_to_later_moment() -> None:
    clock = VirtualClock()
    later = DEFAULT_START + timedelta(days=1)

    assert clock.set(later) == later
    assert clock.now() == later
    assert clock.monotonic() == 86400.0


def test_set_to_same_moment_is_allowed() -> None:
    clock = VirtualClock()

    assert clock.set(DEFAULT_START) == DEFAULT_START


def test_set_cannot_go_backwards() -> None:
    clock = VirtualClock()
    clock.advance(60)
    earlier = DEFAULT_START + timedelta(seconds=30)

    with pytest.raises(ValueError) as raised:
        clock.set(earlier)

    message = str(raised.value)
    assert "never goes backwards" in message
    assert earlier.isoformat() in message
    assert clock.now() == DEFAULT_START + timedelta(seconds=60)


def test_set_rejects_naive_datetime() -> None:
    with pytest.raises(InvalidTimeStepError, match="has no timezone"):
        VirtualClock().set(datetime(2027, 1, 1))


def test_concurrent_advances_are_all_counted() -> None:
    clock = VirtualClock()
    threads = [threading.Thread(target=_advance_many, args=(clock, 500)) for _ in range(8)]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)

    assert not any(thread.is_alive() for thread in threads)
    assert clock.now() == DEFAULT_START + timedelta(milliseconds=8 * 500)


def _advance_many(clock: VirtualClock, count: int) -> None:
    for _ in range(count):
        clock.advance(0.001)


# --- VirtualClock: listeners ---------------------------------------------------------------------------


def test_listener_receives_time_after_each_move() -> None:
    clock = VirtualClock()
    seen: list[datetime] = []
    clock.on_advance(seen.append)

    clock.advance(10)
    clock.sleep(5)
    clock.set(DEFAULT_START + timedelta(minutes=1))

    assert seen == [
        DEFAULT_START + timedelta(seconds=10),
        DEFAULT_START + timedelta(seconds=15),
        DEFAULT_START + timedelta(seconds=60),
    ]


def test_unsubscribed_listener_is_not_called() -> None:
    clock = VirtualClock()
    seen: list[datetime] = []
    unsubscribe = clock.on_advance(seen.append)
    clock.advance(1)

    unsubscribe()
    unsubscribe()
    clock.advance(1)

    assert seen == [DEFAULT_START + timedelta(seconds=1)]


def test_listener_is_not_called_on_rejected_move() -> None:
    clock = VirtualClock()
    seen: list[datetime] = []
    clock.on_advance(seen.append)

    with pytest.raises(InvalidTimeStepError):
        clock.advance(-1)

    assert seen == []


def test_failing_listener_does_not_stop_others() -> None:
    clock = VirtualClock()
    seen: list[datetime] = []
    clock.on_advance(_raise_runtime_error)
    clock.on_advance(seen.append)

    with pytest.raises(ListenerError) as raised:
        clock.advance(5)

    moved_to = DEFAULT_START + timedelta(seconds=5)
    assert seen == [moved_to]
    assert clock.now() == moved_to
    assert raised.value.moment == moved_to
    assert [type(error) for error in raised.value.errors] == [RuntimeError]
    assert isinstance(raised.value.__cause__, RuntimeError)


def _raise_runtime_error(moment: datetime) -> None:
    raise RuntimeError(f"listener failed at {moment.isoformat()}")


def test_listener_may_read_clock() -> None:
    clock = VirtualClock()
    seen: list[datetime] = []

    def read_clock_in_thread(moment: datetime) -> None:
        # A listener that waits on a thread which reads the clock deadlocks if the clock's lock is held.
        reader = threading.Thread(target=lambda: seen.append(clock.now()))
        reader.start()
        reader.join(THREAD_TIMEOUT_SECONDS)

    clock.on_advance(read_clock_in_thread)
    mover = threading.Thread(target=clock.advance, args=(7,))
    mover.start()
    mover.join(THREAD_TIMEOUT_SECONDS)

    assert not mover.is_alive()
    assert seen == [DEFAULT_START + timedelta(seconds=7)]


# --- The package-wide clock ----------------------------------------------------------------------------


def test_default_package_clock_is_real_clock() -> None:
    assert isinstance(get_clock(), RealClock)


def test_set_clock_returns_previous_clock() -> None:
    first, second = VirtualClock(), VirtualClock()
    set_clock(first)

    previous = set_clock(second)

    assert previous is first
    assert get_clock() is second


def test_set_clock_rejects_non_clock() -> None:
    with pytest.raises(TypeError, match="datetime"):
        set_clock(datetime.now(UTC))  # type: ignore[arg-type]


def test_use_clock_restores_previous_clock() -> None:
    outer = get_clock()
    virtual = VirtualClock()

    with use_clock(virtual) as active:
        assert active is virtual
        assert get_clock() is virtual

    assert get_clock() is outer


def test_use_clock_restores_after_error() -> None:
    outer = get_clock()

    with pytest.raises(RuntimeError), use_clock(VirtualClock()):
        raise RuntimeError("inside the block")

    assert get_clock() is outer


def test_use_clock_blocks_nest() -> None:
    outer, middle, inner = get_clock(), VirtualClock(), VirtualClock()

    with use_clock(middle):
        with use_clock(inner):
            assert get_clock() is inner
        assert get_clock() is middle

    assert get_clock() is outer


# --- Converting between virtual and wall time ----------------------------------------------------------


def test_virtual_to_wall_keeps_distance_from_now() -> None:
    clock = VirtualClock()
    wall_now = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    lock_expiry = clock.now() + timedelta(seconds=30)

    wall = virtual_to_wall(lock_expiry, clock, wall_now=wall_now)

    assert wall == wall_now + timedelta(seconds=30)


def test_virtual_to_wall_follows_clock_advance() -> None:
    clock = VirtualClock()
    wall_now = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    lock_expiry = clock.now() + timedelta(seconds=30)

    clock.advance(45)

    assert virtual_to_wall(lock_expiry, clock, wall_now=wall_now) == wall_now - timedelta(seconds=15)


def test_wall_to_virtual_inverts_virtual_to_wall() -> None:
    clock = VirtualClock()
    wall_now = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    moment = DEFAULT_START + timedelta(minutes=3)

    wall = virtual_to_wall(moment, clock, wall_now=wall_now)

    assert wall_to_virtual(wall, clock, wall_now=wall_now) == moment


def test_virtual_to_wall_defaults_to_system_time() -> None:
    clock = VirtualClock()

    wall = virtual_to_wall(clock.now() + timedelta(minutes=1), clock)

    expected = datetime.now(UTC) + timedelta(minutes=1)
    assert abs(wall - expected) < timedelta(seconds=5)


def test_virtual_to_wall_rejects_naive_moment() -> None:
    with pytest.raises(InvalidTimeStepError, match="has no timezone"):
        virtual_to_wall(datetime(2026, 1, 1), VirtualClock())
