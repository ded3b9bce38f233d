"""Dynamic (micro) batching: concurrent predict requests for one model run as one forward pass.

Requests queue up; a leader takes whole requests from the queue (a request is never split across
answers) up to `max_batch_size` rows, waits at most `max_queue_delay_ms` for more to join, runs the
forward pass once and hands each caller its own rows. Then the request at the head of the queue,
if any, leads the next batch. The names are Triton's and TorchServe's. This is safe because
eval-mode BN normalises with frozen statistics: a row's answer does not depend on the rows beside it.

Two kinds of callers share one queue. A thread calling `run` leads in its own thread. A coroutine
awaiting `run_async` holds no thread while it waits. When it has to lead, a request of at most
`INLINE_ROWS` rows that finds the batcher idle first yields to the loop once, so that requests it
has already read queue up behind it; if none did, it runs its forward pass on the event loop, as an
`async def` endpoint would: a pass that small costs less than handing it to a thread and back.
Otherwise, or for a larger request, an executor thread leads, and goes on leading while the queue's
head is another coroutine: under load, batches form while a pass runs off the loop.

Who waits: a caller that finds no batch gathering or running leads at once and never waits, so a
caller alone never waits, whatever came before. Only a request that queued while a batch ran, and
so leads the batch after it, waits up to `max_queue_delay_ms` for company, and only when the batch
before it held more than one request: callers are coming in numbers.
"""

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

Result = TypeVar("Result")
INLINE_ROWS = 8
BatchObserver = Callable[[int, int], None]  # (rows, requests) of each forward pass, e.g. for a metrics histogram


@dataclass(frozen=True)
class BatchingPolicy:
    max_batch_size: int = 1  # rows in one forward pass; a single larger request runs alone
    max_queue_delay_ms: float = 0.0  # the longest a request waits for others to join its batch

    @property
    def enabled(self) -> bool:
        """A delay of 0 or batches of 1 row mean no batching: each request is its own forward pass."""
        return self.max_batch_size > 1 and self.max_queue_delay_ms > 0


NO_BATCHING = BatchingPolicy()


@dataclass(frozen=True)
class BatchingStats:
    requests: int  # predict calls answered
    rows: int  # rows those calls carried
    forward_passes: int  # fewer than requests when requests were batched
    largest_batch_rows: int


class _Request(Generic[Result]):
    def __init__(self, inputs: torch.Tensor, future: "asyncio.Future[Result] | None" = None) -> None:
        self.inputs = inputs
        self.rows = inputs.shape[0]
        self.future = future  # a coroutine's request is answered through its future, on its event loop
        # A thread's request: set once answered, or once it is its turn to lead.
        self.answered = threading.Event() if future is None else None
        self.leads = False
        self.result: Result | None = None
        self.error: BaseException | None = None

    def settle(self) -> None:
        """Hand a coroutine's future its answer, on the future's event loop."""
        if self.future.cancelled():  # its client went away
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


def _answer(batch: "list[_Request[Result]]", running_loop: asyncio.AbstractEventLoop | None) -> None:
    """Wake a batch's callers: a thread's by its event, coroutines' with one call into each of their event
    loops (one wake-up of a loop a batch, not one a request), or at once where this runs on their loop."""
    elsewhere: dict[asyncio.AbstractEventLoop, list[_Request[Result]]] = {}
    for request in batch:
        if request.answered is not None:
            request.answered.set()
        elif (loop := request.future.get_loop()) is running_loop:
            request.settle()  # no wake-up of the loop: its caller awaits a done future
        else:
            elsewhere.setdefault(loop, []).append(request)
    for loop, requests in elsewhere.items():
        with contextlib.suppress(RuntimeError):  # its event loop is closed: nobody waits for the answers
            loop.call_soon_threadsafe(_settle_all, requests)


def _settle_all(requests: "list[_Request[Result]]") -> None:
    for request in requests:
        request.settle()


class DynamicBatcher(Generic[Result]):
    """Runs `forward` on the rows of several callers at once; `rows(result, start, stop)` cuts a caller's part out."""

    def __init__(
        self,
        forward: Callable[[torch.Tensor], Result],
        rows: Callable[[Result, int, int], Result],
        policy: BatchingPolicy,
        on_batch: BatchObserver | None = None,
        inline_allowed: Callable[[], bool] = lambda: True,
    ) -> None:
        self.policy = policy
        self._inline_allowed = inline_allowed  # False while a pass on the event loop could block it
        self._on_batch = on_batch
        self._forward = forward
        self._rows = rows
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a leader gathering a batch waits on this
        self._queue: deque[_Request[Result]] = deque()
        self._queued_rows = 0
        self._leader = False  # whether some caller is gathering or running a batch
        self._company = False  # whether the last batch held more than one request
        self._requests = self._row_count = self._passes = self._largest = 0

    def run(self, inputs: torch.Tensor) -> Result:
        """The result for `inputs` alone, computed in one batch with whatever other callers sent meanwhile."""
        if not self.policy.enabled:
            result = self._forward(inputs)
            self._count([len(inputs)])
            return result
        request: _Request[Result] = _Request(inputs)
        follows = self._enqueue(request)
        if follows:
            request.answered.wait()  # type: ignore[union-attr]
        if request.leads or not follows:
            self._lead(successor=request.leads)
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    async def run_async(self, inputs: torch.Tensor) -> Result:
        """As `run`, awaited on an event loop; the forward pass runs in the loop's default executor."""
        loop = asyncio.get_running_loop()
        rows = inputs.shape[0]  # not len(): Tensor.__len__ is Python, ~1 µs a call on the event loop
        inline = rows <= INLINE_ROWS and self._inline_allowed()
        if not self.policy.enabled:
            result = self._forward(inputs) if inline else await loop.run_in_executor(None, self._forward, inputs)
            self._count([rows])
            return result
        request: _Request[Result] = _Request(inputs, loop.create_future())
        if not self._enqueue(request):
            if inline:
                await asyncio.sleep(0)  # requests the loop has already read queue up behind this one meanwhile
            if inline and self.queued() == 1:
                self._lead(successor=False, on_loop=loop)
            else:
                loop.run_in_executor(None, self._lead, False)
        return await request.future  # type: ignore[misc]

    def _enqueue(self, request: _Request[Result]) -> bool:
        """Queue the request; whether a leader is already at work (else the caller must lead)."""
        with self._lock:
            self._queue.append(request)
            self._queued_rows += request.rows
            follows = self._leader
            self._leader = True
            if follows:
                self._arrived.notify()
        return follows

    def stats(self) -> BatchingStats:
        with self._lock:
            return BatchingStats(self._requests, self._row_count, self._passes, self._largest)

    def queued(self) -> int:
        """Requests waiting for a batch (not those in the forward pass now)."""
        with self._lock:
            return len(self._queue)

    def _lead(self, successor: bool, on_loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run batches, the first holding the leader's own request (it heads the queue), then pass the lead on.

        `successor`: the leader's request queued behind a running batch (else it found the batcher idle).
        A thread's request at the head of the queue takes the lead over; a coroutine's is led on by this
        thread, or, when this is the event loop (`on_loop`), by an executor thread.
        """
        while True:
            batch = self._gather(wait_for_company=successor)
            successor = True
            try:
                inputs = batch[0].inputs if len(batch) == 1 else torch.cat([request.inputs for request in batch])
                result = self._forward(inputs)
                self._count([request.rows for request in batch])
                start = 0
                for request in batch:
                    request.result = self._rows(result, start, start + request.rows)
                    start += request.rows
            except BaseException as error:  # every caller of the batch sees the error
                for request in batch:
                    request.error = error
            finally:
                with self._lock:
                    successor = self._queue[0] if self._queue else None
                    if successor is None:
                        self._leader = False
                    elif successor.future is None:
                        successor.leads = True
                _answer(batch, on_loop)
            if successor is None:
                return
            if successor.answered is not None:
                successor.answered.set()
                return
            if on_loop is not None:
                on_loop.run_in_executor(None, self._lead, True)
                return

    def _gather(self, wait_for_company: bool) -> list[_Request[Result]]:
        """Whole requests from the head of the queue, up to max_batch_size rows (a larger one alone)."""
        limit = self.policy.max_batch_size
        with self._lock:
            if wait_for_company and self._company:
                # Callers came in numbers last time: give the batch up to the delay to fill.
                deadline = time.monotonic() + self.policy.max_queue_delay_ms / 1000
                while self._queued_rows < limit and (remaining := deadline - time.monotonic()) > 0:
                    self._arrived.wait(remaining)
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            while self._queue and rows + self._queue[0].rows <= limit:
                batch.append(self._queue.popleft())
                rows += batch[-1].rows
            self._queued_rows -= rows
            self._company = len(batch) > 1
        return batch

    def _count(self, request_rows: list[int]) -> None:
        with self._lock:
            self._requests += len(request_rows)
            self._row_count += sum(request_rows)
            self._passes += 1
            self._largest = max(self._largest, sum(request_rows))
        if self._on_batch is not None:
            self._on_batch(sum(request_rows), len(request_rows))
