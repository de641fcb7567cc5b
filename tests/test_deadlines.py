"""Coarse deadlines behave like asyncio.timeout: TimeoutError when passed, nothing otherwise."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.deadlines import DeadlineWatch


async def test_a_passed_deadline_raises_timeout_error_within_a_tick():
    watch = DeadlineWatch(tick=0.02)
    runner = asyncio.create_task(watch.run())
    started = time.monotonic()

    async def stuck() -> None:
        async with watch.deadline() as d:
            d.move(0.1)
            await asyncio.sleep(5)

    with pytest.raises(TimeoutError):
        await stuck()
    assert 0.1 <= time.monotonic() - started < 1.0
    assert not watch.active
    runner.cancel()


async def test_moving_the_deadline_keeps_a_progressing_task_alive():
    watch = DeadlineWatch(tick=0.02)
    runner = asyncio.create_task(watch.run())
    async with watch.deadline() as d:
        # 1.2 s in all, each step well inside its 0.5 s deadline even on a loaded machine
        for _ in range(12):
            d.move(0.5)
            await asyncio.sleep(0.1)
        d.move(None)
        await asyncio.sleep(0.6)
    assert not d.fired
    runner.cancel()


async def test_a_real_cancellation_is_not_turned_into_a_timeout():
    watch = DeadlineWatch(tick=0.02)

    async def victim() -> None:
        async with watch.deadline() as d:
            d.move(60)
            await asyncio.sleep(5)

    task = asyncio.create_task(victim())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not watch.active
