"""Micro-batching: decoded requests that arrive together share one task-network call."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mvmic.serve.inference import Decoded, Prediction, Service


class MicroBatcher:
    """Collects decoded requests for up to ``max_wait`` s (or ``max_batch`` of them) and runs
    the task network once per group of equal shapes. Decoding stays one request at a time:
    the entropy decoder is only bit-exact at batch 1."""

    def __init__(
        self, service: Service, executor: ThreadPoolExecutor, max_batch: int, max_wait: float
    ) -> None:
        self.service, self.executor = service, executor
        self.max_batch, self.max_wait = max_batch, max_wait
        self.pending: deque[tuple[Decoded, asyncio.Future, float]] = deque()
        self.arrived = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def submit(self, decoded: Decoded) -> tuple[Prediction, float]:
        """The prediction for ``decoded`` and the ms it waited for its batch."""
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((decoded, fut, time.perf_counter()))
        self.arrived.set()
        return await fut

    async def _next_batch(self) -> list[tuple[Decoded, asyncio.Future, float]]:
        while not self.pending:
            self.arrived.clear()
            await self.arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        batch = [self.pending.popleft()]
        while len(batch) < self.max_batch:
            if self.pending:
                batch.append(self.pending.popleft())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self.arrived.clear()  # no await since the check above: nothing can slip between
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            groups: dict[tuple, list] = {}
            for item in batch:
                key = (tuple(item[0].tensor.shape[1:]), item[0].volume)
                groups.setdefault(key, []).append(item)
            for group in groups.values():
                started = time.perf_counter()
                try:
                    preds = await loop.run_in_executor(
                        self.executor, self.service.predict, [d for d, _, _ in group]
                    )
                except Exception as err:  # noqa: BLE001 - handed to each waiting request
                    for _, fut, _ in group:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (_, fut, queued), pred in zip(group, preds):
                    if not fut.done():  # its client may have gone
                        fut.set_result((pred, 1e3 * (started - queued)))
