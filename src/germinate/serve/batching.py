"""Requests that arrive together are classified together: a queue of images, one worker that
takes up to `max_batch` of them (or whatever came within `max_wait` seconds of the first) and
runs the model off the event loop, in a single inference thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchStats:
    """What the batcher has done: GET /health reports it."""

    images: int = 0
    batches: int = 0
    largest: int = 0


class MicroBatcher:
    """`await batcher.submit(item)` returns `fn([.., item, ..])[i]` for its place in a batch."""

    def __init__(self, fn: Callable[[list[Any]], Any], max_batch: int = 32, max_wait: float = 0.005):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="germinate-inference")

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; requests still waiting get an error."""
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._pool.shutdown(wait=False)

    async def submit(self, items: list[Any]) -> list[Any]:
        """Queue `items` (one request's images) and wait for their results, in order."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, fut in zip(items, futures):
            self._queue.put_nowait((item, fut))
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), left))
                    except TimeoutError:
                        break
            await self._answer(loop, batch)

    async def _answer(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        try:
            results = await loop.run_in_executor(self._pool, self.fn, [item for item, _ in batch])
        except Exception as e:  # the model failed: every waiting request hears it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.stats.images += len(batch)
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        for (_, fut), result in zip(batch, results):
            if not fut.done():
                fut.set_result(result)
