"""The center's shutdown ends every task, even one that swallowed a cancellation (Python 3.11's
``asyncio.wait_for`` does that when the cancel and its inner result land in the same turn)."""

from __future__ import annotations

import asyncio

from service.center import stop_tasks


async def test_stop_tasks_ends_a_task_that_swallowed_its_first_cancellation() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # carries on, as a loop does after wait_for swallowed the cancel
        await asyncio.Event().wait()  # the next wake-up that never comes

    async def plain() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(plain(), name="plain")]
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks(tasks, wait=0.05), 30)
    assert swallowed.is_set()
    assert all(t.done() for t in tasks)


async def test_stop_tasks_leaves_a_task_that_never_stops_and_returns() -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal(), name="immortal")
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([task], rounds=3, wait=0.01), 30)
    assert not task.done()  # logged and left, the shutdown did not hang on it
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.done()


async def test_stop_tasks_with_finished_and_failed_tasks() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fail())
    await asyncio.sleep(0)
    await stop_tasks([failed])
    assert isinstance(failed.exception(), RuntimeError)
