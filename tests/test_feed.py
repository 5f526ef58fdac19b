"""feed.Feed: every row to exactly one worker, in order; the end after the last row; a
producer told (not left waiting) once every worker has left."""

from __future__ import annotations

from contextlib import aclosing

import anyio
import anyio.lowlevel
import pytest

from batchrunner.feed import Feed


async def _producer(feed: Feed[int], items: range) -> str:
    try:
        for item in items:
            await feed.send(item)
    except anyio.BrokenResourceError:
        return "broken"
    finally:
        await feed.close()
    return "sent"


def test_every_item_reaches_one_worker_in_order_and_the_workers_end() -> None:
    async def main() -> tuple[list[list[int]], str]:
        feed: Feed[int] = Feed(4, workers=3)
        taken: list[list[int]] = [[], [], []]
        outcome: list[str] = []

        async def worker(mine: list[int]) -> None:
            async with aclosing(feed.items()) as items:
                async for item in items:
                    mine.append(item)
                    await anyio.lowlevel.checkpoint()  # let the others take some

        async def produce() -> None:
            outcome.append(await _producer(feed, range(100)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            for mine in taken:
                tg.start_soon(worker, mine)
        return taken, outcome[0]

    taken, outcome = anyio.run(main)
    assert outcome == "sent"
    assert sorted(i for mine in taken for i in mine) == list(range(100))
    assert all(mine == sorted(mine) for mine in taken)
    assert sum(1 for mine in taken if mine) > 1  # shared, not one worker's


@pytest.mark.parametrize("how", ["return", "cancel"])
def test_a_producer_waiting_for_room_is_told_once_every_worker_left(how: str) -> None:
    async def main() -> tuple[str, list[int]]:
        feed: Feed[int] = Feed(2, workers=2)
        taken: list[int] = []
        outcome: list[str] = []

        async def worker(scope: anyio.CancelScope) -> None:
            with scope:
                async with aclosing(feed.items()) as items:
                    async for item in items:
                        taken.append(item)
                        if how == "return" and len(taken) >= 3:
                            return  # a stop: the worker leaves with rows still queued
                        await anyio.sleep_forever() if how == "cancel" else None

        async def produce() -> None:
            outcome.append(await _producer(feed, range(1000)))

        scopes = [anyio.CancelScope(), anyio.CancelScope()]
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                for scope in scopes:
                    tg.start_soon(worker, scope)
                if how == "cancel":
                    await anyio.wait_all_tasks_blocked()
                    for scope in scopes:
                        scope.cancel()
        return outcome[0], taken

    outcome, taken = anyio.run(main)
    assert outcome == "broken"
    assert len(taken) < 1000


def test_a_worker_cancelled_while_waiting_loses_no_item() -> None:
    async def main() -> list[int]:
        feed: Feed[int] = Feed(1, workers=2)
        taken: list[int] = []
        waiting = anyio.CancelScope()

        async def idle() -> None:
            with waiting:
                async with aclosing(feed.items()) as items:
                    taken.extend([-item async for item in items])  # cancelled before a send

        async def busy() -> None:
            async with aclosing(feed.items()) as items:
                taken.extend([item async for item in items])

        async with anyio.create_task_group() as tg:
            tg.start_soon(idle)
            tg.start_soon(busy)
            await anyio.wait_all_tasks_blocked()
            waiting.cancel()
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(_producer, feed, range(10))
        return taken

    assert anyio.run(main) == list(range(10))
