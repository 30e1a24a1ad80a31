"""Query encoding off the event loop: concurrent queries share one model call."""

import asyncio
from typing import Any, Callable, TypeVar

import numpy as np

# Micro-batching of query encodings: how long to wait for companions, and how many to encode at once.
# No waiting: a lone query is encoded at once, and queries that arrive while the model is busy form the next
# batch anyway (a 2 ms window cost every lone request 2 ms and added nothing under load).
BATCH_WINDOW_SECONDS = 0.0
BATCH_MAX_QUERIES = 32
T = TypeVar("T")


class QueryEncoder:
    """Encodes queries in a worker thread, then runs what each request does with its vector (`then`).

    One batch is encoded at a time: queries that arrive while the model is busy, or within `window` seconds of
    the first (none by default), share the next model call (at most `max_batch` texts). A query encoded alone
    goes on with its `then` in the same worker thread (one thread hop fewer for the common, quiet case); in a
    shared batch each request runs its `then` in a thread of its own, so the next batch can start encoding.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], *, batching: bool = True,
                 window: float = BATCH_WINDOW_SECONDS, max_batch: int = BATCH_MAX_QUERIES) -> None:
        self._encode = encode
        self.batching = batching
        self.window = window
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        if self.batching:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="askcorpus-query-encoder")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None

    async def encode(self, text: str) -> np.ndarray:
        return await self.run(text, lambda vector: vector)

    async def run(self, text: str, then: Callable[[np.ndarray], T]) -> T:
        """then(vector of text), computed off the event loop."""
        if self._queue is None:
            return await asyncio.to_thread(lambda: then(self._encode([text])[0]))
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, then, future))
        finished, value = await future
        return value if finished else await asyncio.to_thread(then, value)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.window
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                if self.window <= 0:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except (asyncio.TimeoutError, TimeoutError):
                    break
            batch = [item for item in batch if not item[2].done()]
            if not batch:
                continue
            unique = list(dict.fromkeys(text for text, _, _ in batch))
            try:
                finished, value = await asyncio.to_thread(self._encode_batch, unique, batch)
            except Exception as error:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            if finished:
                if not batch[0][2].done():
                    batch[0][2].set_result((True, value))
                continue
            row = {text: i for i, text in enumerate(unique)}
            for text, _, future in batch:
                if not future.done():
                    future.set_result((False, value[row[text]]))

    def _encode_batch(self, unique: list[str], batch: list[tuple]) -> tuple[bool, Any]:
        """In the worker thread: the batch's vectors, or for a lone query the result of its `then`."""
        vectors = self._encode(unique)
        if len(batch) == 1:
            return True, batch[0][1](vectors[0])
        return False, vectors
