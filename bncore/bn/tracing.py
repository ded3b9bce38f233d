"""torch.fx tracing, safe beside forward passes in other threads.

While `fx.symbolic_trace` runs it patches `torch.nn.Module.__call__` for the whole process: a module
called from another thread then goes to the tracer and fails ("module is not installed as a
submodule"), and two traces at once corrupt each other. The API loads a model (and traces it) in a
thread while other threads run forward passes, so tracing excludes them, and they share.
"""

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch.fx as fx
from torch import nn


class SharedExclusiveLock:
    """Many holders of `shared`, or one of `exclusive`; a waiting `exclusive` holder goes before new `shared` ones."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting = 0  # for exclusive
        self._shared = _Shared(self)

    def shared(self) -> AbstractContextManager[None]:
        """Held around every forward pass: a plain context manager, not a generator's (~1 µs less a pass)."""
        return self._shared

    def _enter_shared(self) -> None:
        with self._condition:
            while self._exclusive or self._waiting:
                self._condition.wait()
            self._sharing += 1

    def _exit_shared(self) -> None:
        with self._condition:
            self._sharing -= 1
            if not self._sharing:
                self._condition.notify_all()

    def exclusive_wanted(self) -> bool:
        """Whether `shared` would wait now (a hint: the answer may change at once)."""
        return self._exclusive or self._waiting > 0

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            while self._exclusive or self._sharing:
                self._condition.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


class _Shared(AbstractContextManager[None]):
    def __init__(self, lock: SharedExclusiveLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._enter_shared()

    def __exit__(self, *exc_info: object) -> None:
        self._lock._exit_shared()


MODULE_CALLS = SharedExclusiveLock()  # shared: running modules; exclusive: tracing


def symbolic_trace(module: nn.Module) -> fx.GraphModule:
    with MODULE_CALLS.exclusive():
        return fx.symbolic_trace(module)
