"""Loading a model traces it, which patches every module call in the process: tracing must wait for the
forward passes running, and forward passes arriving meanwhile must wait for the tracing."""

import threading
import time
from collections.abc import Callable

from bncore.bn.tracing import SharedExclusiveLock


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_tracing_waits_for_the_passes_running_and_passes_arriving_meanwhile_wait_for_it() -> None:
    lock = SharedExclusiveLock()
    order: list[str] = []
    first, second = lock.shared(), lock.shared()
    first.__enter__()
    second.__enter__()  # two forward passes at once

    def trace() -> None:
        with lock.exclusive():
            order.append("trace")

    def late_pass() -> None:
        with lock.shared():
            order.append("late pass")

    tracer = threading.Thread(target=trace)
    tracer.start()
    wait_until(lock.exclusive_wanted)
    late = threading.Thread(target=late_pass)
    late.start()
    order.append("first pass done")
    first.__exit__(None, None, None)
    order.append("second pass done")
    second.__exit__(None, None, None)
    tracer.join(10)
    late.join(10)

    assert order == ["first pass done", "second pass done", "trace", "late pass"]
    with lock.exclusive():  # nothing left holding it
        pass
