"""`cancel_and_wait` / `wait_ended`: the task's cancellation is absorbed, the caller's is not, the wait is
bounded, and a failure is logged instead of lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from openmanager.tasks import cancel_and_wait, cancel_until_ended, wait_ended


async def test_cancels_and_waits_for_the_end() -> None:
    cleaned = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # clean-up that itself awaits
            cleaned.set()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, None) is True
    assert task.cancelled() and cleaned.is_set()


async def test_the_callers_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:  # takes its time to end once cancelled
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    while not task.cancelling():
        await asyncio.sleep(0)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.wait([task])


async def test_bounded_wait_reports_a_task_that_does_not_end(caplog: pytest.LogCaptureFixture) -> None:
    let_go = asyncio.Event()

    async def ignores_cancellation() -> None:
        while not let_go.is_set():
            try:
                await let_go.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(ignores_cancellation(), name="deaf")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="openmanager.tasks"):
        assert await cancel_and_wait(task, timeout=0.05) is False
    assert "deaf did not stop within" in caplog.text
    assert not task.done()
    let_go.set()
    await asyncio.wait([task])


async def test_a_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails(), name="failing")
    await asyncio.wait([task])
    with caplog.at_level(logging.ERROR, logger="openmanager.tasks"):
        assert await wait_ended(task, None) is True
    assert "failing failed" in caplog.text and "boom" in caplog.text


async def test_wait_ended_does_not_cancel() -> None:
    finish = asyncio.Event()

    async def worker() -> str:
        await finish.wait()
        return "done"

    task = asyncio.create_task(worker())
    waiter = asyncio.create_task(wait_ended(task))
    await asyncio.sleep(0.01)
    assert not waiter.done() and not task.cancelling()
    finish.set()
    assert await waiter is True
    assert task.result() == "done"


async def test_a_task_that_ends_within_the_grace_is_not_cancelled() -> None:
    finish = asyncio.Event()

    async def finishing() -> str:
        await finish.wait()
        return "finished"

    task = asyncio.create_task(finishing())
    stopper = asyncio.create_task(cancel_and_wait(task, grace=5.0))
    await asyncio.sleep(0.01)
    assert not task.cancelling()  # still inside its grace
    finish.set()
    assert await stopper is True
    assert task.result() == "finished"


async def test_cancel_until_ended_cancels_again_and_takes_new_tasks_along() -> None:
    tasks: list[asyncio.Task[None]] = []

    async def swallows_once() -> None:  # a cancellation lost once, as when it lands in an inner await
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        tasks.append(asyncio.create_task(asyncio.Event().wait()))  # starts another on its way out
        await asyncio.Event().wait()

    tasks.append(asyncio.create_task(swallows_once()))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_until_ended(lambda: list(tasks), 5.0)
    assert len(tasks) == 2 and all(t.cancelled() for t in tasks)


async def test_cancel_until_ended_is_bounded_and_says_what_it_left(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def refuses() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(refuses())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.ERROR, logger="openmanager.tasks"):
        await cancel_until_ended(lambda: [task], 0.3)
    assert loop.time() - started < 2.0 and not task.done()
    assert any("did not stop within" in r.getMessage() for r in caplog.records)
    release.set()
    await task
