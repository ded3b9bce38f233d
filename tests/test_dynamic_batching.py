"""Concurrent predict requests share forward passes, and every caller still gets exactly its own rows."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bncore.serving.batching import INLINE_ROWS, BatchingPolicy, DynamicBatcher


class RecordingForward:
    """Doubles its input and remembers each batch; the first call waits until `release` is set."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        self.batches.append(inputs.clone())
        return inputs * 2


def cut(result: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    return result[start:stop]


def request_rows(request_id: int, rows: int) -> torch.Tensor:
    """Rows that name their request, so a batch shows whose rows it held."""
    return torch.full((rows, 3), float(request_id))


def until_queued(batcher: DynamicBatcher, requests: int, timeout: float = 10) -> None:
    """Wait, with a deadline, until `requests` requests wait behind the forward pass that is held back."""
    deadline = time.monotonic() + timeout
    while batcher.queued() < requests:
        assert time.monotonic() < deadline, f"{batcher.queued()} of {requests} requests queued after {timeout}s"
        time.sleep(0.001)


async def until_queued_async(batcher: DynamicBatcher, requests: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while batcher.queued() < requests:
        assert time.monotonic() < deadline, f"{batcher.queued()} of {requests} requests queued after {timeout}s"
        await asyncio.sleep(0.001)


def test_requests_queued_behind_a_forward_pass_share_the_next_one() -> None:
    forward = RecordingForward()
    batcher = DynamicBatcher(forward, cut, BatchingPolicy(max_batch_size=64, max_queue_delay_ms=5))
    sizes = {request_id: 1 + request_id % 4 for request_id in range(1, 21)}
    with ThreadPoolExecutor(max_workers=21) as pool:
        first = pool.submit(batcher.run, request_rows(0, 2))
        assert forward.entered.wait(10)
        answers = {i: pool.submit(batcher.run, request_rows(i, rows)) for i, rows in sizes.items()}
        until_queued(batcher, len(sizes))  # every request queued behind the first forward pass
        forward.release.set()
        torch.testing.assert_close(first.result(10), request_rows(0, 2) * 2)
        for request_id, answer in answers.items():
            torch.testing.assert_close(answer.result(10), request_rows(request_id, sizes[request_id]) * 2)
    assert [len(batch) for batch in forward.batches] == [2, sum(sizes.values())]
    stats = batcher.stats()
    assert (stats.requests, stats.rows, stats.forward_passes) == (21, 2 + sum(sizes.values()), 2)


@pytest.mark.parametrize("awaited", [False, True], ids=["thread", "coroutine"])
def test_a_caller_alone_never_waits_even_after_a_batch_of_many(awaited: bool) -> None:
    forward = RecordingForward()
    delay_seconds = 30  # what a lone caller would wait for company that never comes
    batcher = DynamicBatcher(forward, cut, BatchingPolicy(max_batch_size=64, max_queue_delay_ms=delay_seconds * 1000))
    with ThreadPoolExecutor(max_workers=3) as pool:
        held = pool.submit(batcher.run, request_rows(0, 1))
        assert forward.entered.wait(10)
        behind = [pool.submit(batcher.run, request_rows(i, 1)) for i in (1, 2)]
        until_queued(batcher, 2)
        forward.release.set()
        for answer in [held, *behind]:
            answer.result(10)
    assert [len(batch) for batch in forward.batches] == [1, 2]  # the batch before had company

    started = time.monotonic()
    alone = asyncio.run(batcher.run_async(request_rows(3, 1))) if awaited else batcher.run(request_rows(3, 1))
    assert time.monotonic() - started < delay_seconds / 3
    torch.testing.assert_close(alone, request_rows(3, 1) * 2)


def test_a_batch_never_passes_max_batch_size_and_never_splits_a_request() -> None:
    forward = RecordingForward()
    forward.entered.set()  # no holding back
    batcher = DynamicBatcher(forward, cut, BatchingPolicy(max_batch_size=8, max_queue_delay_ms=20))
    sizes = {request_id: 1 + request_id % 5 for request_id in range(60)} | {60: 11}  # one request above the limit
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = {i: pool.submit(batcher.run, request_rows(i, rows)) for i, rows in sizes.items()}
        for request_id, answer in answers.items():
            torch.testing.assert_close(answer.result(10), request_rows(request_id, sizes[request_id]) * 2)
    for batch in forward.batches:
        assert len(batch) <= 8 or batch[:, 0].unique().tolist() == [60.0]
    for request_id, rows in sizes.items():
        holding = [batch for batch in forward.batches if (batch[:, 0] == request_id).any()]
        assert len(holding) == 1 and int((holding[0][:, 0] == request_id).sum()) == rows


@pytest.mark.parametrize("policy", [BatchingPolicy(64, 0.0), BatchingPolicy(1, 5.0)], ids=["no-delay", "batches-of-1"])
def test_a_delay_of_zero_or_batches_of_one_mean_one_forward_pass_per_request(policy: BatchingPolicy) -> None:
    forward = RecordingForward()
    forward.entered.set()
    batcher = DynamicBatcher(forward, cut, policy)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda i: batcher.run(request_rows(i, 2)), range(40)))
    assert all(batch[:, 0].unique().numel() == 1 for batch in forward.batches)
    assert batcher.stats().forward_passes == 40


def test_an_error_in_a_batch_reaches_its_callers_and_the_next_batch_still_runs() -> None:
    calls = []

    def fails_once(inputs: torch.Tensor) -> torch.Tensor:
        calls.append(len(inputs))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return inputs

    batcher = DynamicBatcher(fails_once, cut, BatchingPolicy(8, 5))
    with pytest.raises(RuntimeError, match="boom"):
        batcher.run(request_rows(1, 1))
    torch.testing.assert_close(batcher.run(request_rows(2, 1)), request_rows(2, 1))


def test_awaiting_callers_share_forward_passes_that_run_off_the_event_loop() -> None:
    forward = RecordingForward()
    threads: list[int] = []

    def recording(inputs: torch.Tensor) -> torch.Tensor:
        threads.append(threading.get_ident())
        return forward(inputs)

    batcher = DynamicBatcher(recording, cut, BatchingPolicy(max_batch_size=64, max_queue_delay_ms=5))
    sizes = {request_id: 1 + request_id % 4 for request_id in range(1, 21)}

    async def scenario() -> tuple[int, list[torch.Tensor], torch.Tensor]:
        # Larger than INLINE_ROWS, so that it runs in a thread even though it finds the batcher idle.
        first = asyncio.ensure_future(batcher.run_async(request_rows(0, INLINE_ROWS + 1)))
        while not forward.entered.is_set():
            await asyncio.sleep(0.01)  # the loop stays free while the first forward pass runs
        rest = [asyncio.ensure_future(batcher.run_async(request_rows(i, rows))) for i, rows in sizes.items()]
        await until_queued_async(batcher, len(sizes))
        forward.release.set()
        return threading.get_ident(), await asyncio.gather(*rest), await first

    loop_thread, answers, first = asyncio.run(scenario())
    torch.testing.assert_close(first, request_rows(0, INLINE_ROWS + 1) * 2)
    for (request_id, rows), answer in zip(sizes.items(), answers, strict=True):
        torch.testing.assert_close(answer, request_rows(request_id, rows) * 2)
    assert [len(batch) for batch in forward.batches] == [INLINE_ROWS + 1, sum(sizes.values())]
    assert loop_thread not in threads
    assert batcher.stats().requests == 21


@pytest.mark.parametrize("policy", [BatchingPolicy(max_batch_size=64, max_queue_delay_ms=5), BatchingPolicy()])
def test_a_small_request_alone_runs_on_the_event_loop_and_a_larger_one_in_a_thread(policy: BatchingPolicy) -> None:
    """As an `async def` endpoint would: a pass of a few rows costs less than a trip to a thread and back."""
    threads: list[int] = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        threads.append(threading.get_ident())
        return inputs * 2

    batcher = DynamicBatcher(forward, cut, policy)

    async def scenario() -> tuple[int, torch.Tensor, torch.Tensor]:
        small = await batcher.run_async(request_rows(0, INLINE_ROWS))
        large = await batcher.run_async(request_rows(9, INLINE_ROWS + 1))
        return threading.get_ident(), small, large

    loop_thread, small, large = asyncio.run(scenario())
    torch.testing.assert_close(small, request_rows(0, INLINE_ROWS) * 2)
    torch.testing.assert_close(large, request_rows(9, INLINE_ROWS + 1) * 2)
    assert threads[0] == loop_thread and threads[1] != loop_thread
    assert batcher.stats().requests == 2


def test_threads_and_coroutines_share_one_queue() -> None:
    forward = RecordingForward()
    batcher = DynamicBatcher(forward, cut, BatchingPolicy(max_batch_size=64, max_queue_delay_ms=5))
    with ThreadPoolExecutor(max_workers=10) as pool:
        first = pool.submit(batcher.run, request_rows(0, 1))
        assert forward.entered.wait(10)
        from_threads = {i: pool.submit(batcher.run, request_rows(i, 1)) for i in range(1, 10)}

        async def from_coroutines() -> list[torch.Tensor]:
            answers = asyncio.gather(*(batcher.run_async(request_rows(i, 2)) for i in range(10, 20)))
            await until_queued_async(batcher, 9 + 10)
            forward.release.set()
            return await answers

        awaited = asyncio.run(from_coroutines())
        for request_id, answer in from_threads.items():
            torch.testing.assert_close(answer.result(10), request_rows(request_id, 1) * 2)
        torch.testing.assert_close(first.result(10), request_rows(0, 1) * 2)
    for request_id, answer in zip(range(10, 20), awaited, strict=True):
        torch.testing.assert_close(answer, request_rows(request_id, 2) * 2)
    assert len(forward.batches) == 2 and len(forward.batches[1]) == 9 + 20


def test_concurrent_clients_each_get_their_own_rows_from_shared_forward_passes(
    client: httpx.Client, digits_model: dict, service
) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    digits = load_digits().data
    # Client c sends rows [start, start + 1 + c % 3): requests of one to three rows.
    requests = [digits[5 * c : 5 * c + 1 + c % 3] for c in range(48)]
    alone = []
    for rows in requests:
        response = client.post(url, json={"inputs": rows.tolist()})
        assert response.status_code == 200
        alone.append(response.json())

    before_serving = client.get(f"/v1/models/{digits_model['id']}/serving").json()
    before_drift = client.get(f"/v1/models/{digits_model['id']}/drift").json()

    start = threading.Barrier(len(requests))

    def concurrent_client(index: int) -> list[dict]:
        with httpx.Client(base_url=service.url, timeout=60) as own:
            start.wait()
            answers = []
            for _ in range(4):
                response = own.post(url, json={"inputs": requests[index].tolist()})
                assert response.status_code == 200, response.text
                answers.append(response.json())
            return answers

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        together = list(pool.map(concurrent_client, range(len(requests))))

    for index, answers in enumerate(together):
        for answer in answers:
            assert len(answer["outputs"]) == len(requests[index])
            np.testing.assert_allclose(answer["outputs"], alone[index]["outputs"], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(answer["probabilities"], alone[index]["probabilities"], rtol=1e-5, atol=1e-5)
            assert answer["predictions"] == alone[index]["predictions"]

    serving = client.get(f"/v1/models/{digits_model['id']}/serving")
    assert serving.status_code == 200
    after = serving.json()
    sent_requests, sent_rows = 4 * len(requests), 4 * sum(len(rows) for rows in requests)
    assert after["batching"] is True
    assert after["requests"] - before_serving["requests"] == sent_requests
    assert after["rows"] - before_serving["rows"] == sent_rows
    assert after["forward_passes"] - before_serving["forward_passes"] < sent_requests
    # The drift monitor saw every row once: batching neither drops nor repeats rows.
    drift = client.get(f"/v1/models/{digits_model['id']}/drift").json()
    assert drift["samples_seen"] - before_drift["samples_seen"] == sent_rows


def test_a_small_request_goes_to_a_thread_while_running_on_the_event_loop_is_not_allowed() -> None:
    """E.g. while a model loads: its tracing holds every forward pass, and the loop must not wait for it."""
    threads: list[int] = []

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        threads.append(threading.get_ident())
        return inputs * 2

    batcher = DynamicBatcher(forward, cut, BatchingPolicy(), inline_allowed=lambda: False)

    async def scenario() -> int:
        torch.testing.assert_close(await batcher.run_async(request_rows(0, 1)), request_rows(0, 1) * 2)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert len(threads) == 1 and threads[0] != loop_thread
